"""`Reranker`: candidates of queries → new scores, over any engine and model family; `Pipeline`: a
`Retriever`'s top candidates re-ranked.

Cross-encoders score every (query, candidate) pair in one `score_pairs` call (a listwise model's groups
are the queries). Bi-encoders re-rank too: each distinct query and candidate text is encoded once, then
scored by the family's rule: the dot product of vectors (cosine models export L2-normalized vectors),
MaxSim late interaction with the model's aggregation, the sparse dot product or COIL's matched tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lir.clients.engine import PAIR_TOKENS, Engine
from lir.clients.retriever import Retriever
from lir.coil import CoilVectors, coil_scores
from lir.errors import LirError
from lir.trec import Run
from lir.vectors import Encoded, MultiVectors, SparseVectors, maxsim, sparse_dot


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score, best first (ties by doc id, as TREC run files rank)."""
    return [did for did, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def family_scores(
    queries: Encoded, row: int, docs: Encoded, rows: np.ndarray, aggregations: tuple[str | None, str | None]
) -> np.ndarray:
    """Scores of query `row` of `queries` against the documents `rows` of `docs` by their family's rule (a
    multi-vector model's `aggregations` over query and document tokens)."""
    if isinstance(queries, MultiVectors):
        candidates = MultiVectors.from_list([docs[i] for i in rows], docs.vectors.shape[1])
        return maxsim(queries[row], candidates, *aggregations)
    if isinstance(queries, SparseVectors):
        return sparse_dot(queries.row(row), docs.take(rows))
    return docs[rows] @ queries[row]


class Reranker:
    """Re-ranks candidate texts of queries with an engine of any family (embedded or Triton); `batch_size` texts
    or pairs per batch, `max_tokens` padded tokens per batch of pairs (cross-encoders)."""

    def __init__(
        self, engine: Engine, batch_size: int = 32, max_tokens: int | None = PAIR_TOKENS, progress: bool = False
    ) -> None:
        self.engine = engine
        self.batch_size, self.max_tokens, self.progress = batch_size, max_tokens, progress

    def rerank(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        """Scores of `query` against each candidate text: float32 [len(candidates)] in input order."""
        return self.score_lists([query], [list(candidates)])[0]

    def rerank_run(
        self,
        queries: Mapping[str, str],
        candidates: Mapping[str, Sequence[tuple[str, str]]],
        depth: int | None = None,
    ) -> Run:
        """query_id → {doc_id: new score} for the first `depth` (default: all) candidates (doc_id, text) of
        each query; every query of `candidates` needs its text in `queries`."""
        missing = [qid for qid in candidates if qid not in queries]
        if missing:
            raise LirError(f"{len(missing)} queries of the candidates have no text (e.g. query {missing[0]!r})")
        kept = {qid: list(found)[:depth] for qid, found in candidates.items()}
        kept = {qid: found for qid, found in kept.items() if found}
        scores = self.score_lists(
            [queries[qid] for qid in kept], [[text for _, text in found] for found in kept.values()]
        )
        return {
            qid: {did: float(score) for (did, _), score in zip(found, row, strict=True)}
            for (qid, found), row in zip(kept.items(), scores, strict=True)
        }

    def score_lists(self, queries: Sequence[str], lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Scores of each query against its own list of texts, batched across all queries and texts."""
        if not lists:
            return []
        if self.engine.family == "cross-encoder":
            sizes = [len(texts) for texts in lists]
            flat = self.engine.score_pairs(
                [query for query, size in zip(queries, sizes, strict=True) for _ in range(size)],
                [text for texts in lists for text in texts],
                groups=np.repeat(np.arange(len(sizes)), sizes),
                batch_size=self.batch_size,
                max_tokens=self.max_tokens,
                progress=self.progress,
            )
            return np.split(flat, np.cumsum(sizes)[:-1])
        distinct: dict[str, int] = {}
        rows = [np.array([distinct.setdefault(text, len(distinct)) for text in texts], np.int64) for texts in lists]
        options = {"batch_size": self.batch_size, "progress": self.progress}
        encoded_queries = self.engine.encode_queries(list(queries), **options)
        encoded_docs = self.engine.encode_docs(list(distinct), **options)
        aggregations = self.engine.aggregation, self.engine.doc_aggregation
        if isinstance(encoded_queries, CoilVectors):
            return [
                coil_scores(encoded_queries.take([i]), encoded_docs.take(r), *aggregations)[0]
                for i, r in enumerate(rows)
            ]
        return [family_scores(encoded_queries, i, encoded_docs, r, aggregations) for i, r in enumerate(rows)]


class Pipeline:
    """First-stage retrieval of `depth` documents per query, re-ranked; `docs` looks up document texts."""

    def __init__(self, retriever: Retriever, reranker: Reranker, docs: Mapping[str, str]) -> None:
        self.retriever, self.reranker, self.docs = retriever, reranker, docs

    def search(self, queries: Mapping[str, str], k: int = 10, depth: int = 100) -> Run:
        """query_id → {doc_id: re-ranking score} of the best `k` of each query's `depth` retrieved documents."""
        first = self.retriever.search(queries, k=depth, batch_size=self.reranker.batch_size)
        candidates = {qid: [(did, self._text(did)) for did in found] for qid, found in first.items()}
        run = self.reranker.rerank_run(queries, candidates)
        return {qid: {did: scores[did] for did in ranked(scores)[:k]} for qid, scores in run.items()}

    def _text(self, doc_id: str) -> str:
        try:
            return self.docs[doc_id]
        except KeyError:
            raise LirError(f"document {doc_id!r} of the first-stage results has no text") from None
