"""`TritonRetriever`: retrieval by a search model of a Triton server (`lir-serve --index`), one call per batch
of queries: the server encodes, searches (and re-ranks) with the engine that built the index.

Its `search` returns what `Retriever.search` returns; `timings` holds the stage times of the last call: the
server's milliseconds per stage (`encode_ms`, `search_ms`, `rerank_ms` when the model re-ranks; each request's
batch, summed over the call's requests) and the whole call as seen here (`total_ms`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from lir.clients.triton_engine import TritonConnection
from lir.errors import LirError
from lir.tokenization import as_text
from lir.trec import Run


class TritonRetriever:
    """The search model `model` (e.g. `scifact-minilm.search`) of the Triton server at `url`."""

    def __init__(
        self, url: str, model: str, protocol: str = "grpc", timeout: float = 60.0, concurrency: int = 4
    ) -> None:
        self.connection = TritonConnection(url, protocol, timeout, concurrency)
        parameters = self.connection.parameters(model)
        if "index" not in parameters or "timings" not in parameters:
            raise LirError(f"model {model!r} on {url} is not a search model of lir (lir-serve --index)")
        self.model, self.stages = model, parameters["timings"].split(",")
        self.timings: dict[str, float] = {}

    def search(self, queries: Mapping[str, str], k: int = 100, batch_size: int = 32) -> Run:
        """query_id → {doc_id: score} for the top `k` documents of each query, `batch_size` queries a request."""
        start = time.perf_counter()
        query_ids = list(queries)
        texts = [as_text(queries[qid], i, "query").encode("utf-8") for i, qid in enumerate(query_ids)]
        starts = list(range(0, len(texts), batch_size))

        def send(first: int) -> dict[str, np.ndarray]:
            rows = np.array(texts[first : first + batch_size], dtype=object).reshape(-1, 1)
            inputs = {"QUERY": rows, "K": np.full((len(rows), 1), k, np.int32)}
            return self.connection.infer(self.model, inputs, ["DOC_IDS", "SCORES", "TIMINGS_MS"])

        parts = self.connection.parallel(send, starts)
        run: Run = {}
        spent = np.zeros(len(self.stages))
        for first, found in zip(starts, parts, strict=True):
            spent += found["TIMINGS_MS"][0]
            for qid, doc_ids, scores in zip(query_ids[first:], found["DOC_IDS"], found["SCORES"], strict=False):
                run[qid] = {did.decode("utf-8"): float(s) for did, s in zip(doc_ids, scores, strict=True) if did}
        stages = {f"{stage}_ms": float(ms) for stage, ms in zip(self.stages, spent, strict=True)}
        self.timings = stages | {"total_ms": 1000 * (time.perf_counter() - start)}
        return run

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> TritonRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
