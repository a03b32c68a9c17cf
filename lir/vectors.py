"""What encoders return for many texts, packed, and how each family scores a query against documents.

- single-vector: a float32 array [N, D];
- multi-vector: `MultiVectors`, the scored token vectors of all texts in one [T, D] array with offsets;
- sparse: `SparseVectors`, the nonzero (term id, weight) pairs of all texts with offsets (CSR rows).

The scoring functions here are the reference for indexes, re-rankers and export checks (numpy only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lir.coil import CoilVectors, check_aggregations, collect_rows, padded_rows
from lir.errors import LirError


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


@dataclass
class MultiVectors:
    """Token vectors of N texts: text i owns rows `offsets[i]:offsets[i + 1]` of `vectors`."""

    vectors: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_list(cls, items: Sequence[np.ndarray], dim: int) -> MultiVectors:
        """Pack a list of [L_i, D] arrays."""
        vectors = np.concatenate(items) if items else np.empty((0, dim), np.float32)
        return cls(np.ascontiguousarray(vectors, dtype=np.float32), _offsets([len(x) for x in items]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.vectors[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class SparseVectors:
    """Sparse vectors of N texts over a vocabulary of `dim` terms, as CSR rows sorted by term id."""

    term_ids: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray
    dim: int

    @classmethod
    def from_topk(cls, term_ids: np.ndarray, weights: np.ndarray, dim: int) -> SparseVectors:
        """Rows of an encoder graph's top-k output; zero weights are dropped (static term weights, which
        may be negative, are kept)."""
        keep = weights != 0
        order = np.argsort(np.where(keep, term_ids, dim), axis=1, kind="stable")
        ids = np.take_along_axis(term_ids, order, axis=1)[np.take_along_axis(keep, order, axis=1)]
        values = np.take_along_axis(weights, order, axis=1)[np.take_along_axis(keep, order, axis=1)]
        return cls(ids.astype(np.int32), values.astype(np.float32), _offsets(keep.sum(axis=1)), dim)

    @classmethod
    def concat(cls, parts: Sequence[SparseVectors], dim: int) -> SparseVectors:
        """The rows of several parts, in order."""
        if not parts:
            return cls(np.empty(0, np.int32), np.empty(0, np.float32), np.zeros(1, np.int64), dim)
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(
            np.concatenate([p.term_ids for p in parts]),
            np.concatenate([p.weights for p in parts]),
            _offsets(lengths),
            dim,
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and weights of text i."""
        span = slice(self.offsets[i], self.offsets[i + 1])
        return self.term_ids[span], self.weights[span]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: Sequence[int] | np.ndarray) -> SparseVectors:
        """The given rows, in that order."""
        parts = [self.row(int(i)) for i in rows]
        return SparseVectors(
            np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int32),
            np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.float32),
            _offsets([len(p[0]) for p in parts]),
            self.dim,
        )

    def to_dense(self) -> np.ndarray:
        """[N, dim] float32 (for small N: references and tests)."""
        dense = np.zeros((len(self), self.dim), np.float32)
        rows = np.repeat(np.arange(len(self)), self.lengths)
        dense[rows, self.term_ids] = self.weights
        return dense


Encoded = np.ndarray | MultiVectors | SparseVectors | CoilVectors


