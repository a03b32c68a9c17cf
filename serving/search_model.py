"""Triton python-backend model `<name>.search` (written by `lir-serve --index`): query texts in, the top-k
documents of an index out, optionally re-ranked.

`initialize` opens the index (every file checked against its checksum) and the embedded engine of the
export that built it, in the variant that built it (as `lir search` does); with re-ranking, the embedded
engine of the re-ranking export and the texts of the index's documents. `Retriever` (and `Pipeline`) do the
work, so the results are those of `lir search` (and of `lir rerank` over its top `rerank_depth`). The
requests of a batch are searched together, once per distinct K.

Inputs: QUERY (BYTES, one query per batch item, checked like the text endpoints' texts: strings of valid
UTF-8 within the size limits, and not empty) and K (INT32, optional: default 10, at most `max_k`); a request
that breaks a rule fails alone with INVALID_ARG. Outputs per query: DOC_IDS and SCORES, best first (padded
with empty ids and -inf to the longest row of the request), and TIMINGS_MS, the milliseconds of each stage
(named by the config parameter `timings`: encode, search, rerank) of the batch the request was served in.
The python backend of Triton 2.51 has no response parameters: hence the output tensor. The same times go
to Triton's metrics as the histogram `lir_search_stage_ms` with the labels `model` and `stage`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton python backend stub

from lir.clients.commands import check_doc_graph, index_variant
from lir.clients.indexes import open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.reranker import Pipeline, Reranker
from lir.clients.retriever import Retriever
from lir.collections import read_docs
from lir.errors import LirError
from lir.serving.searches import stages
from lir.serving.triton_models import TextLimits, answer_each, config_parameters, model_config

DEFAULT_K = 10
BUCKETS_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]


class Stopwatch:
    """`target` with the seconds spent in its method `method` added up in `seconds`; every other attribute is
    the target's own."""

    def __init__(self, target: Any, method: str) -> None:
        self._target, self._method, self.seconds = target, method, 0.0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._target, name)
        if name != self._method:
            return found

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return found(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


class SearchModel:
    """Retrieval (and re-ranking) over one index."""

    def initialize(self, args: dict) -> None:
        parameters = config_parameters(model_config(args))
        self.limits = TextLimits.of(args)
        self.max_k = int(parameters["max_k"])
        self.stages = stages(parameters)
        threads = int(os.environ.get("LIR_TRITON_THREADS", "0")) or None
        index = open_index(parameters["index"])
        if parameters.get("search_parameters"):
            index.set_search_parameters(parameters["search_parameters"])
        built_by = index.info.get("engine") or {}
        variant = index_variant(built_by, None)
        engine = OnnxEngine(parameters["export"], variant=variant, threads=threads)
        check_doc_graph(built_by, variant, engine)
        self.encoder = Stopwatch(engine, "encode_queries")
        self.retriever = Retriever(self.encoder, index)
        self.reranker: Stopwatch | None = None
        if "rerank" in parameters:
            self.reranker = Stopwatch(Reranker(OnnxEngine(parameters["rerank"], threads=threads)), "rerank_run")
            self.pipeline = Pipeline(self.retriever, self.reranker, _doc_texts(parameters["docs"], index.doc_ids))
            self.depth = int(parameters["rerank_depth"])
        self.family = pb_utils.MetricFamily(
            name="lir_search_stage_ms",
            description="Milliseconds per batch in each stage of lir's search models",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.metrics = [
            self.family.Metric(labels={"model": args["model_name"], "stage": stage}, buckets=BUCKETS_MS)
            for stage in self.stages
        ]

    def execute(self, requests: list) -> list:
        """Check each request, search the valid ones together (one by one when that fails), answer each."""
        return answer_each(requests, self._queries, self._search)

    def _queries(self, request) -> tuple[list[str], list[int]]:
        """The queries of a request and the K of each, or a LirError that says what is wrong with them."""
        (queries,) = self.limits.texts(request, ("QUERY",))
        for position, query in enumerate(queries):
            if not query.strip():
                raise LirError(f"QUERY #{position} is empty")
        tensor = pb_utils.get_input_tensor_by_name(request, "K")
        if tensor is None:
            return queries, [min(DEFAULT_K, self.max_k)] * len(queries)
        ks = [int(k) for k in tensor.as_numpy().reshape(-1)]
        for position, k in enumerate(ks):
            if not 1 <= k <= self.max_k:
                raise LirError(f"K #{position} is {k}, outside 1 to {self.max_k} (max_k)")
        return queries, ks

    def _search(self, members: Sequence[tuple[list[str], list[int]]]) -> list:
        """One response per request, from one search of all their queries per distinct K."""
        rows = [(query, k) for queries, ks in members for query, k in zip(queries, ks, strict=True)]
        for clock in (self.encoder, self.reranker):
            if clock is not None:
                clock.seconds = 0.0
        start = time.perf_counter()
        found: dict[str, dict[str, float]] = {}
        for k in sorted({k for _, k in rows}):
            queries = {str(row): query for row, (query, wanted) in enumerate(rows) if wanted == k}
            if self.reranker is None:
                found |= self.retriever.search(queries, k=k)
            else:
                found |= self.pipeline.search(queries, k=k, depth=self.depth)
        timings = self._timings(time.perf_counter() - start)
        responses, row = [], 0
        for queries, _ in members:
            responses.append(_response([found.get(str(r), {}) for r in range(row, row + len(queries))], timings))
            row += len(queries)
        return responses

    def _timings(self, seconds: float) -> np.ndarray:
        """Milliseconds per stage of a search that took `seconds`, recorded in the metrics."""
        encode = self.encoder.seconds
        rerank = [self.reranker.seconds] if self.reranker is not None else []
        found = 1000 * np.array([encode, seconds - encode - sum(rerank), *rerank], np.float32)
        for metric, value in zip(self.metrics, found, strict=True):
            metric.observe(float(value))
        return found


def _doc_texts(spec: str, doc_ids: Sequence[str]) -> dict[str, str]:
    """doc_id → text of every document of the index, from the corpus `spec`."""
    texts = read_docs(spec, doc_ids)
    missing = [doc_id for doc_id in doc_ids if doc_id not in texts]
    if missing:
        raise LirError(f"{len(missing)} documents of the index are not in {spec} (e.g. {missing[0]!r})")
    return texts


def _response(runs: list[Mapping[str, float]], timings: np.ndarray):
    """DOC_IDS and SCORES of each query (rows padded to the longest with empty ids and -inf), TIMINGS_MS."""
    width = max((len(run) for run in runs), default=0)
    doc_ids = np.full((len(runs), width), b"", dtype=object)
    scores = np.full((len(runs), width), -np.inf, np.float32)
    for row, run in enumerate(runs):
        doc_ids[row, : len(run)] = [doc_id.encode("utf-8") for doc_id in run]
        scores[row, : len(run)] = list(run.values())
    tensors = [
        pb_utils.Tensor("DOC_IDS", doc_ids),
        pb_utils.Tensor("SCORES", scores),
        pb_utils.Tensor("TIMINGS_MS", np.tile(timings, (len(runs), 1))),
    ]
    return pb_utils.InferenceResponse(tensors)
