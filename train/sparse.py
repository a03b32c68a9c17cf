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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN

from lir.errors import LirError
from lir.manifest import TextRules, check_role

SPARSIFICATIONS = {
    "relu": torch.relu,
    "relu_log": lambda x: torch.log1p(torch.relu(x)),
    "relu_2xlog": lambda x: torch.log1p(torch.log1p(torch.relu(x))),
}
"""Lightning IR's sparsification strategies: every one is non-negative."""
POOLINGS = ("max", "sum", "mean", "first")
WEIGHTINGS = ("contextualized", "static", None)


@dataclass
class SparseConfig:
    """Text rules of a sparse model (its similarity is always the dot product)."""

    query_length: int = 32
    doc_length: int = 512
    query_marker: str | None = None
    doc_marker: str | None = None
    similarity: str = "dot"
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
        """How texts of `role` become token ids: without special tokens where no model runs (Lightning IR)."""
        length, marker = (
            (self.query_length, self.query_marker)
            if check_role(role) == "query"
            else (self.doc_length, self.doc_marker)
        )
        if not self.needs_model(role):
            return TextRules(length, special_tokens=False)
        return TextRules(length, marker=marker)


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

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The contextualized weights: sparsified MLM logits pooled over the attended tokens."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        weights = SPARSIFICATIONS[self.config.sparsification](self.head(hidden)) * mask  # ≥ 0: padding gives 0
        if self.config.pooling == "first":
            return weights[:, 0]
        if self.config.pooling == "max":
            return weights.amax(dim=1)
        summed = weights.sum(dim=1)
        return summed if self.config.pooling == "sum" else summed / mask.sum(dim=1).clamp(min=1)

    def similarity(self, queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """[Q, V] and [N, V] weights → [Q, N] dot products."""
        return queries @ docs.T


def own_terms(input_ids: torch.Tensor, attention_mask: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, V]: each attended token's weight ([B, L] `weights`) at its id, as Lightning IR scatters them (a
    repeated token is written once per occurrence, so its weight counts once); padding writes 0."""
    values = weights.masked_fill(~attention_mask.bool(), 0.0)
    return torch.zeros(input_ids.shape[0], dim, dtype=values.dtype, device=values.device).scatter(1, input_ids, values)
