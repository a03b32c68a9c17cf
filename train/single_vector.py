"""Single-vector bi-encoder: backbone → masked pooling → optional projection → optional L2 norm.

The family in one place: its config (`SingleVectorConfig`), its model (`BiEncoderModel`, which writes
Lightning IR's `lir-dpr` layout), the layouts it reads (Lightning IR `lir-dpr`, sentence-transformers
Transformer → Pooling → Dense → Normalize, plain Hugging Face encoders) and a new model (`NEW_DPR`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.files import read_json
from lir.manifest import TextRules
from lir.train.checkpoint_io import (
    LIR_CONFIG_KEYS,
    MARKERS,
    LoadedBiEncoder,
    TextConfig,
    build_backbone,
    capped_length,
    lightning_ir_pooling,
    lightning_ir_text,
    load_tokenizer,
    located,
    pad_token_id,
    read_weights,
    refuse_leftovers,
    take_linear,
)
from lir.train.pooling import POOLINGS, pool
from lir.train.saving import (
    BI_ENCODER_DEFAULTS,
    NewModel,
    Settings,
    Tensors,
    new_projection,
    projection_layout,
    text_layout,
)

SIMILARITIES = ("dot", "cosine")
ACTIVATIONS = {"identity": nn.Identity, "tanh": nn.Tanh}


@dataclass
class SingleVectorConfig(TextConfig):
    """What turns backbone states into a single embedding, and how two embeddings are compared; texts may take
    a prefix (sentence-transformers' prompts)."""

    pooling: str = "first"
    normalize: bool = False
    query_prefix: str = ""
    doc_prefix: str = ""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise LirError(f"unknown pooling {self.pooling!r} (known: {', '.join(POOLINGS)})")
        if self.similarity not in SIMILARITIES:
            raise LirError(f"unknown similarity {self.similarity!r} (known: {', '.join(SIMILARITIES)})")

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids: the shared rules with the role's prefix."""
        return replace(super().rules(role), prefix=self.query_prefix if role == "query" else self.doc_prefix)


class BiEncoderModel(nn.Module):
    """Encodes token ids into one vector per text; `similarity` scores queries against documents."""

    family = "single-vector"

    def __init__(
        self,
        backbone: PreTrainedModel,
        config: SingleVectorConfig,
        projection: nn.Linear | None = None,
        activation: str = "identity",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise LirError(f"unsupported projection activation {activation!r}")
        self.backbone = backbone
        self.config = config
        self.projection = projection
        self.activation = ACTIVATIONS[activation]()

    @property
    def embedding_dim(self) -> int:
        if self.projection is not None:
            return self.projection.out_features
        return int(self.backbone.config.hidden_size)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """[B, L] ids and mask → [B, D] embeddings (the same computation for both roles)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embedding = pool(hidden, attention_mask, self.config.pooling)
        if self.projection is not None:
            embedding = self.activation(self.projection(embedding))
        if self.config.normalize:
            embedding = nn.functional.normalize(embedding, p=2, dim=-1)
        return embedding

    def similarity(self, queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """[Q, D] and [N, D] embeddings → [Q, N] scores (dot product or cosine)."""
        if self.config.similarity == "cosine":
            queries = nn.functional.normalize(queries, p=2, dim=-1)
            docs = nn.functional.normalize(docs, p=2, dim=-1)
        return queries @ docs.T

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's config keys and head tensors of this model (what `save_lightning_ir` writes)."""
        config = self.config
        if config.query_prefix or config.doc_prefix:
            raise LirError("text prefixes (sentence-transformers prompts) have no Lightning IR setting")
        if not isinstance(self.activation, nn.Identity):
            raise LirError("a projection activation has no Lightning IR setting")
        projection, head = projection_layout(self.projection)
        settings = {
            "model_type": "lir-dpr",
            **text_layout(config),
            "pooling_strategy": config.pooling,
            "normalize": config.normalize,  # what Lightning IR 0.0.6 reads for lir-dpr
            "normalization_strategy": "l2" if config.normalize else None,
            "projection": projection,
            "embedding_dim": self.embedding_dim,
        }
        return settings, head


def load_lightning_ir_dpr(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    model_type = config["model_type"]
    pooling = lightning_ir_pooling(config, path)
    if config.get("sparsification_strategy") or config.get("sparsification"):
        raise LirError(f"{path}: sparsified single-vector models are not supported yet")
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = None
    if "projection.weight" in rest:
        projection = take_linear(rest, "projection", path)
    elif model_type == "lir-dpr" and config.get("projection", "linear") is not None:
        raise LirError(f"{path}: the config asks for a projection but the weights lack projection.weight")
    refuse_leftovers(rest, path)
    markers = MARKERS if config.get("add_marker_tokens") else ()
    with located(path):
        settings = SingleVectorConfig(
            pooling=pooling or ("first" if model_type == "lir-dpr" else "mean"),
            normalize=_dpr_normalize(config),
            **lightning_ir_text(config, fields),
        )
    tokenizer = load_tokenizer(path, markers)
    model = BiEncoderModel(backbone, settings, projection)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)


def _dpr_normalize(config: dict[str, Any]) -> bool:
    """Whether a single-vector Lightning IR model L2-normalizes: `normalize` decides when the config has it
    (0.0.6 writes it and ignores `normalization_strategy` for lir-dpr), else `normalization_strategy` (older
    saves)."""
    if "normalize" in config:
        return config["normalize"] is True
    return config.get("normalization_strategy") == "l2"


def load_huggingface(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    fields = {k: v for k, v in config.items() if k != "architectures"}
    backbone_type = fields.pop("model_type")
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    rest = {k: v for k, v in rest.items() if not k.startswith(("cls.", "lm_head.", "classifier."))}
    refuse_leftovers(rest, path)
    settings = SingleVectorConfig(
        pooling="mean", similarity="dot", query_length=32, doc_length=capped_length(fields, 512)
    )
    tokenizer = load_tokenizer(path)
    model = BiEncoderModel(backbone, settings)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "huggingface", backbone_type)


ST_POOLING = {"pooling_mode_cls_token": "first", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


ST_ACTIVATIONS = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh"}


def load_sentence_transformers(path: Path, spec: str) -> LoadedBiEncoder:
    modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or "Pooling" not in kinds:
        raise LirError(f"{path}/modules.json: expected Transformer → Pooling → Dense* → Normalize, got {kinds}")
    unknown = sorted(set(kinds) - {"Transformer", "Pooling", "Dense", "Normalize"})
    if unknown:
        raise LirError(f"{path}/modules.json: module types {unknown} are not supported")
    folders = [path / m.get("path", "") for m in modules]
    transformer = folders[0]
    fields = read_json(transformer / "config.json")
    fields.pop("architectures", None)
    backbone_type = fields.pop("model_type", None)
    if not backbone_type:
        raise LirError(f"{transformer}/config.json has no model_type")
    backbone, rest = build_backbone(backbone_type, fields, read_weights(transformer), transformer)
    refuse_leftovers(rest, transformer)
    pooling_config = read_json(folders[kinds.index("Pooling")] / "config.json")
    modes = [ST_POOLING.get(k, k) for k, v in pooling_config.items() if k.startswith("pooling_mode") and v]
    if len(modes) != 1 or modes[0] not in ST_POOLING.values():
        raise LirError(f"{path}: pooling {modes} is not supported (one of cls, mean or max)")
    projection, activation = None, "identity"
    dense = [folder for folder, kind in zip(folders, kinds, strict=True) if kind == "Dense"]
    if len(dense) > 1:
        raise LirError(f"{path}: more than one Dense module is not supported")
    if dense:
        dense_config = read_json(dense[0] / "config.json")
        activation = ST_ACTIVATIONS.get(dense_config.get("activation_function", ""), "")
        if not activation:
            raise LirError(f"{dense[0]}: activation {dense_config.get('activation_function')!r} is not supported")
        dense_weights = read_weights(dense[0])
        projection = take_linear(dense_weights, "linear", dense[0])
        refuse_leftovers(dense_weights, dense[0])
    st_config = (
        read_json(transformer / "sentence_bert_config.json")
        if (transformer / "sentence_bert_config.json").is_file()
        else {}
    )
    options = (
        read_json(path / "config_sentence_transformers.json")
        if (path / "config_sentence_transformers.json").is_file()
        else {}
    )
    prompts = options.get("prompts") or {}
    length = capped_length(fields, st_config.get("max_seq_length"))
    similarity = options.get("similarity_fn_name") or "cosine"
    if similarity not in ("cosine", "dot"):
        raise LirError(f"{path}: similarity {similarity!r} is not supported (cosine, dot)")
    settings = SingleVectorConfig(
        pooling=modes[0],
        similarity=similarity,
        normalize="Normalize" in kinds,
        query_length=length,
        doc_length=length,
        query_prefix=prompts.get("query", ""),
        doc_prefix=prompts.get("document", prompts.get("passage", "")),
    )
    tokenizer = load_tokenizer(transformer)
    model = BiEncoderModel(backbone, settings, projection, activation)
    return LoadedBiEncoder(
        model, tokenizer, pad_token_id(tokenizer, fields), spec, "sentence-transformers", backbone_type
    )


NEW_DPR = NewModel(
    BI_ENCODER_DEFAULTS
    | {
        "model_type": "lir-dpr",
        "pooling_strategy": "mean",
        "normalize": False,
        "projection": "linear",
        "embedding_dim": None,
    },
    new_projection,
)
"""A new single-vector model (`lir-dpr`): Lightning IR 0.0.6's DprModel defaults (mean pooling, a linear
projection at the hidden size, no normalization; its `query/doc_pooling_strategy` and `normalization_strategy`
are ignored by 0.0.6 and so not settings here). Lightning IR 0.0.6 reloads only the hidden size as
`embedding_dim`; lir reads any size from the weights."""
