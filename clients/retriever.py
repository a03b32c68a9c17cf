"""`Retriever`: queries → encode → search → ranked results, over any engine and a dense index."""

from __future__ import annotations

from collections.abc import Mapping

from lir.clients.dense_index import DenseIndex
from lir.clients.engine import Engine
from lir.errors import LirError
from lir.trec import Run


class Retriever:
    """Dense retrieval with an engine whose model built the index."""

    def __init__(self, engine: Engine, index: DenseIndex) -> None:
        built_with = index.info.get("model") or {}
        if built_with and built_with != engine.fingerprint:
            raise LirError(
                f"the index was built with model {built_with.get('model')!r} "
                f"({built_with.get('doc_encoder_sha256', '?')[:12]}), the engine runs "
                f"{engine.fingerprint['model']!r} ({engine.fingerprint['doc_encoder_sha256'][:12]})"
            )
        self.engine = engine
        self.index = index

    def search(self, queries: Mapping[str, str], k: int = 100, batch_size: int = 32) -> Run:
        """query_id → {doc_id: score} for the top `k` documents of each query."""
        if not queries:
            return {}
        query_ids = list(queries)
        embeddings = self.engine.encode_queries([queries[q] for q in query_ids], batch_size=batch_size)
        scores, doc_ids = self.index.search(embeddings, k)
        return {
            qid: {did: float(score) for did, score in zip(ids, row, strict=False)}
            for qid, ids, row in zip(query_ids, doc_ids, scores, strict=True)
        }
