"""COIL (Lightning IR `coil`) encodings and scores, numpy only: the reference for indexes and re-rankers.

A text is its first token's `cls` vector [C] plus one vector [D] and token id per scored token (position 1
on, padding and the role's unscored tokens dropped). A query scores a document by

    cls_q · cls_d + query_agg_i doc_agg_j (q_i · d_j if id(q_i) == id(d_j) else 0)

(vectors L2-normalized for cosine models), default sum over query tokens of the max over document tokens.
Pairs of different token ids count as 0, not as missing: a query token matching nothing in a document
scores max(0, …) under `max` as long as the document has a scored token of another id.

`Postings` is COIL's inverted index over documents: each token id's (document, vector) entries in one
contiguous list, so a query token is compared only with the document tokens of its own id, and the
scores are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lir.errors import LirError

QUERY_AGGREGATIONS = ("sum", "mean", "max")
DOC_AGGREGATIONS = ("max", "sum", "mean")
"""Lightning IR's late-interaction aggregations over query and over document tokens (COIL and multi-vector)."""

Row = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One text: its cls vector [C], the token ids [n] and vectors [n, D] of its scored tokens."""


def _offsets(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def check_aggregations(query: str, doc: str) -> None:
    """A one-line error unless both are late-interaction aggregations (over query / document tokens)."""
    if query not in QUERY_AGGREGATIONS or doc not in DOC_AGGREGATIONS:
        raise LirError(
            f"unknown aggregation {query!r} over query tokens / {doc!r} over document tokens "
            f"(query: {', '.join(QUERY_AGGREGATIONS)}; doc: {', '.join(DOC_AGGREGATIONS)})"
        )


@dataclass
class CoilVectors:
    """N texts: `cls` [N, C]; text i owns rows `offsets[i]:offsets[i + 1]` of `vectors` [T, D] and `token_ids` [T]."""

    cls: np.ndarray
    vectors: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Row], cls_dim: int, dim: int) -> CoilVectors:
        """Pack per-text rows (cls vector, token ids, token vectors)."""
        if not rows:
            return cls(np.empty((0, cls_dim), np.float32), np.empty((0, dim), np.float32), np.empty(0, np.int64),
                       np.zeros(1, np.int64))  # fmt: skip
        return cls(
            np.ascontiguousarray(np.stack([r[0] for r in rows]), dtype=np.float32),
            np.ascontiguousarray(np.concatenate([r[2] for r in rows]), dtype=np.float32),
            np.concatenate([r[1] for r in rows]).astype(np.int64),
            _offsets([len(r[1]) for r in rows]),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> Row:
        span = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return self.cls[i], self.token_ids[span], self.vectors[span]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: Sequence[int] | np.ndarray) -> CoilVectors:
        """The given texts, in that order."""
        return CoilVectors.from_rows([self.row(int(i)) for i in rows], self.cls.shape[1], self.vectors.shape[1])


@dataclass
class Postings:
    """COIL's inverted lists over N documents: token id `list_ids[k]` owns entries
    `list_offsets[k]:list_offsets[k + 1]` (their `doc_rows` ascending, and `vectors`); `doc_lengths` [N]
    counts each document's scored tokens."""

    list_ids: np.ndarray
    list_offsets: np.ndarray
    doc_rows: np.ndarray
    vectors: np.ndarray
    doc_lengths: np.ndarray

    @classmethod
    def build(cls, docs: CoilVectors) -> Postings:
        """The inverted lists of packed documents (a stable sort of their tokens by id)."""
        order = np.argsort(docs.token_ids, kind="stable")
        ids = docs.token_ids[order]
        list_ids, starts = np.unique(ids, return_index=True)
        doc_of_token = np.repeat(np.arange(len(docs), dtype=np.int64), docs.lengths)
        return cls(
            list_ids.astype(np.int64),
            np.append(starts, len(ids)).astype(np.int64),
            doc_of_token[order],
            np.ascontiguousarray(docs.vectors[order], dtype=np.float32),
            docs.lengths.astype(np.int64),
        )

    def entries(self, token_id: int) -> slice:
        """The span of `token_id`'s list (empty when no document has it)."""
        k = int(np.searchsorted(self.list_ids, token_id))
        if k == len(self.list_ids) or self.list_ids[k] != token_id:
            return slice(0, 0)
        return slice(int(self.list_offsets[k]), int(self.list_offsets[k + 1]))

    def token_scores(self, token_ids: np.ndarray, vectors: np.ndarray, query_agg: str, doc_agg: str) -> np.ndarray:
        """The token part of one query's score [N] (its scored token ids [n] and vectors [n, D])."""
        check_aggregations(query_agg, doc_agg)
        n = len(self.doc_lengths)
        total = np.full(n, -np.inf if query_agg == "max" else 0.0, np.float64)
        for token_id, vector in zip(token_ids, vectors, strict=True):
            span = self.entries(int(token_id))
            per_doc = self._doc_aggregate(self.doc_rows[span], self.vectors[span] @ vector, doc_agg)
            total = np.maximum(total, per_doc) if query_agg == "max" else total + per_doc
        if query_agg == "mean":
            total /= max(len(token_ids), 1)
        return total

    def _doc_aggregate(self, rows: np.ndarray, sims: np.ndarray, doc_agg: str) -> np.ndarray:
        """One query token over every document's scored tokens, unmatched ones counting 0 ([N])."""
        n = len(self.doc_lengths)
        if doc_agg == "max":
            best = np.full(n, -np.inf, np.float64)
            np.maximum.at(best, rows, sims.astype(np.float64))
            unmatched = np.bincount(rows, minlength=n) < self.doc_lengths
            return np.where(unmatched, np.maximum(best, 0.0), best)
        summed = np.bincount(rows, weights=sims.astype(np.float64), minlength=n)
        return summed / np.maximum(self.doc_lengths, 1) if doc_agg == "mean" else summed


