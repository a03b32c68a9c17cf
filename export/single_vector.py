"""Single-vector export: one `encoder` graph for both roles, token ids → one embedding per text.

Pooling, projection and normalization live inside the graph (L2 when the similarity is cosine).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lir.export.family import BiEncoderExport, cosines
from lir.export.graphs import GraphPlan, encoder_inputs, encoder_sample
from lir.export.limits import scaled_difference
from lir.manifest import TensorSpec
from lir.train.single_vector import BiEncoderModel
from lir.vectors import Encoded

GRAPH = "encoder"


class EncoderGraph(nn.Module):
    """The exported computation: the model's encoder, L2-normalized when asked (cosine similarity)."""

    def __init__(self, model: BiEncoderModel, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedding = self.model.encode(input_ids, attention_mask, "doc")
        if self.normalize:
            embedding = nn.functional.normalize(embedding, p=2, dim=-1)
        return embedding


class SingleVectorExport(BiEncoderExport):
    """One embedding per text, compared by dot product or cosine."""

    family = "single-vector"
    encoders = {"query": GRAPH, "doc": GRAPH}

    def plans(self) -> list[GraphPlan]:
        outputs = [TensorSpec("embeddings", "float32", ["batch", self.model.embedding_dim])]
        graph = EncoderGraph(self.model, self.normalize_in_graph)
        return [GraphPlan(GRAPH, graph, encoder_inputs(), outputs, encoder_sample(), ("query", "doc"))]

    def expected_rows(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, role: str, lengths: list[int]
    ) -> list[np.ndarray]:
        (embeddings,) = self.module.forward_batch(input_ids, attention_mask, role)
        if self.normalize_in_graph:
            embeddings = nn.functional.normalize(embeddings, p=2, dim=-1)
        return list(embeddings.numpy())

    def graph_rows(self, outputs: list[np.ndarray], lengths: list[int]) -> list[np.ndarray]:
        return list(outputs[0])

    def compare(self, got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
        return scaled_difference(got, expected), float(cosines(got, expected))

    def pack(self, rows: list[np.ndarray]) -> Encoded:
        return np.stack(rows).astype(np.float32)

    def scores(self, queries: Encoded, docs: Encoded) -> np.ndarray:
        if self.model.config.similarity == "cosine":
            queries, docs = (x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12) for x in (queries, docs))
        return queries @ docs.T

    def provenance(self, expected: dict[str, list[Any]]) -> dict[str, Any]:
        return {"pooling": self.model.config.pooling}
