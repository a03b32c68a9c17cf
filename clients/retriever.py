"""`Retriever`: queries → encode → search → ranked results, over any engine and the index of its family."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lir.clients.coil_index import CoilIndex
from lir.clients.dense_index import DenseIndex
from lir.clients.engine import Engine
from lir.clients.indexes import check_doc_ids, check_index_output
from lir.clients.multi_vector_index import MultiVectorIndex
from lir.clients.plaid_index import PlaidIndex
from lir.clients.qdrant_index import QdrantIndex, target_spec
from lir.clients.qdrant_index import parse_spec as parse_qdrant_spec
from lir.clients.seismic_index import SeismicIndex
from lir.clients.seismic_index import parse_spec as parse_seismic_spec
from lir.clients.sparse_index import SPECS as SPARSE_SPECS
from lir.clients.sparse_index import SparseIndex
from lir.errors import LirError
from lir.trec import Run
from lir.vectors import Encoded

Index = DenseIndex | MultiVectorIndex | PlaidIndex | SparseIndex | SeismicIndex | CoilIndex | QdrantIndex
INDEX_OF_FAMILY: dict[str, tuple[type, ...]] = {
    "single-vector": (DenseIndex, QdrantIndex),
    "multi-vector": (MultiVectorIndex, PlaidIndex, QdrantIndex),
    "sparse": (SparseIndex, SeismicIndex, QdrantIndex),
    "coil": (CoilIndex,),
}
DEFAULT_SPECS = {"single-vector": "Flat", "multi-vector": "exact", "sparse": "float32", "coil": "exact"}


def build_index(engine: Engine, docs: Encoded, doc_ids: list[str], spec: str | None = None) -> Index:
    """The index of the engine's family over encoded documents; `spec` is the family's index spec string
    (Faiss factory for single-vector; `exact`, `plaid[,nbits=…,vectors=fp16]` or a Faiss factory over token vectors for
    multi-vector; impact precision `float32`/`float16`/`uint8` or `seismic[,build parameters]` for sparse;
    `exact` for coil; `qdrant[,build parameters]` for any but coil)."""
    family = engine.family
    spec = spec or DEFAULT_SPECS[family]
    if spec_head(spec) == "qdrant":
        aggregations = (engine.aggregation, engine.doc_aggregation) if family == "multi-vector" else ("sum", "max")
        return QdrantIndex.build(docs, doc_ids, spec, engine.fingerprint, *aggregations, progress=True)
    if family == "multi-vector" and spec_head(spec) == "plaid":
        if engine.doc_aggregation != "max":
            raise LirError(f"PLAID scores MaxSim: doc aggregation {engine.doc_aggregation!r} needs the exact index")
        return PlaidIndex.build(docs, doc_ids, spec, engine.fingerprint, engine.aggregation, progress=True)
    if family == "multi-vector":
        aggregations = {"aggregation": engine.aggregation, "doc_aggregation": engine.doc_aggregation}
        return MultiVectorIndex.build(docs, doc_ids, spec, engine.fingerprint, progress=True, **aggregations)
    if family == "sparse" and spec_head(spec) == "seismic":
        return SeismicIndex.build(docs, doc_ids, spec, engine.fingerprint, progress=True)
    if family == "sparse":
        return SparseIndex.build(docs, doc_ids, spec, engine.fingerprint, progress=True)
    if family == "coil":
        return CoilIndex.build(docs, doc_ids, spec, engine.fingerprint, engine.aggregation, engine.doc_aggregation)
    return DenseIndex.build(docs, doc_ids, spec, engine.fingerprint)


def spec_head(spec: str) -> str:
    """The engine a spec names: its first comma-separated part (`seismic,n_postings=…` → seismic)."""
    return spec.split(",")[0].strip()


def check_sparse_spec(spec: str | None) -> None:
    """Refuse a sparse index spec before the corpus is encoded (the others are checked by what they build)."""
    if spec is not None and spec_head(spec) == "seismic":
        parse_seismic_spec(spec)
    elif spec is not None and spec_head(spec) == "qdrant":
        parse_qdrant_spec(spec, "sparse")
    elif spec is not None and spec not in SPARSE_SPECS:
        raise LirError(
            f"{spec!r} is not a sparse index spec (float32, float16, uint8, seismic[,name=value...] or qdrant)"
        )


def write_index(
    engine: Engine,
    docs: Sequence[tuple[str, str]],
    output: str | Path,
    built_by: dict[str, str | None],
    spec: str | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
) -> str:
    """Encode `docs` (doc_id, text) with progress, build the index of the engine's family (`spec` as in
    `build_index`), record `built_by` (url, directory, variant) and the doc graph's checksum as its `engine`
    and save it to `output`; returns the summary line (documents, seconds, docs/s).

    The output and the doc ids are checked before encoding. Empty documents (nothing but white space) are
    not indexed: they would all get one identical vector, which outranks real documents for some queries;
    the summary and index.json (`empty_docs_skipped`) count them."""
    check_index_output(output, overwrite)
    spec = target_spec(output, spec)
    if engine.family == "sparse":
        check_sparse_spec(spec)
    check_doc_ids([doc_id for doc_id, _ in docs], len(docs), "documents")
    kept = [(doc_id, text) for doc_id, text in docs if text.strip()]
    skipped = [doc_id for doc_id, text in docs if not text.strip()]
    if not kept:
        raise LirError(f"all {len(docs)} documents are empty: nothing to index")
    start = time.perf_counter()
    encoded = engine.encode_docs([text for _, text in kept], batch_size=batch_size, progress=True)
    seconds = time.perf_counter() - start
    index = build_index(engine, encoded, [doc_id for doc_id, _ in kept], spec)
    index.info["engine"] = built_by | {"doc_graph_sha256": engine.doc_graph_sha256}
    index.info["empty_docs_skipped"] = len(skipped)
    index.save(output, overwrite=overwrite)
    note = f", skipped {len(skipped)} empty (e.g. {skipped[0]!r})" if skipped else ""
    return (
        f"indexed {len(kept)} documents in {seconds:.1f} s ({len(kept) / seconds:.1f} docs/s, "
        f"{built_by['variant']}{note}) → {output}"
    )


def check_model(built_with: object, fingerprint: dict[str, str]) -> None:
    """Refuse to search an index with another model than the one that built it, or one that records none."""
    if not isinstance(built_with, dict) or not all(isinstance(built_with.get(key), str) for key in fingerprint):
        raise LirError("the index records no model that built it: it cannot be searched safely (rebuild it)")
    if built_with != fingerprint:
        raise LirError(
            f"the index was built with model {built_with['model']!r} ({built_with['doc_encoder_sha256'][:12]}), "
            f"the engine runs {fingerprint['model']!r} ({fingerprint['doc_encoder_sha256'][:12]})"
        )


class Retriever:
    """Retrieval with an engine whose model built the index."""

    def __init__(self, engine: Engine, index: Index) -> None:
        check_model(index.info.get("model"), engine.fingerprint)
        if not isinstance(index, INDEX_OF_FAMILY[engine.family]):
            raise LirError(f"a {type(index).__name__} cannot be searched with a {engine.family} model")
        self.engine = engine
        self.index = index

    def search(self, queries: Mapping[str, str], k: int = 100, batch_size: int = 32) -> Run:
        """query_id → {doc_id: score} for the top `k` documents of each query."""
        if not queries:
            return {}
        query_ids = list(queries)
        encoded = self.engine.encode_queries([queries[q] for q in query_ids], batch_size=batch_size)
        scores, doc_ids = self.index.search(encoded, k)
        return {
            qid: {did: float(score) for did, score in zip(ids, row, strict=False)}
            for qid, ids, row in zip(query_ids, doc_ids, scores, strict=True)
        }
