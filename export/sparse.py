"""Sparse (SPLADE) export: one `encoder` graph for both roles, token ids → the top-k vocabulary terms.

The graph outputs `term_ids` [batch, K] int64 and `weights` [batch, K] float32, the `torch.topk` of
the model's [batch, V] term weights (K = the manifest's `top_k`); a zero weight means "no term". Texts
with more than K nonzero terms lose their lightest ones, which parity counts and reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lir.export.family import BiEncoderExport, cosines
from lir.export.graphs import GraphPlan, encoder_inputs, encoder_sample
from lir.export.limits import DEFAULT_TOP_K, FP32_TOLERANCE, MIN_TERM_COSINE
from lir.manifest import OUTPUTS, TensorSpec
from lir.train.module import BiEncoderModule
from lir.train.sparse import SPARSIFICATIONS, SparseModel
from lir.vectors import Encoded, SparseVectors, sparse_dot

GRAPH = "encoder"
MASKED = -1e4
"""Added to the logits of padding: far below any logit (so ReLU zeroes it), and finite in fp16."""

Row = tuple[np.ndarray, np.ndarray]
"""One text from the graph: K term ids and their weights."""


class SparseEncoderGraph(nn.Module):
    """Token ids → the K heaviest vocabulary terms of each text and their weights.

    With max pooling, `SparseModel.encode` is the masked max over tokens of sparsify(logits + bias); every
    sparsification is monotone and the decoder bias the same for every token, so the graph takes the max of
    the bare logits (padding pushed down by `MASKED`) and does the rest on [batch, V]: the same numbers with
    fewer passes over [batch, sequence, V], the largest tensor of the model (parity checks it). Sum and mean
    pooling run `encode` itself.
    """

    def __init__(self, model: SparseModel, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config, head = self.model.config, self.model.head
        if config.pooling != "max":
            weights, term_ids = torch.topk(self.model.encode(input_ids, attention_mask), self.top_k, dim=-1)
            return term_ids, weights
        hidden = self.model.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = head.norm(head.activation(head.dense(hidden))) @ head.embeddings.weight.T
        logits = (logits + (1 - attention_mask.unsqueeze(-1).to(logits.dtype)) * MASKED).amax(dim=1)
        weights, term_ids = torch.topk(SPARSIFICATIONS[config.sparsification](logits + head.bias), self.top_k, dim=-1)
        return term_ids, weights


class SparseExport(BiEncoderExport):
    """Vocabulary-sized term weights per text, compared by dot product."""

    family = "sparse"
    encoders = {"query": GRAPH, "doc": GRAPH}
    min_cosine = MIN_TERM_COSINE

    def __init__(self, module: BiEncoderModule, top_k: int = DEFAULT_TOP_K) -> None:
        super().__init__(module)
        self.top_k = min(top_k, self.model.embedding_dim)

    def plans(self) -> list[GraphPlan]:
        ids, weights = OUTPUTS[self.family]
        shape: list[int | str] = ["batch", self.top_k]
        outputs = [TensorSpec(ids, "int64", shape), TensorSpec(weights, "float32", list(shape))]
        graph = SparseEncoderGraph(self.model, self.top_k)
        return [GraphPlan(GRAPH, graph, encoder_inputs(), outputs, encoder_sample(), ("query", "doc"))]

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
        dense[term_ids] = weights
        chosen = np.zeros(expected.shape, bool)
        chosen[term_ids] = True
        kept = np.zeros(expected.shape, bool)
        kept[np.argpartition(-expected, self.top_k - 1)[: self.top_k]] = True
        diff = np.abs(dense - np.where(kept, expected, 0.0))
        boundary = (chosen != kept) & (np.abs(expected - expected[kept].min()) <= FP32_TOLERANCE)
        diff[boundary] = np.where(chosen, np.abs(dense - expected), 0.0)[boundary]
        truncated = np.count_nonzero(expected) > self.top_k
        return float(diff.max()), float(cosines(dense, np.where(chosen, expected, 0.0) if truncated else expected))

    def pack(self, rows: list[Row]) -> Encoded:
        term_ids, weights = (np.stack(part) for part in zip(*rows, strict=True))
        return SparseVectors.from_topk(term_ids, weights, self.model.embedding_dim)

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