def coil_scores(queries: CoilVectors, docs: CoilVectors, query_agg: str = "sum", doc_agg: str = "max") -> np.ndarray:
    """[Q, N] scores of every query against every document (see the module)."""
    postings = Postings.build(docs)
    dense = queries.cls.astype(np.float64) @ docs.cls.T.astype(np.float64)
    rows = [postings.token_scores(*queries.row(i)[1:], query_agg, doc_agg) for i in range(len(queries))]
    tokens = np.stack(rows) if rows else np.zeros((0, len(docs)))
    return (dense + tokens).astype(np.float32)


def collect_rows(outputs: dict[str, np.ndarray]) -> list[Row]:
    """An encoder batch's outputs (`cls`, `embeddings`, `token_ids`, `scoring_mask`) split into rows per text."""
    mask = outputs["scoring_mask"].astype(bool)
    return [
        (outputs["cls"][i], outputs["token_ids"][i][mask[i]].astype(np.int64), outputs["embeddings"][i][mask[i]])
        for i in range(len(mask))
    ]


def padded_rows(encoded: CoilVectors, start: int, stop: int) -> dict[str, np.ndarray]:
    """Texts `start:stop` as batch tensors (the inverse of `collect_rows`): cls vectors, and the scored token
    vectors and ids left-aligned with their mask."""
    lengths = encoded.lengths[start:stop]
    valid = np.arange(max(int(lengths.max(initial=0)), 1)) < lengths[:, None]
    span = slice(int(encoded.offsets[start]), int(encoded.offsets[stop]))
    vectors = np.zeros((*valid.shape, encoded.vectors.shape[1]), np.float32)
    vectors[valid] = encoded.vectors[span]
    token_ids = np.zeros(valid.shape, np.int64)
    token_ids[valid] = encoded.token_ids[span]
    return {"cls": encoded.cls[start:stop], "embeddings": vectors, "token_ids": token_ids, "scoring_mask": valid}
