"""Multi-vector (ColBERT) export: `query_encoder` and `doc_encoder` graphs, and a `scorer` graph.

Each encoder outputs the token vectors [batch, sequence, D] (L2-normalized inside the graph when the
similarity is cosine) and the role's scoring mask [batch, sequence] (padding and unscored tokens
False, expansion tokens True). The scorer is the late interaction of aligned (query, document)
pairs of padded token vectors, for re-ranking candidates: [batch] scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from lir.export.family import BiEncoderExport, cosines
from lir.export.graphs import GraphPlan, encoder_inputs, encoder_sample
from lir.export.limits import MIN_TOKEN_COSINE, ParityError, scaled_difference
from lir.manifest import OUTPUTS, TensorSpec
from lir.train.multi_vector import MultiVectorModel
from lir.vectors import Encoded, MultiVectors, maxsim

ENCODERS = {"query": "query_encoder", "doc": "doc_encoder"}
SCORER = "scorer"
SCORER_BATCH = 8

Row = tuple[np.ndarray, np.ndarray]
"""One text: its scoring mask over its own tokens and the vectors of the scored tokens [n, D]."""


class MultiVectorEncoderGraph(nn.Module):
    """Token ids → token vectors and the scoring mask of one role."""

    def __init__(self, model: MultiVectorModel, role: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.role = role
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, mask = self.model.encode(input_ids, attention_mask, self.role)
        if self.normalize:
            vectors = nn.functional.normalize(vectors, p=2, dim=-1)
        return vectors, mask


class ScorerGraph(nn.Module):
    """Late interaction of aligned pairs: query and document token vectors with their masks → [batch]."""

    def __init__(self, model: MultiVectorModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, query: torch.Tensor, query_mask: torch.Tensor, doc: torch.Tensor, doc_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.model.pair_scores(query, query_mask, doc, doc_mask)


def scorer_interface(dim: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The scorer's inputs (padded token vectors and masks of both sides) and its output."""
    inputs = [
        TensorSpec("query_embeddings", "float32", ["batch", "q_sequence", dim]),
        TensorSpec("query_mask", "bool", ["batch", "q_sequence"]),
        TensorSpec("doc_embeddings", "float32", ["batch", "d_sequence", dim]),
        TensorSpec("doc_mask", "bool", ["batch", "d_sequence"]),
    ]
    return inputs, [TensorSpec("scores", "float32", ["batch"])]


def scorer_sample(dim: int) -> tuple[torch.Tensor, ...]:
    """Inputs to trace the scorer with (one unscored document token)."""
    doc_mask = torch.ones(2, 6, dtype=torch.bool)
    doc_mask[0, -1] = False
    return torch.randn(2, 4, dim), torch.ones(2, 4, dtype=torch.bool), torch.randn(2, 6, dim), doc_mask


