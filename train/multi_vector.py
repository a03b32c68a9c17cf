"""Multi-vector (ColBERT-style) bi-encoder: backbone → projection → optional L2 → late interaction.

A text becomes one vector per token. Queries may be padded with an expansion token (`[MASK]`) to their
full length; those tokens are always scored, attended by the others or not. A scoring mask drops
padding and the configured tokens (ColBERT masks punctuation in documents). A query scores a document
by the best dot product of each query token over the document's tokens, summed or averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.manifest import AGGREGATIONS, TextRules, check_role

SIMILARITIES = ("dot", "cosine")


@dataclass
class MultiVectorConfig:
    """Text rules, scoring mask and late-interaction settings of a multi-vector model."""

    similarity: str = "dot"
    normalize: bool = False
    aggregation: str = "sum"
    query_length: int = 32
    doc_length: int = 512
    query_marker: str | None = None
    doc_marker: str | None = None
    query_expansion_token: str | None = None
    query_expansion_id: int | None = None
    attend_to_query_expansion: bool = True
    query_unscored_ids: list[int] = field(default_factory=list)
    doc_unscored_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise LirError(f"unknown similarity {self.similarity!r} (known: {', '.join(SIMILARITIES)})")
        if self.aggregation not in AGGREGATIONS:
            raise LirError(f"unknown aggregation {self.aggregation!r} (known: {', '.join(AGGREGATIONS)})")
        if (self.query_expansion_token is None) != (self.query_expansion_id is None):
            raise LirError("query expansion needs both its token and its id")

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids."""
        if check_role(role) == "query":
            return TextRules(
                self.query_length,
                marker=self.query_marker,
                expansion_token=self.query_expansion_token,
                attend_expansion=self.attend_to_query_expansion,
            )
        return TextRules(self.doc_length, marker=self.doc_marker)


class MultiVectorModel(nn.Module):
    """Encodes token ids into scored token vectors; `score` is the late interaction."""

    family = "multi-vector"

    def __init__(self, backbone: PreTrainedModel, config: MultiVectorConfig, projection: nn.Linear | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.projection = projection
        self.register_buffer("query_unscored", torch.tensor(config.query_unscored_ids, dtype=torch.long))
        self.register_buffer("doc_unscored", torch.tensor(config.doc_unscored_ids, dtype=torch.long))

    @property
    def embedding_dim(self) -> int:
        if self.projection is not None:
            return self.projection.out_features
        return int(self.backbone.config.hidden_size)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] ids and attention mask → [B, L, D] token vectors and the [B, L] bool scoring mask."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = self.projection(hidden) if self.projection is not None else hidden
        if self.config.normalize:
            vectors = nn.functional.normalize(vectors, p=2, dim=-1)
        return vectors, self.scoring_mask(input_ids, attention_mask, role)

    def scoring_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """Which tokens score: attended or expansion tokens, minus the role's unscored ids."""
        mask = attention_mask.bool()
        if role == "query" and self.config.query_expansion_id is not None:
            mask = mask | (input_ids == self.config.query_expansion_id)
        unscored = self.query_unscored if role == "query" else self.doc_unscored
        if unscored.numel():
            mask = mask & ~(input_ids.unsqueeze(-1) == unscored).any(-1)
        return mask

    def pair_scores(
        self, query: torch.Tensor, query_mask: torch.Tensor, doc: torch.Tensor, doc_mask: torch.Tensor
    ) -> torch.Tensor:
        """Late interaction of aligned pairs: [B, Lq, D], [B, Lq], [B, Ld, D], [B, Ld] → [B] scores."""
        if self.config.similarity == "cosine":
            query = nn.functional.normalize(query, p=2, dim=-1)
            doc = nn.functional.normalize(doc, p=2, dim=-1)
        sims = query @ doc.transpose(1, 2)  # [B, Lq, Ld]
        sims = sims.masked_fill(~doc_mask.unsqueeze(1), float("-inf"))
        best = sims.amax(dim=-1)
        best = torch.where(torch.isinf(best), torch.zeros_like(best), best) * query_mask.to(best.dtype)
        scores = best.sum(dim=-1)
        if self.config.aggregation == "mean":
            scores = scores / query_mask.sum(dim=-1).clamp(min=1).to(scores.dtype)
        return scores

    def similarity(
        self, query: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor, docs_mask: torch.Tensor
    ) -> torch.Tensor:
        """[Q, Lq, D] queries against [N, Ld, D] documents → [Q, N] scores."""
        rows = []
        for q, qm in zip(query, query_mask, strict=True):
            n = len(docs)
            rows.append(self.pair_scores(q.expand(n, -1, -1), qm.expand(n, -1), docs, docs_mask))
        return torch.stack(rows) if rows else torch.empty(0, len(docs))
