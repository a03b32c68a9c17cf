"""Sparse (SPLADE-style) bi-encoder: backbone → MLM head → sparsification → masked pooling over tokens.

Sparsification and pooling are Lightning IR's: `relu`, `relu_log` (log(1 + ReLU), SPLADE's, the default) or
`relu_2xlog` (log(1 + log(1 + ReLU))); `max` (the default), `sum` or `mean` over the attended tokens.

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
POOLINGS = ("max", "sum", "mean")


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

    def __post_init__(self) -> None:
        if self.similarity != "dot":
            raise LirError(f"sparse models score by dot product, not {self.similarity!r}")
        if self.sparsification not in SPARSIFICATIONS:
            raise LirError(f"SPLADE sparsification {self.sparsification!r} is not one of {', '.join(SPARSIFICATIONS)}")
        if self.pooling not in POOLINGS:
            raise LirError(f"SPLADE pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids."""
        if check_role(role) == "query":
            return TextRules(self.query_length, marker=self.query_marker)
        return TextRules(self.doc_length, marker=self.doc_marker)


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

    def __init__(self, backbone: PreTrainedModel, config: SparseConfig, head: MlmHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.head = head

    @property
    def embedding_dim(self) -> int:
        return self.head.embeddings.num_embeddings

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids and mask → [B, V] term weights (padding never contributes)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        weights = SPARSIFICATIONS[self.config.sparsification](self.head(hidden)) * mask  # ≥ 0: padding gives 0
        if self.config.pooling == "max":
            return weights.amax(dim=1)
        summed = weights.sum(dim=1)
        return summed if self.config.pooling == "sum" else summed / mask.sum(dim=1).clamp(min=1)

    def similarity(self, queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """[Q, V] and [N, V] weights → [Q, N] dot products."""
        return queries @ docs.T
