"""Sparse (SPLADE-style) bi-encoder: backbone → MLM head → sparsification → masked pooling over tokens.

Sparsification and pooling are Lightning IR's: `relu`, `relu_log` (log(1 + ReLU), SPLADE's, the default) or
`relu_2xlog` (log(1 + log(1 + ReLU))); `max` (the default), `sum`, `mean` over the attended tokens or `first`.

Each role has Lightning IR's weighting: `contextualized` (the model, optionally without expansion: only the
text's own terms keep their weight), `static` (inference-free: each distinct token of the text, taken
without special tokens, gets its learned weight from a [vocabulary] table; no model call) or None (each
distinct token weighs 1).

The head is BERT's masked-language-model head: dense, activation, LayerNorm, and a decoder whose
weight is the backbone's word embedding matrix plus its own bias. Each text becomes one weight per
vocabulary term; queries and documents are compared by dot product.

The family in one place: `SparseConfig`, `SparseModel` (writes Lightning IR's `splade` layout), the layouts
it reads (Lightning IR `splade` in four head layouts, Hugging Face `*ForMaskedLM`) and a new model
(`NEW_SPLADE`). UniCOIL, also sparse, is `lir.train.unicoil`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.activations import ACT2FN

from lir.errors import LirError
from lir.manifest import TextRules, check_role
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
    take_tensor,
)
from lir.train.saving import BI_ENCODER_DEFAULTS, NewModel, Settings, Tensors, new_linear, text_layout

MASKED = -1e4
"""Added to the logits of padding in `graph_weights`: far below any logit (so ReLU zeroes it), finite in fp16."""
SPARSIFICATIONS = {
    "relu": torch.relu,
    "relu_log": lambda x: torch.log1p(torch.relu(x)),
    "relu_2xlog": lambda x: torch.log1p(torch.log1p(torch.relu(x))),
}
"""Lightning IR's sparsification strategies: every one is non-negative."""
POOLINGS = ("max", "sum", "mean", "first")
WEIGHTINGS = ("contextualized", "static", None)


