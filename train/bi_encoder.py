"""Single-vector bi-encoder: backbone → masked pooling → optional projection → optional L2 norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.manifest import TextRules, check_role
from lir.train.pooling import POOLINGS, pool

SIMILARITIES = ("dot", "cosine")
ACTIVATIONS = {"identity": nn.Identity, "tanh": nn.Tanh}


@dataclass
class SingleVectorConfig:
    """What turns backbone states into a single embedding, and how two embeddings are compared."""

    pooling: str = "first"
    similarity: str = "dot"
    normalize: bool = False
    query_length: int = 32
    doc_length: int = 512
    query_prefix: str = ""
    doc_prefix: str = ""
    query_marker: str | None = None
    doc_marker: str | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise LirError(f"unknown pooling {self.pooling!r} (known: {', '.join(POOLINGS)})")
        if self.similarity not in SIMILARITIES:
            raise LirError(f"unknown similarity {self.similarity!r} (known: {', '.join(SIMILARITIES)})")

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids."""
        if check_role(role) == "query":
            return TextRules(self.query_length, self.query_prefix, self.query_marker)
        return TextRules(self.doc_length, self.doc_prefix, self.doc_marker)


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
