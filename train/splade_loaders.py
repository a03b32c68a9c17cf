"""Load sparse (SPLADE) bi-encoders: Lightning IR `splade` checkpoints and Hugging Face masked LMs.

The MLM head is found in one of four weight layouts (`HEAD_LAYOUTS`); its decoder weight is always the
backbone's word embedding matrix (a saved copy must equal it). Activation and LayerNorm epsilon come
from the backbone config (`hidden_act`, `layer_norm_eps`); pooling is the max over tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.train.checkpoints import (
    LIR_CONFIG_KEYS,
    MARKERS,
    LoadedBiEncoder,
    _max_length,
    _refuse_leftovers,
    build_backbone,
    lightning_ir_pooling,
    lightning_ir_text,
    load_tokenizer,
    located,
    pad_token_id,
    read_weights,
)
from lir.train.sparse import MlmHead, SparseConfig, SparseModel

NSP_HEAD = "cls.seq_relationship."
"""BERT's next-sentence head, shipped by pre-training checkpoints; a masked LM ignores it."""


class HeadLayout(NamedTuple):
    """Where one layout keeps the MLM head's tensors."""

    dense: str
    norm: str
    biases: tuple[str, ...]  # the decoder bias; tied copies under the other names must agree
    decoder: str  # the decoder weight, when saved: must equal the word embeddings


HEAD_LAYOUTS = (
    HeadLayout(
        "projection.predictions.transform.dense",
        "projection.predictions.transform.LayerNorm",
        ("projection.predictions.bias", "projection.predictions.decoder.bias"),
        "projection.predictions.decoder.weight",
    ),
    HeadLayout("projection.dense", "projection.norm", ("projection.decoder.bias",), "projection.decoder.weight"),
    HeadLayout(
        "projection.dense",
        "projection.LayerNorm",
        ("projection.bias", "projection.decoder.bias"),
        "projection.decoder.weight",
    ),
    HeadLayout(
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        ("cls.predictions.bias", "cls.predictions.decoder.bias"),
        "cls.predictions.decoder.weight",
    ),
)
"""Lightning IR 0.0.6 (what its save_pretrained writes), Lightning IR 2025, Lightning IR 2024, Hugging Face
`*ForMaskedLM`."""


def load_lightning_ir_splade(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A Lightning IR `splade` checkpoint (or an old `bi-encoder` with an `mlm` projection).

    Weighting and expansion per role are read where the config has `*_weighting` keys (Lightning IR 0.0.6).
    Older configs say `doc_expansion: false` in ColBERT's sense ([MASK] padding), which SPLADE never did:
    there it changes nothing. Normalization is ignored, as Lightning IR 0.0.6 ignores it."""
    if "sparsification_strategy" in config and config["sparsification_strategy"] is None:
        raise LirError(f"{path}: SPLADE sparsification_strategy null (raw, dense logits) is not supported")
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    head = mlm_head(backbone, rest, path)
    static = {
        role: _take(rest, f"{role}_weights.weight", path).reshape(-1)
        for role in ("query", "doc")
        if config.get(f"{role}_weighting") == "static"
    }
    _refuse_leftovers(rest, path)
    markers = MARKERS if config.get("add_marker_tokens") else ()
    weighted = "query_weighting" in config or "doc_weighting" in config
    with located(path):
        settings = SparseConfig(
            **lightning_ir_text(config, fields),
            sparsification=config.get("sparsification_strategy") or config.get("sparsification") or "relu_log",
            pooling=lightning_ir_pooling(config, path) or "max",
            query_weighting=config.get("query_weighting", "contextualized"),
            doc_weighting=config.get("doc_weighting", "contextualized"),
            query_expansion=config.get("query_expansion", True) if weighted else True,
            doc_expansion=config.get("doc_expansion", True) if weighted else True,
        )
        model = SparseModel(backbone, settings, head, static)
    tokenizer = load_tokenizer(path, markers)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)


def load_masked_lm(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A Hugging Face `*ForMaskedLM` checkpoint as SPLADE, with Lightning IR's lengths (query 32, doc 512)."""
    fields = {k: v for k, v in config.items() if k != "architectures"}
    backbone_type = fields.pop("model_type", None)
    if not backbone_type:
        raise LirError(f"{path}/config.json has no model_type")
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    rest = {k: v for k, v in rest.items() if not k.startswith(NSP_HEAD)}
    head = mlm_head(backbone, rest, path)
    _refuse_leftovers(rest, path)
    settings = SparseConfig(query_length=_max_length(fields, 32), doc_length=_max_length(fields, 512))
    tokenizer = load_tokenizer(path)
    model = SparseModel(backbone, settings, head)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "huggingface", backbone_type)


def mlm_head(backbone: PreTrainedModel, rest: dict[str, torch.Tensor], where: Path) -> MlmHead:
    """The MLM head in whichever layout `rest` holds; its tensors are popped from `rest`."""
    layout = next((layout for layout in HEAD_LAYOUTS if f"{layout.norm}.weight" in rest), None)
    if layout is None:
        raise LirError(
            f"{where}: the weights lack an MLM head (projection.norm.*, projection.LayerNorm.* or "
            "cls.predictions.transform.*)"
        )
    config = backbone.config
    activation = getattr(config, "hidden_act", None)
    if not isinstance(activation, str):
        raise LirError(f"{where}: the backbone config names no hidden_act for the MLM head")
    embeddings = backbone.get_input_embeddings()
    tensors = {
        "dense.weight": _take(rest, f"{layout.dense}.weight", where),
        "dense.bias": _take(rest, f"{layout.dense}.bias", where),
        "norm.weight": _take(rest, f"{layout.norm}.weight", where),
        "norm.bias": _take(rest, f"{layout.norm}.bias", where),
    }
    biases = [rest.pop(name) for name in layout.biases if name in rest]
    if not biases:
        raise LirError(f"{where}: the weights lack {layout.biases[0]}")
    if any(not torch.equal(bias, biases[0]) for bias in biases[1:]):
        raise LirError(f"{where}: the MLM decoder biases {', '.join(layout.biases)} differ")
    tensors["bias"] = biases[0]
    decoder = rest.pop(layout.decoder, None)
    tied = decoder is None or (
        decoder.shape == embeddings.weight.shape and torch.equal(decoder.to(embeddings.weight.dtype), embeddings.weight)
    )
    if not tied:
        raise LirError(
            f"{where}: {layout.decoder} differs from the word embeddings (untied decoders are not supported)"
        )
    with located(where):
        head = MlmHead(config.hidden_size, activation, float(getattr(config, "layer_norm_eps", 1e-12)), embeddings)
    try:
        head.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        raise LirError(
            f"{where}: MLM head weights do not fit the backbone ({str(exc).splitlines()[-1].strip()})"
        ) from None
    return head


def _take(weights: dict[str, torch.Tensor], name: str, where: Path) -> torch.Tensor:
    tensor = weights.pop(name, None)
    if tensor is None:
        raise LirError(f"{where}: the weights lack {name}")
    return tensor