@dataclass
class SparseConfig(TextConfig):
    """Text rules and term weighting of a sparse model (its similarity is always the dot product)."""

    sparsification: str = "relu_log"
    pooling: str = "max"
    query_weighting: str | None = "contextualized"
    doc_weighting: str | None = "contextualized"
    query_expansion: bool = True
    doc_expansion: bool = True

    def __post_init__(self) -> None:
        if self.similarity != "dot":
            raise LirError(f"sparse models score by dot product, not {self.similarity!r}")
        if self.sparsification not in SPARSIFICATIONS:
            raise LirError(f"SPLADE sparsification {self.sparsification!r} is not one of {', '.join(SPARSIFICATIONS)}")
        if self.pooling not in POOLINGS:
            raise LirError(f"SPLADE pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        for role in ("query", "doc"):
            if self.weighting(role) not in WEIGHTINGS:
                raise LirError(f"SPLADE {role}_weighting {self.weighting(role)!r} is not one of {WEIGHTINGS}")
            if self.expansion(role) and self.weighting(role) is None:  # as Lightning IR (static ignores it)
                raise LirError(f"SPLADE {role}_expansion needs a {role}_weighting")

    def weighting(self, role: str) -> str | None:
        """How texts of `role` are weighted: `contextualized`, `static` or None (see the module)."""
        return self.query_weighting if check_role(role) == "query" else self.doc_weighting

    def expansion(self, role: str) -> bool:
        """Whether a contextualized `role` may weigh terms its text does not contain."""
        return self.query_expansion if check_role(role) == "query" else self.doc_expansion

    def needs_model(self, role: str) -> bool:
        """Whether encoding `role` runs the model (else its terms are the text's own tokens)."""
        return self.weighting(role) == "contextualized"

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids: without special tokens (nor markers) where no model runs, as
        Lightning IR tokenizes them."""
        rules = super().rules(role)
        return rules if self.needs_model(role) else TextRules(rules.max_length, special_tokens=False)


class MlmHead(nn.Module):
    """dense → activation → LayerNorm → decoder tied to the word embeddings, plus the decoder bias."""

    def __init__(self, hidden: int, activation: str, eps: float, embeddings: nn.Embedding) -> None:
        super().__init__()
        if activation not in ACT2FN:
            raise LirError(f"unknown MLM head activation {activation!r}")
        self.dense = nn.Linear(hidden, hidden)
        self.activation = ACT2FN[activation]
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.embeddings = embeddings
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        states = self.norm(self.activation(self.dense(hidden)))
        return states @ self.embeddings.weight.T + self.bias


class SparseModel(nn.Module):
    """Encodes token ids into vocabulary-sized non-negative weights."""

    family = "sparse"
    chunk_tokens = 16
    """Positions per chunk of the training pass's MLM head (see `pooled`)."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        config: SparseConfig,
        head: MlmHead,
        static_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.head = head
        tables = static_weights or {}
        for role in ("query", "doc"):
            static = config.weighting(role) == "static"
            if static != (role in tables):
                raise LirError(f"SPLADE {role}_weighting {config.weighting(role)!r} and the weight tables disagree")
            if static and not 0 < len(tables[role]) <= self.embedding_dim:
                rows = len(tables[role])
                raise LirError(f"the static {role} weights have {rows} rows for {self.embedding_dim} terms")
        # a table made before marker tokens grew the vocabulary: those never occur without special tokens
        self.static_weights = nn.ParameterDict(
            {
                role: nn.Parameter(nn.functional.pad(table.float(), (0, self.embedding_dim - len(table))))
                for role, table in tables.items()
            }
        )

    @property
    def embedding_dim(self) -> int:
        return self.head.embeddings.num_embeddings

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """[B, L] ids and mask of `role` → [B, V] term weights (padding never contributes)."""
        weighting = self.config.weighting(role)
        if weighting != "contextualized":
            table = self.static_weights[role][input_ids] if weighting == "static" else attention_mask.float()
            return own_terms(input_ids, attention_mask, table, self.embedding_dim)
        weights = self.pooled(input_ids, attention_mask)
        if not self.config.expansion(role):
            weights = weights * own_terms(input_ids, attention_mask, attention_mask.float(), self.embedding_dim)
        return weights

    def graph_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """`encode` as an export graph runs it. With max pooling the graph takes the max of the bare logits
        (padding pushed down by MASKED) and sparsifies [B, V] once: every sparsification is monotone and the
        decoder bias the same for every token, so these are the same numbers with fewer passes over
        [B, L, V], the largest tensor of the model (parity checks it)."""
        if self.config.pooling != "max" or self.config.weighting(role) != "contextualized":
            return self.encode(input_ids, attention_mask, role)
        head = self.head
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = head.norm(head.activation(head.dense(hidden))) @ head.embeddings.weight.T
        logits = (logits + (1 - attention_mask.unsqueeze(-1).to(logits.dtype)) * MASKED).amax(dim=1)
        weights = SPARSIFICATIONS[self.config.sparsification](logits + head.bias)
        if not self.config.expansion(role):
            weights = weights * own_terms(input_ids, attention_mask, attention_mask.float(), weights.shape[-1])
        return weights

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The contextualized weights: sparsified MLM logits pooled over the attended tokens. Training computes
        them `chunk_tokens` positions at a time and recomputes each chunk in the backward pass (activation
        checkpointing), so no [B, L, V] tensor is ever held: memory grows with B × chunk × V, not B × L × V."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooling = self.config.pooling
        if pooling == "first":
            return self.pool_chunk(hidden[:, :1], mask[:, :1])
        step = self.chunk_tokens
        if self.training and torch.is_grad_enabled() and hidden.shape[1] > step:
            parts = [
                checkpoint(self.pool_chunk, hidden[:, i : i + step], mask[:, i : i + step], use_reentrant=False)
                for i in range(0, hidden.shape[1], step)
            ]
            stacked = torch.stack(parts)
            pooled = stacked.amax(dim=0) if pooling == "max" else stacked.sum(dim=0)
        else:
            pooled = self.pool_chunk(hidden, mask)
        return pooled / mask.sum(dim=1).clamp(min=1) if pooling == "mean" else pooled

    def pool_chunk(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, V]: the sparsified logits of these positions, max- or sum-pooled (`first`: one position)."""
        weights = SPARSIFICATIONS[self.config.sparsification](self.head(hidden)) * mask  # ≥ 0: padding gives 0
        return weights.amax(dim=1) if self.config.pooling in ("max", "first") else weights.sum(dim=1)

    def similarity(self, queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """[Q, V] and [N, V] weights → [Q, N] dot products."""
        return queries @ docs.T

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's config keys and head tensors of this model (what `save_lightning_ir` writes)."""
        config, head = self.config, self.head
        settings = {
            "model_type": "splade",
            **text_layout(config),
            "pooling_strategy": config.pooling,
            "sparsification_strategy": config.sparsification,
            "query_weighting": config.query_weighting,
            "doc_weighting": config.doc_weighting,
            "query_expansion": config.query_expansion,
            "doc_expansion": config.doc_expansion,
            "normalization_strategy": None,
            "embedding_dim": self.embedding_dim,
        }
        tensors = {
            "projection.predictions.transform.dense.weight": head.dense.weight,
            "projection.predictions.transform.dense.bias": head.dense.bias,
            "projection.predictions.transform.LayerNorm.weight": head.norm.weight,
            "projection.predictions.transform.LayerNorm.bias": head.norm.bias,
            "projection.predictions.bias": head.bias,
        }
        for role, table in self.static_weights.items():  # Lightning IR's torch.nn.Embedding(vocabulary, 1)
            tensors[f"{role}_weights.weight"] = table[:, None]
        return settings, tensors


def own_terms(input_ids: torch.Tensor, attention_mask: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, V]: each attended token's weight ([B, L] `weights`) at its id, as Lightning IR scatters them (a
    repeated token is written once per occurrence, so its weight counts once); padding writes 0."""
    values = weights.masked_fill(~attention_mask.bool(), 0.0)
    return torch.zeros(input_ids.shape[0], dim, dtype=values.dtype, device=values.device).scatter(1, input_ids, values)


def new_splade_head(backbone: PreTrainedModel, settings: Settings) -> Tensors:
    """A fresh MLM head (LayerNorm at identity, a zero decoder bias) and, for a `static` role, a weight table of
    ones (every token of a text weighs 1 until trained)."""
    hidden, vocabulary = backbone.config.hidden_size, backbone.config.vocab_size
    tensors = new_linear("projection.dense", hidden, hidden, bias=True) | {
        "projection.norm.weight": torch.ones(hidden),
        "projection.norm.bias": torch.zeros(hidden),
        "projection.decoder.bias": torch.zeros(vocabulary),
    }
    for role in ("query", "doc"):
        if settings[f"{role}_weighting"] == "static":
            tensors[f"{role}_weights.weight"] = torch.ones(vocabulary, 1)
    return tensors


NEW_SPLADE = NewModel(
    BI_ENCODER_DEFAULTS
    | {
        "model_type": "splade",
        "sparsification_strategy": "relu_log",
        "pooling_strategy": "max",
        "query_weighting": "contextualized",
        "query_expansion": True,
        "doc_weighting": "contextualized",
        "doc_expansion": True,
    },
    new_splade_head,
)
"""A new sparse model (`splade`) with Lightning IR 0.0.6's SpladeConfig defaults: log(1 + ReLU), max pooling,
contextualized weights with expansion for both roles."""


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
        role: take_tensor(rest, f"{role}_weights.weight", path).reshape(-1)
        for role in ("query", "doc")
        if config.get(f"{role}_weighting") == "static"
    }
    refuse_leftovers(rest, path)
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
    refuse_leftovers(rest, path)
    settings = SparseConfig(query_length=capped_length(fields, 32), doc_length=capped_length(fields, 512))
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
        "dense.weight": take_tensor(rest, f"{layout.dense}.weight", where),
        "dense.bias": take_tensor(rest, f"{layout.dense}.bias", where),
        "norm.weight": take_tensor(rest, f"{layout.norm}.weight", where),
        "norm.bias": take_tensor(rest, f"{layout.norm}.bias", where),
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
