"""Sparse (SPLADE) export: token ids → the top-k vocabulary terms, by one `encoder` graph for both roles
(`query_encoder` and `doc_encoder` when only one role expands).

The graph outputs `term_ids` [batch, K] int64 and `weights` [batch, K] float32, the `torch.topk` of
the model's [batch, V] term weights (K = the manifest's `top_k`); a zero weight means "no term". Texts
with more than K nonzero terms lose their lightest ones, which parity counts and reports. A role the model
does not run on (static weighting: inference-free; or none) has no graph: its term weights are a table
(`query_weights.npy`, in the manifest's `term_weights`), checked against PyTorch like a graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from lir.export.family import BiEncoderExport, cosines
from lir.export.graphs import GraphPlan, encoder_inputs, encoder_sample
from lir.export.limits import DEFAULT_TOP_K, FP32_TOLERANCE, MIN_TERM_COSINE, ParityError
from lir.export.parity import Parity, Runner
from lir.files import sha256_file
from lir.manifest import OUTPUTS, ROLES, TensorSpec, TermWeights
from lir.term_weights import TermTable
from lir.train.module import BiEncoderModule
from lir.train.sparse import SparseModel
from lir.train.unicoil import UniCoilModel
from lir.vectors import Encoded, SparseVectors, sparse_dot

GRAPH = "encoder"

Row = tuple[np.ndarray, np.ndarray]
"""One text from the graph: K term ids and their weights."""


class SparseEncoderGraph(nn.Module):
    """Token ids → the K heaviest vocabulary terms of each text and their weights (the model's
    `graph_weights`: its term weights in the form a graph runs fastest)."""

    def __init__(self, model: SparseModel | UniCoilModel, top_k: int, role: str) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k
        self.role = role

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights, term_ids = torch.topk(self.model.graph_weights(input_ids, attention_mask, self.role), self.top_k, -1)
        return term_ids, weights


class SparseExport(BiEncoderExport):
    """Vocabulary-sized term weights per text, compared by dot product."""

    family = "sparse"
    bounds = MIN_TERM_COSINE

    def __init__(self, module: BiEncoderModule, top_k: int = DEFAULT_TOP_K) -> None:
        super().__init__(module)
        self.top_k = min(top_k, self.model.embedding_dim)
        config, dim = self.model.config, self.model.embedding_dim
        modelled = [role for role in ROLES if config.needs_model(role)]
        shared = len({config.expansion(role) for role in modelled}) == 1
        self.encoders = {role: GRAPH if shared else f"{role}_encoder" for role in modelled}
        self.tables = {role: TermTable(self._static_table(role), dim) for role in ROLES if not config.needs_model(role)}

    def _static_table(self, role: str) -> np.ndarray | None:
        if self.model.config.weighting(role) != "static":
            return None
        return self.model.static_weights[role].detach().float().numpy().copy()

    def plans(self) -> list[GraphPlan]:
        ids, weights = OUTPUTS[self.family]
        shape: list[int | str] = ["batch", self.top_k]
        outputs = [TensorSpec(ids, "int64", shape), TensorSpec(weights, "float32", list(shape))]
        plans = {}
        for role, name in self.encoders.items():
            if name not in plans:
                graph = SparseEncoderGraph(self.model, self.top_k, role)
                roles = tuple(r for r, n in self.encoders.items() if n == name)
                plans[name] = GraphPlan(name, graph, encoder_inputs(), outputs, encoder_sample(), roles)
        return list(plans.values())

    def runner(self, role: str, sessions: dict[str, ort.InferenceSession]) -> Runner:
        table = self.tables.get(role)
        if table is None:
            return super().runner(role, sessions)
        return lambda input_ids, attention_mask: list(table.run(input_ids, attention_mask).values())

    def write_files(self, staging: Path, reference: Parity) -> dict[str, Any]:
        """Each role without a graph: its table as `ROLE_weights.npy` (none when every term weighs 1),
        whose terms and weights must equal PyTorch's on the probes."""
        fields: dict[str, TermWeights] = {}
        for role, table in self.tables.items():
            diff, _ = reference.compare(self.runner(role, {}), [role])
            if diff > FP32_TOLERANCE:
                raise ParityError(f"the {role} term weights differ from PyTorch by {diff:.2e}: export refused")
            if table.table is None:
                fields[role] = TermWeights()
                continue
            file = staging / f"{role}_weights.npy"
            with file.open("wb") as handle:
                np.save(handle, table.table, allow_pickle=False)
            fields[role] = TermWeights(file.name, sha256_file(file))
        return {"term_weights": fields} if fields else {}

    def expected_rows(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, role: str, lengths: list[int]
    ) -> list[np.ndarray]:
        (weights,) = self.module.forward_batch(input_ids, attention_mask, role)
        return list(weights.numpy())

    def graph_rows(self, outputs: list[np.ndarray], lengths: list[int]) -> list[Row]:
        return list(zip(outputs[0], outputs[1], strict=True))

    def compare(self, got: Row, expected: np.ndarray) -> tuple[float, float]:
        """The graph's terms against PyTorch's weights truncated to PyTorch's own top K.

        The difference: terms whose weight ties with the K-th one (within the fp32 tolerance) may be kept
        by either side. The cosine: against all of PyTorch's weights when the text has at most K nonzero
        terms; for a truncated text, on the terms the graph kept (which of the many near-equal terms at the
        cut a numeric variant keeps is no fault; their values must still match).
        """
        term_ids, weights = got
        dense = np.zeros_like(expected)
        np.add.at(dense, term_ids, weights)  # a term table repeats ids (with zero weight after the first)
        chosen = np.zeros(expected.shape, bool)
        chosen[term_ids] = True
        kept = np.zeros(expected.shape, bool)
        magnitude = np.abs(expected)  # static term weights may be negative
        kept[np.argpartition(-magnitude, self.top_k - 1)[: self.top_k]] = True
        diff = np.abs(dense - np.where(kept, expected, 0.0))
        boundary = (chosen != kept) & (np.abs(magnitude - magnitude[kept].min()) <= FP32_TOLERANCE)
        diff[boundary] = np.where(chosen, np.abs(dense - expected), 0.0)[boundary]
        truncated = np.count_nonzero(expected) > self.top_k
        return float(diff.max()), float(cosines(dense, np.where(chosen, expected, 0.0) if truncated else expected))

    def pack(self, rows: list[Row]) -> Encoded:
        dim = self.model.embedding_dim  # rows of term tables are as wide as their batch: one by one
        return SparseVectors.concat([SparseVectors.from_topk(ids[None], w[None], dim) for ids, w in rows], dim)

    def scores(self, queries: Encoded, docs: Encoded) -> np.ndarray:
        return np.stack([sparse_dot(queries.row(i), docs) for i in range(len(queries))])

    def manifest_fields(self) -> dict[str, Any]:
        return super().manifest_fields() | {"top_k": self.top_k}

    def provenance(self, expected: dict[str, list[np.ndarray]]) -> dict[str, Any]:
        """How many probe texts of each role have more nonzero terms than the graph returns."""
        return {
            "top_k_truncated": {
                role: sum(int(np.count_nonzero(row) > self.top_k) for row in rows) for role, rows in expected.items()
            },
            "probe_texts": {role: len(rows) for role, rows in expected.items()},
        }

    def warnings(self, expected: dict[str, list[np.ndarray]]) -> list[str]:
        over = self.provenance(expected)["top_k_truncated"]
        if not sum(over.values()):
            return []
        texts = sum(len(rows) for rows in expected.values())
        return [
            f"{sum(over.values())} of {texts} probe texts have more than {self.top_k} nonzero terms: the graph keeps "
            f"the {self.top_k} heaviest of each text, which changes rankings (raise --top-k to keep more)"
        ]
