"""Write a model as a Lightning IR checkpoint directory that lir's loaders (and so lir-export) read back exactly.

Layout, as Lightning IR saves: `config.json` (the backbone's own fields, the family's `model_type`, the
`backbone_model_type`, the family's settings under Lightning IR's keys), `model.safetensors` (the backbone's
tensors without prefix, then the head: `projection.*`, `linear.*`, `bert_pool.0.*`), `tokenizer.json` and
`tokenizer_config.json` (`backbone_tokenizer_class`). Settings that Lightning IR cannot express (text
prefixes, a projection activation, markers other than [QUE]/[DOC]) are refused rather than dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

from lir.errors import LirError
from lir.train.bi_encoder import BiEncoderModel
from lir.train.checkpoints import MARKERS
from lir.train.colbert_loaders import expansion_token, unscored_ids
from lir.train.cross_encoder import CrossEncoderModel, SetEncoderModel
from lir.train.multi_vector import MultiVectorModel
from lir.train.mvr import MvrModel
from lir.train.sparse import SparseModel

TOKENIZER_CLASSES = {
    "lir-dpr": "BiEncoderTokenizer",
    "col": "ColTokenizer",
    "mvr": "MvrTokenizer",
    "splade": "SpladeTokenizer",
    "mono": "CrossEncoderTokenizer",
    "set-encoder": "SetEncoderTokenizer",
}
"""Lightning IR's tokenizer class of each model type (tokenizer_config.json's `tokenizer_class`)."""
BACKBONE_FIELDS_DROPPED = ("architectures", "_name_or_path", "transformers_version", "model_type")

Settings = dict[str, Any]
Tensors = dict[str, torch.Tensor]


def save_lightning_ir(model: nn.Module, tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write `model` (any family with a Lightning IR layout) and its tokenizer into `directory`."""
    settings, head = family_settings(model, tokenizer)
    return write_checkpoint(directory, model.backbone, tokenizer, settings, head)


def write_checkpoint(
    directory: str | Path, backbone: PreTrainedModel, tokenizer: Tokenizer, settings: Settings, head: Tensors
) -> Path:
    """The Lightning IR directory of a backbone, a family's settings (with `model_type`) and its head tensors."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone_type = backbone.config.model_type
    fields = {k: v for k, v in backbone.config.to_diff_dict().items() if k not in BACKBONE_FIELDS_DROPPED}
    config = fields | {"backbone_model_type": backbone_type} | settings
    tensors = {name: _plain(value) for name, value in (backbone.state_dict() | head).items()}
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": TOKENIZER_CLASSES[settings["model_type"]],
        "backbone_tokenizer_class": (TOKENIZER_MAPPING_NAMES.get(backbone_type) or (None, None))[1],
        "query_length": settings["query_length"],
        "doc_length": settings["doc_length"],
        "add_marker_tokens": bool(settings.get("add_marker_tokens")),
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return directory


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached CPU copy, float32 when floating (mixed-precision training keeps fp32 weights anyway)."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous().clone()


def family_settings(model: nn.Module, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
    """Lightning IR's config keys and head tensors of a loaded or trained model."""
    if isinstance(model, BiEncoderModel):
        return _single_vector(model)
    if isinstance(model, MvrModel):
        return _mvr(model)
    if isinstance(model, MultiVectorModel):
        return _multi_vector(model, tokenizer)
    if isinstance(model, SparseModel):
        return _sparse(model)
    if isinstance(model, CrossEncoderModel):
        return _cross_encoder(model)
    raise LirError(f"a {type(model).__name__} has no Lightning IR layout: it cannot be saved as a checkpoint")


def _markers(query: str | None, doc: str | None) -> bool:
    """Whether the model uses Lightning IR's [QUE]/[DOC] markers (others cannot be written)."""
    if (query, doc) == (None, None):
        return False
    if (query, doc) != MARKERS:
        raise LirError(f"markers {query!r}/{doc!r}: Lightning IR checkpoints know only {MARKERS[0]}/{MARKERS[1]}")
    return True


def _projection(layer: nn.Linear | None, prefix: str = "projection") -> tuple[str | None, Tensors]:
    if layer is None:
        return None, {}
    tensors = {f"{prefix}.weight": layer.weight}
    if layer.bias is not None:
        tensors[f"{prefix}.bias"] = layer.bias
    return ("linear" if layer.bias is not None else "linear_no_bias"), tensors


def _single_vector(model: BiEncoderModel) -> tuple[Settings, Tensors]:
    config = model.config
    if config.query_prefix or config.doc_prefix:
        raise LirError("text prefixes (sentence-transformers prompts) have no Lightning IR setting")
    if not isinstance(model.activation, nn.Identity):
        raise LirError("a projection activation has no Lightning IR setting")
    projection, head = _projection(model.projection)
    settings = {
        "model_type": "lir-dpr",
        "pooling_strategy": config.pooling,
        "similarity_function": config.similarity,
        "normalize": config.normalize,  # what Lightning IR 0.0.6 reads for lir-dpr
        "normalization_strategy": "l2" if config.normalize else None,
        "projection": projection,
        "embedding_dim": model.embedding_dim,
        "query_length": config.query_length,
        "doc_length": config.doc_length,
        "add_marker_tokens": _markers(config.query_marker, config.doc_marker),
    }
    return settings, head


