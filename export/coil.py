"""COIL export: `query_encoder` and `doc_encoder` graphs, scored in numpy (`lir.coil`).

Each encoder outputs the first token's projected vector `cls` [batch, C], every token's projected vector
`embeddings` [batch, sequence, D], the `token_ids` [batch, sequence] they are matched on and the role's
`scoring_mask` [batch, sequence] (position 0, padding and unscored tokens False). Cosine models give
L2-normalized vectors. Matching on token ids and aggregating are the consumer's (`coil_scores`, the index).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lir.coil import CoilVectors, coil_scores
from lir.export.family import BiEncoderExport, cosines
from lir.export.graphs import GraphPlan, encoder_inputs, encoder_sample
from lir.export.limits import MIN_TOKEN_COSINE, ParityError, scaled_difference
from lir.manifest import OUTPUTS, TensorSpec
from lir.train.coil import CoilModel, CoilOutputs
from lir.vectors import Encoded

ENCODERS = {"query": "query_encoder", "doc": "doc_encoder"}

Row = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""One text: its scoring mask over its own tokens, cls vector [C], scored token ids [n] and vectors [n, D]."""


class CoilEncoderGraph(nn.Module):
    """Token ids → cls vector, token vectors, token ids and scoring mask of one role."""

    def __init__(self, model: CoilModel, role: str) -> None:
        super().__init__()
        self.model = model
        self.role = role

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CoilOutputs:
        return self.model.encode(input_ids, attention_mask, self.role)


class CoilExport(BiEncoderExport):
    """A cls vector plus token vectors matched on equal token ids per text (Lightning IR `coil`)."""

    family = "coil"
    encoders = ENCODERS
    bounds = MIN_TOKEN_COSINE

    def plans(self) -> list[GraphPlan]:
        names = OUTPUTS[self.family]
        outputs = [
            TensorSpec(names[0], "float32", ["batch", self.model.cls_dim]),
            TensorSpec(names[1], "float32", ["batch", "sequence", self.model.embedding_dim]),
            TensorSpec(names[2], "int64", ["batch", "sequence"]),
            TensorSpec(names[3], "bool", ["batch", "sequence"]),
        ]
        return [
            GraphPlan(graph, CoilEncoderGraph(self.model, role), encoder_inputs(), outputs, encoder_sample(), (role,))
            for role, graph in ENCODERS.items()
        ]

    def expected_rows(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, role: str, lengths: list[int]
    ) -> list[Row]:
        return self._rows([x.numpy() for x in self.module.forward_batch(input_ids, attention_mask, role)], lengths)

    def graph_rows(self, outputs: list[np.ndarray], lengths: list[int]) -> list[Row]:
        return self._rows(outputs, lengths)

    @staticmethod
    def _rows(outputs: list[np.ndarray], lengths: list[int]) -> list[Row]:
        cls, vectors, token_ids, mask = outputs
        mask = mask.astype(bool)
        rows = []
        for c, v, ids, m, n in zip(cls, vectors, token_ids, mask, lengths, strict=True):
            if m[n:].any():
                raise ParityError("padding positions are marked as scored")
            rows.append((m[:n].copy(), c, ids[m].astype(np.int64), v[m]))
        return rows

    def compare(self, got: Row, expected: Row) -> tuple[float, float]:
        if not np.array_equal(got[0], expected[0]) or not np.array_equal(got[2], expected[2]):
            raise ParityError("the scoring mask or the token ids differ from PyTorch's")
        diff = max(scaled_difference(got[1], expected[1]), scaled_difference(got[3], expected[3]))
        agreement = float(cosines(got[1][None], expected[1][None]).min())
        if len(expected[3]):
            agreement = min(agreement, float(cosines(got[3], expected[3]).min()))
        return diff, agreement

    def pack(self, rows: list[Row]) -> Encoded:
        return CoilVectors.from_rows([row[1:] for row in rows], self.model.cls_dim, self.model.embedding_dim)

    def scores(self, queries: Encoded, docs: Encoded) -> np.ndarray:
        config = self.model.config
        return coil_scores(queries, docs, config.aggregation, config.doc_aggregation)

    def manifest_fields(self) -> dict[str, Any]:
        config = self.model.config
        return super().manifest_fields() | {
            "aggregation": config.aggregation,
            "doc_aggregation": config.doc_aggregation,
        }