def pad_rows(rows: list[Row], dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scored vectors of several texts as a padded [B, L, D] batch and mask; unscored slots hold noise."""
    length = max(len(vectors) for _, vectors in rows) + 2
    padded = rng.standard_normal((len(rows), length, dim)).astype(np.float32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, (_, vectors) in enumerate(rows):
        padded[i, : len(vectors)] = vectors
        mask[i, : len(vectors)] = True
    return padded, mask


class MultiVectorExport(BiEncoderExport):
    """Scored token vectors per text, compared by late interaction (the model's aggregations)."""

    family = "multi-vector"
    encoders = ENCODERS
    bounds = MIN_TOKEN_COSINE

    def plans(self) -> list[GraphPlan]:
        dim = self.model.embedding_dim
        names = OUTPUTS[self.family]
        outputs = [
            TensorSpec(names[0], "float32", ["batch", "sequence", dim]),
            TensorSpec(names[1], "bool", ["batch", "sequence"]),
        ]
        plans = [
            GraphPlan(
                graph,
                MultiVectorEncoderGraph(self.model, role, self.normalize_in_graph),
                encoder_inputs(),
                outputs,
                encoder_sample(),
                (role,),
            )
            for role, graph in ENCODERS.items()
        ]
        inputs, scores = scorer_interface(dim)
        scorer = GraphPlan(SCORER, ScorerGraph(self.model), inputs, scores, scorer_sample(dim), runs_backbone=False)
        return [*plans, scorer]

    def expected_rows(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, role: str, lengths: list[int]
    ) -> list[Row]:
        vectors, mask = self.module.forward_batch(input_ids, attention_mask, role)
        if self.normalize_in_graph:
            vectors = nn.functional.normalize(vectors, p=2, dim=-1)
        return self._rows(vectors.numpy(), mask.numpy(), lengths)

    def graph_rows(self, outputs: list[np.ndarray], lengths: list[int]) -> list[Row]:
        return self._rows(outputs[0], outputs[1], lengths)

    @staticmethod
    def _rows(vectors: np.ndarray, mask: np.ndarray, lengths: list[int]) -> list[Row]:
        mask = mask.astype(bool)
        for row, length in zip(mask, lengths, strict=True):
            if row[length:].any():
                raise ParityError("padding positions are marked as scored")
        return [(m[:n].copy(), v[m]) for v, m, n in zip(vectors, mask, lengths, strict=True)]

    def compare(self, got: Row, expected: Row) -> tuple[float, float]:
        if not np.array_equal(got[0], expected[0]):
            differ = int((got[0] != expected[0]).sum()) if got[0].shape == expected[0].shape else len(expected[0])
            raise ParityError(f"the scoring mask differs from PyTorch's at {differ} of {len(expected[0])} tokens")
        if not len(expected[1]):
            return 0.0, 1.0
        return scaled_difference(got[1], expected[1]), float(cosines(got[1], expected[1]).min())

    def pack(self, rows: list[Row]) -> Encoded:
        return MultiVectors.from_list([vectors for _, vectors in rows], self.model.embedding_dim)

    def scores(self, queries: Encoded, docs: Encoded) -> np.ndarray:
        aggregations = self.model.config.aggregation, self.model.config.doc_aggregation
        return np.stack([maxsim(queries[i], docs, *aggregations) for i in range(len(queries))])

    def manifest_fields(self) -> dict[str, Any]:
        config = self.model.config
        aggregations = {"aggregation": config.aggregation, "doc_aggregation": config.doc_aggregation}
        return super().manifest_fields() | aggregations | {"scorer": SCORER}

    def compare_scorer(self, session: ort.InferenceSession, expected: dict[str, list[Row]]) -> tuple[float, float]:
        """The scorer against `pair_scores` on (query i, doc i) and (query i, doc i + 1) probe pairs.

        The difference is relative to the largest score of a batch (at least 1): scores are sums of up
        to a query's length of dot products.
        """
        queries, docs = expected["query"], expected["doc"]
        n = min(len(queries), len(docs))
        pairs = [(i, i) for i in range(n)] + [(i, (i + 1) % n) for i in range(n)]
        batches = [pairs[start : start + SCORER_BATCH] for start in range(0, len(pairs), SCORER_BATCH)]
        dim = self.model.embedding_dim
        empty_doc = (np.zeros(0, bool), np.zeros((0, dim), np.float32))
        names = ("query_embeddings", "query_mask", "doc_embeddings", "doc_mask")
        rng = np.random.default_rng(0)
        worst_diff, worst_cos = 0.0, 1.0
        for batch in [*batches, None]:  # None: a document without scored tokens
            q_rows = [queries[i] for i, _ in batch] if batch else [queries[0]]
            d_rows = [docs[j] for _, j in batch] if batch else [empty_doc]
            feeds = dict(zip(names, (*pad_rows(q_rows, dim, rng), *pad_rows(d_rows, dim, rng)), strict=True))
            with torch.inference_mode():
                want = self.model.pair_scores(*(torch.from_numpy(x) for x in feeds.values())).numpy()
            got = session.run(None, feeds)[0]
            worst_diff = max(worst_diff, scaled_difference(got, want))
            worst_cos = min(worst_cos, float(cosines(got, want)))
        return worst_diff, worst_cos