def _multi_vector(model: MultiVectorModel, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
    config = model.config
    expansion = config.query_expansion_token
    if expansion is not None and expansion != expansion_token(tokenizer, Path("the tokenizer")):
        raise LirError(f"query expansion with {expansion!r}: Lightning IR expands with the mask token")
    projection, head = _projection(model.projection)
    settings = {
        "model_type": "col",
        "similarity_function": config.similarity,
        "normalization_strategy": "l2" if config.normalize else None,
        "query_aggregation_function": config.aggregation,
        "query_expansion": expansion is not None,
        "attend_to_query_expanded_tokens": config.attend_to_query_expansion,
        "doc_expansion": False,
        "query_mask_scoring_tokens": _mask_tokens(config.query_unscored_ids, tokenizer),
        "doc_mask_scoring_tokens": _mask_tokens(config.doc_unscored_ids, tokenizer),
        "projection": projection,
        "embedding_dim": model.embedding_dim,
        "query_length": config.query_length,
        "doc_length": config.doc_length,
        "add_marker_tokens": _markers(config.query_marker, config.doc_marker),
    }
    return settings, head


def _mvr(model: MvrModel) -> tuple[Settings, Tensors]:
    config = model.config
    projection, head = _projection(model.projection)
    settings = {
        "model_type": "mvr",
        "num_viewer_tokens": config.num_viewer_tokens,
        "similarity_function": config.similarity,
        "normalization_strategy": "l2" if config.normalize else None,
        "doc_aggregation_function": "max",
        "projection": projection,
        "embedding_dim": model.embedding_dim,
        "query_length": config.query_length,
        "doc_length": config.doc_length,
        "add_marker_tokens": _markers(config.query_marker, config.doc_marker),
    }
    return settings, head


def _mask_tokens(ids: list[int], tokenizer: Tokenizer) -> str | list[str] | None:
    """The scoring-mask setting that gives back `ids`: None, "punctuation" or the list of tokens."""
    if not ids:
        return None
    if sorted(ids) == unscored_ids("punctuation", tokenizer):
        return "punctuation"
    tokens = [tokenizer.id_to_token(i) for i in ids]
    if None in tokens or unscored_ids(tokens, tokenizer) != sorted(ids):
        raise LirError(f"unscored token ids {ids[:5]} cannot be written as tokens that encode back to them")
    return tokens


def _sparse(model: SparseModel) -> tuple[Settings, Tensors]:
    config, head = model.config, model.head
    settings = {
        "model_type": "splade",
        "pooling_strategy": config.pooling,
        "sparsification_strategy": config.sparsification,
        "query_weighting": config.query_weighting,
        "doc_weighting": config.doc_weighting,
        "query_expansion": config.query_expansion,
        "doc_expansion": config.doc_expansion,
        "normalization_strategy": None,
        "similarity_function": "dot",
        "embedding_dim": model.embedding_dim,
        "query_length": config.query_length,
        "doc_length": config.doc_length,
        "add_marker_tokens": _markers(config.query_marker, config.doc_marker),
    }
    tensors = {
        "projection.predictions.transform.dense.weight": head.dense.weight,
        "projection.predictions.transform.dense.bias": head.dense.bias,
        "projection.predictions.transform.LayerNorm.weight": head.norm.weight,
        "projection.predictions.transform.LayerNorm.bias": head.norm.bias,
        "projection.predictions.bias": head.bias,
    }
    for role, table in model.static_weights.items():  # Lightning IR's torch.nn.Embedding(vocabulary, 1)
        tensors[f"{role}_weights.weight"] = table[:, None]
    return settings, tensors


def _cross_encoder(model: CrossEncoderModel) -> tuple[Settings, Tensors]:
    config = model.config
    if model.pooler is not None and config.pooling != "first":
        raise LirError(f"a BERT pooler after {config.pooling!r} pooling has no Lightning IR setting")
    _, head = _projection(model.head, "linear")
    _, pooler = _projection(model.pooler, "bert_pool.0")
    settings = {
        "model_type": "set-encoder" if isinstance(model, SetEncoderModel) else "mono",
        "pooling_strategy": "bert_pool" if model.pooler is not None else config.pooling,
        "scoring_strategy": config.scoring,
        "linear_bias": model.head.bias is not None,
        "query_length": config.query_length,
        "doc_length": config.doc_length,
    }
    if isinstance(model, SetEncoderModel):
        settings["add_extra_token"] = model.interaction_index == 1
    return settings, head | pooler
