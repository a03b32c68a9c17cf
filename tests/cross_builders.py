"""Tiny random-weight cross-encoder checkpoints, written the way Lightning IR and transformers write them."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import BertForSequenceClassification, ElectraConfig, ElectraModel

from tests.builders import (
    _backbone_weights,
    _lightning_ir_tokenizer,
    _minilm_backbone,
    copy_tokenizer,
    tiny_bert,
    write_json,
)

LENGTHS = (16, 48)
"""Query and document content tokens of the tiny Lightning IR checkpoints."""


def _head(hidden: int, outputs: int, bias: bool, seed: int, prefix: str = "linear") -> dict[str, torch.Tensor]:
    """A random linear layer's tensors under `prefix` (scaled so that scores spread)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {f"{prefix}.weight": torch.randn(outputs, hidden, generator=generator) / hidden**0.5}
    if bias:
        weights[f"{prefix}.bias"] = 0.1 * torch.randn(outputs, generator=generator)
    return weights


def _write_lightning_ir(
    target: Path,
    config: dict,
    weights: dict[str, torch.Tensor],
    fields: dict,
    lengths: tuple[int, int],
    tokenizer_class: str = "CrossEncoderTokenizer",
) -> Path:
    save_file({k: v.contiguous() for k, v in weights.items()}, str(target / "model.safetensors"))
    write_json(target / "config.json", config | fields | {"query_length": lengths[0], "doc_length": lengths[1]})
    _lightning_ir_tokenizer(target, tokenizer_class, False, lengths)
    return target


def lightning_ir_mono_dir(
    target: Path, scoring: str = "rank", bert_pool: bool = False, linear_bias: bool = False, pooling: str = "first"
) -> Path:
    """A tiny Lightning IR `mono` checkpoint on BERT: `linear.weight` [1 or 2, 32] (+ bias), `bert_pool.0.*`
    when `bert_pool` (MonoConfig saves `pooling_strategy: bert_pool` as `first` with `_bert_pool: true`)."""
    target.mkdir(parents=True)
    backbone = tiny_bert(seed=20)
    weights = _backbone_weights(backbone) | _head(32, 1 if scoring == "rank" else 2, linear_bias, seed=21)
    if bert_pool:
        weights |= _head(32, 32, True, seed=22, prefix="bert_pool.0")
    fields = {
        "model_type": "mono",
        "backbone_model_type": "bert",
        "architectures": ["MonoModel"],
        "pooling_strategy": pooling,
        "_bert_pool": bert_pool,
        "linear_bias": linear_bias,
        "scoring_strategy": scoring,
        "tokenizer_pattern": None,
    }
    return _write_lightning_ir(target, backbone.config.to_dict(), weights, fields, LENGTHS)


def tiny_electra(seed: int = 0) -> ElectraModel:
    torch.manual_seed(seed)
    config = ElectraConfig(
        vocab_size=30522,
        embedding_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return ElectraModel(config).eval()


def monoelectra_dir(target: Path) -> Path:
    """A tiny checkpoint as webis/monoelectra-base is saved: Lightning IR `cross-encoder` on ELECTRA, first-token
    pooling, `linear.weight` [1, 32] without bias, one raw logit, query 32 / doc 256."""
    target.mkdir(parents=True)
    backbone = tiny_electra(seed=23)
    weights = _backbone_weights(backbone) | _head(32, 1, False, seed=24)
    fields = {
        "model_type": "cross-encoder",
        "backbone_model_type": "electra",
        "architectures": ["CrossEncoderModel"],
        "pooling_strategy": "first",
        "linear_bias": False,
    }
    return _write_lightning_ir(target, backbone.config.to_dict(), weights, fields, (32, 256))


def lightning_ir_set_encoder_dir(target: Path, add_extra_token: bool = False) -> Path:
    """A tiny Lightning IR `set-encoder` checkpoint on BERT (rank scoring, first-token pooling, depth 100);
    `add_extra_token`: an `[INT]` token after [CLS] (vocabulary padded to 30528) carries the interaction."""
    target.mkdir(parents=True)
    backbone = tiny_bert(seed=25, vocab_size=30528 if add_extra_token else 30522)
    weights = _backbone_weights(backbone) | _head(32, 1, False, seed=26)
    fields = {
        "model_type": "set-encoder",
        "backbone_model_type": "bert",
        "architectures": ["SetEncoderModel"],
        "pooling_strategy": "first",
        "linear_bias": False,
        "scoring_strategy": "rank",
        "depth": 100,
        "add_extra_token": add_extra_token,
        "sample_missing_docs": True,
    }
    _write_lightning_ir(target, backbone.config.to_dict(), weights, fields, LENGTHS, "SetEncoderTokenizer")
    if add_extra_token:  # Lightning IR's add_tokens: the next id (30522), saved in tokenizer.json
        tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
        tokenizer.add_special_tokens(["[INT]"])
        tokenizer.save(str(target / "tokenizer.json"))
    return target


def hf_sequence_classification_dir(target: Path, num_labels: int = 1, max_length: int | None = None) -> Path:
    """A tiny `BertForSequenceClassification` saved by transformers (safetensors, pooler + classifier), as
    cross-encoder/ms-marco-MiniLM-L6-v2 (1 label) ships; `max_length` goes to tokenizer_config.json's
    `model_max_length`, where sentence-transformers' CrossEncoder keeps it."""
    config = tiny_bert().config
    config.num_labels = num_labels
    torch.manual_seed(27)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(target, safe_serialization=True)
    copy_tokenizer(target)
    if max_length is not None:
        write_json(target / "tokenizer_config.json", {"do_lower_case": True, "model_max_length": max_length})
    return target


def castorini_monobert_dir(target: Path) -> Path:
    """castorini/monobert-large-msmarco's layout in tiny: BertForSequenceClassification with 2 labels."""
    return hf_sequence_classification_dir(target, num_labels=2)


def minilm_cross_encoder_dir(target: Path) -> Path:
    """The real all-MiniLM-L6-v2 with a seeded random head as a Lightning IR `mono` checkpoint (rank scoring,
    first-token pooling, query 32 / doc 256)."""
    target.mkdir(parents=True)
    config, weights = _minilm_backbone()
    weights |= _head(384, 1, False, seed=28)
    fields = {
        "model_type": "mono",
        "backbone_model_type": "bert",
        "architectures": ["MonoModel"],
        "pooling_strategy": "first",
        "linear_bias": False,
        "scoring_strategy": "rank",
    }
    return _write_lightning_ir(target, config, weights, fields, (32, 256))