def maxsim(
    query: np.ndarray,
    docs: MultiVectors,
    aggregation: str = "sum",
    doc_aggregation: str = "max",
    chunk_tokens: int = 1 << 18,
) -> np.ndarray:
    """Late interaction of one query's [Lq, D] token vectors with every document: [N] scores.

    Each query token aggregates its dot products over a document's tokens (`doc_aggregation`: the best,
    MaxSim, or their sum or mean); those are aggregated over the query tokens (`aggregation`: sum, mean
    or max), as Lightning IR's late interaction does. A document without scored tokens scores 0 per query
    token; a query without tokens scores 0.
    """
    check_aggregations(aggregation, doc_aggregation)
    n = len(docs)
    scores = np.zeros(n, np.float64)
    if len(query) == 0:
        return scores.astype(np.float32)
    lengths = docs.lengths
    start = 0
    while start < n:  # documents in chunks of about `chunk_tokens` tokens, to bound memory
        stop = int(np.searchsorted(docs.offsets, docs.offsets[start] + chunk_tokens, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        first, last = int(docs.offsets[start]), int(docs.offsets[stop])
        sims = query @ docs.vectors[first:last].T  # [Lq, T_chunk]
        nonempty = np.flatnonzero(lengths[start:stop] > 0)
        if len(nonempty):
            starts = docs.offsets[start:stop][nonempty] - first
            per_token = doc_reduce(sims, starts, lengths[start:stop][nonempty], doc_aggregation)  # [Lq, nonempty]
            scores[start + nonempty] = per_token.max(axis=0) if aggregation == "max" else per_token.sum(axis=0)
        start = stop
    if aggregation == "mean":
        scores /= len(query)
    return scores.astype(np.float32)


def doc_reduce(sims: np.ndarray, starts: np.ndarray, lengths: np.ndarray, doc_aggregation: str) -> np.ndarray:
    """[Lq, T] similarities to the tokens of consecutive documents (each starting at `starts`, with
    `lengths` > 0 tokens) → [Lq, documents] per query token: max, sum or mean over each document's tokens
    (float64)."""
    if doc_aggregation == "max":
        return np.maximum.reduceat(sims, starts, axis=1).astype(np.float64)
    summed = np.add.reduceat(sims, starts, axis=1, dtype=np.float64)
    return summed / lengths if doc_aggregation == "mean" else summed


def sparse_dot(query: tuple[np.ndarray, np.ndarray], docs: SparseVectors) -> np.ndarray:
    """Dot products of one sparse query (term ids, weights) with every document: [N] scores."""
    dense_query = np.zeros(docs.dim, np.float32)
    dense_query[query[0]] = query[1]
    products = dense_query[docs.term_ids] * docs.weights
    rows = np.repeat(np.arange(len(docs)), docs.lengths)
    return np.bincount(rows, weights=products, minlength=len(docs)).astype(np.float32)


class Collector:
    """Gathers an encoder's batch outputs (named as in `OUTPUTS`) for texts in any order into the
    family's packed form, in input order: the `Engine` runs length-sorted batches through it."""

    def __init__(self, family: str, count: int, dim: int) -> None:
        if family not in ("single-vector", "multi-vector", "sparse", "coil"):
            raise LirError(f"unknown model family {family!r}")
        self.family, self.count, self.dim = family, count, dim
        self._dense = np.empty((count, dim), np.float32) if family == "single-vector" else None
        self._items: list = [None] * count

    def add(self, rows: Sequence[int] | np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """The outputs of one batch whose rows are the texts `rows`."""
        if self._dense is not None:
            self._dense[rows] = outputs["embeddings"]
        elif self.family == "multi-vector":
            vectors, mask = outputs["embeddings"], outputs["scoring_mask"].astype(bool)
            for i, row in enumerate(rows):
                self._items[row] = vectors[i][mask[i]]
        elif self.family == "coil":
            for row, item in zip(rows, collect_rows(outputs), strict=True):
                self._items[row] = item
        else:
            packed = SparseVectors.from_topk(outputs["term_ids"], outputs["weights"], self.dim)
            for i, row in enumerate(rows):
                self._items[row] = packed.take([i])

    def result(self) -> Encoded:
        """The packed encodings of all texts (every row must have been added)."""
        if self._dense is not None:
            return self._dense
        if any(item is None for item in self._items):
            raise LirError("internal: some texts were never encoded")
        if self.family == "multi-vector":
            return MultiVectors.from_list(self._items, self.dim)
        if self.family == "coil":
            return CoilVectors.from_rows(self._items, len(self._items[0][0]) if self._items else 0, self.dim)
        return SparseVectors.concat(self._items, self.dim)


def padded_outputs(encoded: Encoded, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows `start:stop` as batch tensors (the inverse of `Collector`): token vectors left-aligned with
    their mask, or term ids and weights padded with zero weights."""
    if isinstance(encoded, np.ndarray):
        return {"embeddings": encoded[start:stop]}
    if isinstance(encoded, CoilVectors):
        return padded_rows(encoded, start, stop)
    lengths = encoded.lengths[start:stop]
    width = max(int(lengths.max(initial=0)), 1)
    valid = np.arange(width) < lengths[:, None]
    first, last = int(encoded.offsets[start]), int(encoded.offsets[stop])
    if isinstance(encoded, MultiVectors):
        vectors = np.zeros((stop - start, width, encoded.vectors.shape[1]), np.float32)
        vectors[valid] = encoded.vectors[first:last]
        return {"embeddings": vectors, "scoring_mask": valid}
    term_ids = np.zeros((stop - start, width), np.int64)
    weights = np.zeros((stop - start, width), np.float32)
    term_ids[valid] = encoded.term_ids[first:last]
    weights[valid] = encoded.weights[first:last]
    return {"term_ids": term_ids, "weights": weights}
