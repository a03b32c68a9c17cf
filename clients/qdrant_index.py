"""Qdrant as the store of any bi-encoder index: embedded (qdrant-edge-py) in a lir index folder, or a collection
on a Qdrant cluster (qdrant-client), each holding the family's native vector type.

- single-vector: a dense vector with dot product, indexed by HNSW (`hnsw_m`, `ef_construct`), optionally
  with scalar int8 quantization (`int8`), searched on the int8 codes and re-scored on the float32 vectors;
- multi-vector: a multivector with Qdrant's MaxSim comparator over dot products (the sum over query tokens
  of each one's best document token; a `mean` model's scores divided by the query's length). By default
  without an HNSW graph (`hnsw_m=0`, as Qdrant advises for multivectors): every document is scored, exactly;
- sparse: a Qdrant sparse vector (its inverted index, exact dot products); no build parameters.

Spec (`lir index --factory`): `qdrant` or `qdrant,hnsw_m=16,ef_construct=100,full_scan_threshold=10000,
indexing_threshold=10000,int8` (thresholds in KB of vectors, Qdrant's own: a segment below
`indexing_threshold` gets no HNSW graph, one below `full_scan_threshold` is scanned; Qdrant's defaults, so a
small corpus is searched exactly). Search parameters (`--search-params`): `hnsw_ef=…`, `exact=true`,
`rescore=false`, `oversampling=3` (int8: by default the best 2k by the int8 codes are re-scored on the
float32 vectors). Documents without a vector (no scored token, no nonzero weight) are stored without one
and never returned.

Targets: a folder (the embedded store: `qdrant/`, Qdrant Edge's shard; `doc_ids.json`; `index.json` with
the SHA-256 of every shard file but `qdrant/edge_config.json`, which Qdrant rewrites on each load; the
shard's configuration is recorded in index.json), `qdrant://HOST[:PORT]/COLLECTION` (a Qdrant server or
cluster over REST, port 6333 by default; `qdrant+https://` over TLS; an API key from `QDRANT_API_KEY`), or
`qdrant+local://PATH/COLLECTION` (qdrant-client's local mode, a brute-force stand-in for a server used by
the tests: no HNSW, no quantization). A collection is written as `COLLECTION-lir-<hex>` and published by
pointing the alias COLLECTION at it in one request (an older one is then deleted); it holds each document's
id in its payload (`doc_id`) and index.json's content in its metadata (`lir`).

Why a library: Qdrant is a maintained vector database with sharding and replication, its engine runs
in-process through qdrant-edge-py (numpy only: the clients stay torch-free) and is what a cluster runs.
Both packages are the optional extra `lir[qdrant]`, imported only when a Qdrant index is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from lir.clients.indexes import (
    IDS_FILE,
    INFO_FILE,
    QDRANT_SCHEMES,
    check_doc_ids,
    check_offsets,
    is_index,
    parse_parameters,
    positive_int,
    read_doc_ids,
    read_index_info,
    write_doc_ids,
)
from lir.clients.sparse_index import check_sparse_docs, check_sparse_queries, query_terms
from lir.errors import LirError
from lir.files import FolderSwap, atomic_write_text, json_checksum, sha256_file, split_target
from lir.vectors import Encoded, MultiVectors, SparseVectors

FORMAT = "lir-qdrant-index"
SHARD_DIR, EDGE_CONFIG = "qdrant", "edge_config.json"
VECTOR_NAME = {"single-vector": "dense", "multi-vector": "multi", "sparse": "sparse"}
DEFAULT_PORT = 6333
BUILD_DEFAULTS: dict[str, int] = {"hnsw_m": 16, "ef_construct": 100, "full_scan_threshold": 10000}
INDEXING_THRESHOLD = 10000  # KB, Qdrant's default
INT8_QUANTILE = 0.99
INT8_SEARCH_DEFAULTS = {"rescore": True, "oversampling": 2.0}  # recall@10 0.83 → 0.98 on 32-d data (tests)
UPSERT_POINTS = 256  # points per update request
CHECK_ROWS = 1 << 16
Vector = list[float] | list[list[float]] | tuple[list[int], list[float]]


def is_qdrant_url(target: object) -> bool:
    """Whether an index target names a Qdrant collection rather than a folder."""
    return isinstance(target, str) and target.startswith(QDRANT_SCHEMES)


def target_spec(output: str | Path, spec: str | None) -> str | None:
    """The index spec for an output: a Qdrant collection is written by `qdrant` specs only (the default there)."""
    if not is_qdrant_url(str(output)):
        return spec
    if spec is not None and spec.split(",")[0].strip() != "qdrant":
        raise LirError(f"{output} is a Qdrant collection: it holds a qdrant index spec, not {spec!r}")
    return spec or "qdrant"


def parse_spec(spec: str, family: str) -> dict[str, Any]:
    """`qdrant` or `qdrant,hnsw_m=16,ef_construct=100,int8` → the build parameters for `family`."""
    head, _, rest = spec.partition(",")
    if head.strip() != "qdrant":
        raise LirError(f"{spec!r} is not a Qdrant index spec (qdrant, or qdrant,hnsw_m=16,ef_construct=100,int8)")
    if family not in VECTOR_NAME:
        raise LirError(f"Qdrant holds single-vector, multi-vector and sparse indexes, not {family}")
    parts = [p.strip() for p in rest.split(",")]
    int8 = "int8" in parts
    params = parse_parameters(",".join(p for p in parts if p != "int8"))
    if family == "sparse" and (params or int8):
        raise LirError(f"{spec!r}: a Qdrant sparse index has no build parameters (spec: qdrant)")
    known = (*BUILD_DEFAULTS, "indexing_threshold")
    built: dict[str, Any] = dict(BUILD_DEFAULTS) | {"indexing_threshold": INDEXING_THRESHOLD}
    if family == "multi-vector":
        built["hnsw_m"] = 0
    for name, value in params.items():
        if name not in known:
            raise LirError(f"{name!r} is not a Qdrant build parameter ({', '.join(known)}, int8)")
        built[name] = _count(name, value)
    if built["ef_construct"] < 4:
        raise LirError("Qdrant build parameter ef_construct must be at least 4")
    return {} if family == "sparse" else built | {"int8": int8}


def _count(name: str, value: str) -> int:
    """A nonnegative integer parameter (0 disables the HNSW graph, or indexing)."""
    if not value.isdigit():
        raise LirError(f"Qdrant parameter {name} must be a nonnegative integer, not {value!r}")
    return int(value)


def family_of(vectors: Encoded) -> str:
    """The family whose encodings these are (COIL's are not Qdrant's)."""
    if isinstance(vectors, MultiVectors):
        return "multi-vector"
    if isinstance(vectors, SparseVectors):
        return "sparse"
    if isinstance(vectors, np.ndarray):
        return "single-vector"
    raise LirError(f"Qdrant cannot index {type(vectors).__name__} (single-vector, multi-vector or sparse only)")


def rows_of(vectors: Encoded, family: str) -> tuple[int, int, Any]:
    """(count, dim, row(i) → the native vector of row i or None), refused in one line when malformed."""
    if family == "single-vector":
        array = np.asarray(vectors)
        if array.ndim != 2 or array.shape[1] < 1 or array.dtype.kind != "f":
            raise LirError(f"embeddings must be a [N, D] float array, not {array.dtype} of shape {array.shape}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        check_finite(array, "embeddings")
        return len(array), int(array.shape[1]), lambda i: array[i].tolist()
    if family == "multi-vector":
        tokens = np.asarray(vectors.vectors)
        if tokens.ndim != 2 or tokens.shape[1] < 1 or tokens.dtype.kind != "f":
            raise LirError(f"token vectors must be a [T, D] float array, not of shape {tokens.shape}")
        offsets = check_offsets(vectors.offsets, len(tokens), "token")
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
        check_finite(tokens, "token vectors")

        def tokens_of(i: int) -> list[list[float]] | None:
            return tokens[offsets[i] : offsets[i + 1]].tolist() if offsets[i + 1] > offsets[i] else None

        return len(offsets) - 1, int(tokens.shape[1]), tokens_of
    term_ids, weights, offsets, dim = check_sparse_docs(vectors)

    def terms_of(i: int) -> tuple[list[int], list[float]] | None:
        terms, values = term_ids[offsets[i] : offsets[i + 1]], weights[offsets[i] : offsets[i + 1]]
        keep = values != 0
        terms, inverse = np.unique(terms[keep], return_inverse=True)  # a repeated term's weights summed
        values = np.bincount(inverse, weights=values[keep], minlength=len(terms))
        return (terms.tolist(), values.astype(np.float32).tolist()) if len(terms) else None

    return len(offsets) - 1, dim, terms_of


def check_finite(array: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite values, reading a (memory-mapped) array in chunks."""
    for start in range(0, len(array), CHECK_ROWS):
        if not np.isfinite(array[start : start + CHECK_ROWS]).all():
            raise LirError(f"{what} hold NaN or infinite values")


def query_rows(queries: Encoded, family: str, dim: int) -> list[Vector | None]:
    """Each query's native vector (None: no token or term, it finds nothing)."""
    if family == "sparse":
        if not isinstance(queries, SparseVectors):
            raise LirError(f"a sparse Qdrant index is searched with sparse queries, not {type(queries).__name__}")
        qterms, qweights, qoffsets = check_sparse_queries(queries, dim)
        rows: list[Vector | None] = []
        for q in range(len(qoffsets) - 1):
            terms, weights = query_terms(qterms[qoffsets[q] : qoffsets[q + 1]], qweights[qoffsets[q] : qoffsets[q + 1]])
            keep = weights != 0
            rows.append((terms[keep].tolist(), weights[keep].tolist()) if keep.any() else None)
        return rows
    if family == "multi-vector":
        if not isinstance(queries, MultiVectors):
            raise LirError(f"a multi-vector Qdrant index is searched with token vectors, not {type(queries).__name__}")
        tokens = np.asarray(queries.vectors)
        if tokens.ndim != 2 or tokens.shape[1] != dim:
            raise LirError(f"query token vectors of shape {tokens.shape} do not fit an index of dim {dim}")
        offsets = check_offsets(queries.offsets, len(tokens), "query token")
        tokens = tokens.astype(np.float32, copy=False)
        return [tokens[a:b].tolist() if b > a else None for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    array = np.asarray(queries)
    if array.ndim != 2 or array.shape[1] != dim:
        raise LirError(f"query embeddings of shape {array.shape} do not fit an index of dim {dim}")
    return [row.tolist() for row in array.astype(np.float32, copy=False)]


def search_params(api: Any, params: dict[str, Any]) -> Any:
    """The SearchParams of the search parameters (hnsw_ef, exact, rescore, oversampling) in `api`: the
    qdrant-edge-py module or qdrant-client's models, which name them alike."""
    quantization = None
    if "rescore" in params or "oversampling" in params:
        quantization = api.QuantizationSearchParams(
            rescore=params.get("rescore"), oversampling=params.get("oversampling")
        )
    return api.SearchParams(hnsw_ef=params.get("hnsw_ef"), exact=params.get("exact", False), quantization=quantization)


class EdgeStore:
    """An embedded Qdrant Edge shard; hits are mapped to doc ids by row (the point id)."""

    def __init__(self, shard: Any, doc_ids: list[str]) -> None:
        self.shard = shard
        self.doc_ids = doc_ids

    @classmethod
    def create(cls, path: Path, info: dict[str, Any], doc_ids: list[str]) -> EdgeStore:
        q = _edge()
        name, params = VECTOR_NAME[info["family"]], info["build_parameters"]
        optimizers = None
        if info["family"] == "sparse":
            config = q.EdgeConfig(sparse_vectors={name: q.EdgeSparseVectorParams()}, wal_enabled=False)
        else:
            hnsw = q.HnswIndexConfig(
                m=params["hnsw_m"],
                ef_construct=params["ef_construct"],
                full_scan_threshold=params["full_scan_threshold"],
            )
            quantization = None
            if params["int8"]:
                quantization = q.ScalarQuantizationConfig(
                    type=q.ScalarType.Int8, quantile=INT8_QUANTILE, always_ram=True
                )
            multi = None
            if info["family"] == "multi-vector":
                multi = q.MultiVectorConfig(q.MultiVectorComparator.MaxSim)
            vector = q.EdgeVectorParams(
                size=info["dim"],
                distance=q.Distance.Dot,
                multivector_config=multi,
                hnsw_config=hnsw,
                quantization_config=quantization,
            )
            optimizers = q.EdgeOptimizersConfig(indexing_threshold=params["indexing_threshold"])
            config = q.EdgeConfig(vectors={name: vector}, optimizers=optimizers, wal_enabled=False)
        return cls(
            _call(lambda: q.EdgeShard.create(str(path), config), f"cannot create a Qdrant shard in {path}"), doc_ids
        )

    @classmethod
    def open(cls, path: Path, doc_ids: list[str]) -> EdgeStore:
        q = _edge()
        return cls(_call(lambda: q.EdgeShard.load(str(path)), f"{path} cannot be read by Qdrant Edge"), doc_ids)

    def upsert(self, name: str, rows: list[tuple[int, Vector | None, str]]) -> None:
        q = _edge()
        points = [q.Point(row, {} if v is None else {name: _edge_vector(v)}) for row, v, _ in rows]
        _call(lambda: self.shard.update(q.UpdateOperation.upsert_points(points)), "Qdrant refused the documents")

    def finish(self) -> None:
        """Build the HNSW graphs and quantized codes of full segments, write everything, close."""
        _call(self.shard.optimize, "Qdrant could not optimize the shard")
        self.shard.flush()
        self.shard.close()

    def count(self) -> int:
        return int(self.shard.info().points_count)

    def search(self, name: str, rows: list[Vector], k: int, params: dict[str, Any]) -> list[list[tuple[str, float]]]:
        q = _edge()
        search = search_params(q, params)
        requests = [
            q.QueryRequest(limit=k, query=q.Query.Nearest(_edge_vector(v), using=name), params=search) for v in rows
        ]
        found = _call(lambda: self.shard.query_batch(q.QueryBatchRequest(requests)), "Qdrant search failed")
        return [[(self.doc_ids[int(p.id)], float(p.score)) for p in hits] for hits in found]

    def close(self) -> None:
        self.shard.close()


class ClientStore:
    """A collection on a Qdrant server (or in qdrant-client's local mode); doc ids come from the payload."""

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.collection = collection

    def upsert(self, name: str, rows: list[tuple[int, Vector | None, str]]) -> None:
        m = _models()
        points = [
            m.PointStruct(id=row, vector={} if v is None else {name: _client_vector(v)}, payload={"doc_id": doc_id})
            for row, v, doc_id in rows
        ]
        _call(lambda: self.client.upsert(self.collection, points=points, wait=True), "Qdrant refused the documents")

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def search(self, name: str, rows: list[Vector], k: int, params: dict[str, Any]) -> list[list[tuple[str, float]]]:
        m = _models()
        search = search_params(m, params)
        requests = [
            m.QueryRequest(query=_client_vector(v), using=name, limit=k, params=search, with_payload=["doc_id"])
            for v in rows
        ]
        found = _call(lambda: self.client.query_batch_points(self.collection, requests), "Qdrant search failed")
        return [[(str(p.payload["doc_id"]), float(p.score)) for p in hits.points] for hits in found]

    def close(self) -> None:
        self.client.close()


class QdrantIndex:
    """Documents of one bi-encoder family in a Qdrant store: built from encodings (then saved to a folder or a
    collection), or opened from either."""

    FORMAT: ClassVar[str] = FORMAT

    def __init__(self, info: dict[str, Any], store: EdgeStore | ClientStore | None = None, rows: Any = None) -> None:
        self.info = info
        self.store = store
        self.rows = rows  # row(i) → vector of a built, unsaved index
        self.doc_ids: list[str] = []
        self.progress = False
        self.temporary: Path | None = None  # the shard of a built index searched before it is saved
        int8 = info.get("build_parameters", {}).get("int8")
        self.search_parameters: dict[str, Any] = dict(INT8_SEARCH_DEFAULTS) if int8 else {}

    @classmethod
    def build(
        cls,
        docs: Encoded,
        doc_ids: list[str],
        spec: str = "qdrant",
        model: dict | None = None,
        aggregation: str = "sum",
        doc_aggregation: str = "max",
        progress: bool = False,
    ) -> QdrantIndex:
        """An index of `docs` (rows in the order of `doc_ids`), written when saved (or first searched); a
        multi-vector model must score by MaxSim (`doc_aggregation` max) summed or averaged over query tokens."""
        family = family_of(docs)
        params = parse_spec(spec, family)
        if aggregation not in ("sum", "mean") or doc_aggregation != "max":
            raise LirError(
                f"Qdrant scores by MaxSim summed over query tokens: not a model that aggregates "
                f"{doc_aggregation!r} over document tokens and {aggregation!r} over query tokens"
            )
        count, dim, row = rows_of(docs, family)
        doc_ids = check_doc_ids(doc_ids, count, "documents")
        info = {
            "format": FORMAT,
            "version": 1,
            "spec": spec,
            "family": family,
            "metric": {"single-vector": "dot", "multi-vector": "maxsim", "sparse": "dot"}[family],
            "aggregation": aggregation,
            "dim": dim,
            "count": count,
            "build_parameters": params,
            "qdrant_edge_py": _version("qdrant-edge-py"),
            "model": model or {},
        }
        index = cls(info, rows=row)
        index.doc_ids = doc_ids
        index.progress = progress
        return index

    # ---------------------------------------------------------------- search

    def set_search_parameters(self, spec: str) -> None:
        """E.g. `hnsw_ef=128`, `exact=true` (every vector scored), `rescore=false,oversampling=2` (int8)."""
        for name, value in parse_parameters(spec).items():
            if name == "hnsw_ef":
                self.search_parameters[name] = positive_int(name, value)
            elif name in ("exact", "rescore"):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise LirError(f"search parameter {name} must be true or false, not {value!r}")
                self.search_parameters[name] = value.lower() in ("true", "1")
            elif name == "oversampling":
                try:
                    number = float(value)
                except ValueError:
                    number = 0.0
                if not 1 <= number < float("inf"):
                    raise LirError(f"search parameter oversampling must be a number of at least 1, not {value!r}")
                self.search_parameters[name] = number
            else:
                raise LirError(f"{name!r} is not a Qdrant search parameter (hnsw_ef, exact, rescore, oversampling)")

    def search(self, queries: Encoded, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [Q, k'] (k' = min(k, count)) and doc ids per query, best first; a query that finds
        fewer (a sparse query sharing no term with k documents) has a shorter ids list, its scores padded
        with -inf."""
        family = self.info["family"]
        rows = query_rows(queries, family, self.info["dim"])
        k = max(min(int(k), self.info["count"]), 0)
        scores = np.full((len(rows), k), -np.inf, np.float32)
        ids: list[list[str]] = [[] for _ in rows]
        asked = [i for i, row in enumerate(rows) if row is not None]
        if k == 0 or not asked:
            return scores, ids
        found = self._store().search(VECTOR_NAME[family], [rows[i] for i in asked], k, self.search_parameters)
        for i, hits in zip(asked, found, strict=True):
            divide = len(rows[i]) if family == "multi-vector" and self.info["aggregation"] == "mean" else 1
            scores[i, : len(hits)] = [score / divide for _, score in hits]
            ids[i] = [doc_id for doc_id, _ in hits]
        return scores, ids

    def _store(self) -> EdgeStore | ClientStore:
        """The store searched; a built, unsaved index is first written to a temporary shard."""
        if self.store is None:
            folder = Path(tempfile.mkdtemp(prefix="lir-qdrant-"))
            weakref.finalize(self, shutil.rmtree, folder, True)
            self._write_shard(folder / SHARD_DIR)
            self.store, self.temporary = EdgeStore.open(folder / SHARD_DIR, self.doc_ids), folder / SHARD_DIR
        return self.store

    # ---------------------------------------------------------------- files and collections

    def _points(self) -> Iterator[list[tuple[int, Vector | None, str]]]:
        """Batches of (row, vector, doc id) of a built index, with progress."""
        if self.rows is None:
            raise LirError("an opened Qdrant index cannot be saved again: build it from the corpus")
        count = self.info["count"]
        with tqdm(total=count, desc="qdrant upsert", unit="doc", disable=not self.progress) as bar:
            for first in range(0, count, UPSERT_POINTS):
                last = min(first + UPSERT_POINTS, count)
                yield [(i, self.rows(i), self.doc_ids[i]) for i in range(first, last)]
                bar.update(last - first)

    def _write_shard(self, path: Path) -> None:
        """A new shard of the documents, loaded once: the first load compacts a journal, later ones change
        nothing but edge_config.json (so the checksums hold)."""
        store = EdgeStore.create(path, self.info, self.doc_ids)
        try:
            for batch in self._points():
                store.upsert(VECTOR_NAME[self.info["family"]], batch)
        finally:
            store.finish()
        EdgeStore.open(path, self.doc_ids).close()

    def save(self, target: str | Path, overwrite: bool = False) -> str | Path:
        """Write a built index to a folder (atomically, with checksums) or to a Qdrant collection."""
        if is_qdrant_url(target):
            return self._save_collection(str(target), overwrite)
        parent, name = split_target(target, "an index")
        with FolderSwap(parent, overwrite) as swap:
            staging = swap.stage(name, is_index, "an index")
            if self.temporary is not None:  # searched before: that shard is saved (an HNSW build is not repeatable)
                self.store.close()
                shutil.copytree(self.temporary, staging / SHARD_DIR)
                self.store = EdgeStore.open(self.temporary, self.doc_ids)
            else:
                self._write_shard(staging / SHARD_DIR)
            write_doc_ids(self.doc_ids)(staging / IDS_FILE)
            files = [IDS_FILE, *shard_files(staging)]
            record = self.info | {"shard_files": files[1:], "sha256": {f: sha256_file(staging / f) for f in files}}
            text = json.dumps(record | {"checksum": json_checksum(record)}, indent=2) + "\n"
            atomic_write_text(staging / INFO_FILE, text)
        return Path(target)

    def _save_collection(self, url: str, overwrite: bool) -> str:
        client, alias = connect(url)
        try:
            old = check_collection_target(client, alias, overwrite)
            m = _models()
            physical = f"{alias}-lir-{os.urandom(4).hex()}"
            create_collection(client, physical, self.info)
            try:
                for batch in self._points():
                    ClientStore(client, physical).upsert(VECTOR_NAME[self.info["family"]], batch)
                swap = [m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=physical, alias_name=alias))]
                if old is not None:
                    swap.insert(0, m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
                _call(lambda: client.update_collection_aliases(swap), f"cannot point the alias {alias} at {physical}")
            except BaseException:
                with contextlib.suppress(Exception):  # the first error is the one to report
                    client.delete_collection(physical)
                raise
            if old is not None:
                client.delete_collection(old)
        finally:
            client.close()
        return url

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> QdrantIndex:
        """Open an index folder or a collection URL; with `verify`, a shard file that does not match its
        checksum is refused before Qdrant reads it."""
        if is_qdrant_url(directory):
            return cls.connect(str(directory))
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, lambda info: [IDS_FILE, *info.get("shard_files", [])], verify=verify)
        if info.get("family") not in VECTOR_NAME or info.get("aggregation") not in ("sum", "mean"):
            raise LirError(
                f"{folder}: unknown family {info.get('family')!r} or aggregation {info.get('aggregation')!r}"
            )
        doc_ids = read_doc_ids(folder, int(info.get("count", -1)))
        store = EdgeStore.open(folder / SHARD_DIR, doc_ids)
        if store.count() != len(doc_ids):
            store.close()
            raise LirError(f"{folder}: the Qdrant shard holds {store.count()} points for {len(doc_ids)} doc ids")
        index = cls(info, store)
        index.doc_ids = doc_ids
        return index

    @classmethod
    def connect(cls, url: str) -> QdrantIndex:
        """The collection (or alias) a URL names, refused unless lir wrote it and its record is intact."""
        client, name = connect(url)
        try:
            info = collection_info(client, name)
            if info is None:
                raise LirError(f"{url}: no such collection")
            if info.get("format") != FORMAT:
                raise LirError(f"{url} is not a collection written by lir (its metadata holds no lir index record)")
            store = ClientStore(client, name)
            if store.count() != info.get("count"):
                raise LirError(f"{url} holds {store.count()} points, its record says {info.get('count')}")
        except BaseException:
            client.close()
            raise
        return cls(info, store)


def shard_files(folder: Path) -> list[str]:
    """The shard's files that stay as written (all but the config Qdrant rewrites on load), relative, sorted."""
    shard = folder / SHARD_DIR
    names = [p.relative_to(folder).as_posix() for p in shard.rglob("*") if p.is_file() and not p.is_symlink()]
    return sorted(n for n in names if n != f"{SHARD_DIR}/{EDGE_CONFIG}")


def connect(url: str) -> tuple[Any, str]:
    """(qdrant-client, collection name) for `qdrant[+https]://HOST[:PORT]/NAME` or `qdrant+local://PATH/NAME`."""
    local = url.startswith("qdrant+local://")
    where, _, name = url.split("://", 1)[1].rpartition("/")
    if not where or not name:
        raise LirError(f"{url!r} is not a Qdrant collection (qdrant://HOST:PORT/COLLECTION, qdrant+local://PATH/NAME)")
    QdrantClient = _client()  # noqa: N806
    if local:
        return _call(lambda: QdrantClient(path=where), f"cannot open Qdrant's local store {where}"), name
    host, _, port = where.partition(":")
    if port and not port.isdigit():
        raise LirError(f"{url!r}: the port must be a number")
    https = url.startswith("qdrant+https://")
    api_key = os.environ.get("QDRANT_API_KEY") or None
    return QdrantClient(host=host, port=int(port or DEFAULT_PORT), https=https, api_key=api_key), name


def collection_info(client: Any, name: str) -> dict[str, Any] | None:
    """The lir record of a collection ({} when it has none, None when there is no such collection),
    refused when its checksum does not hold."""
    if not _call(lambda: client.collection_exists(name), f"cannot reach Qdrant for {name}"):
        return None
    record = dict((client.get_collection(name).config.metadata or {}).get("lir") or {})
    checksum = record.pop("checksum", None)
    if record and checksum != json_checksum(record):
        raise LirError(f"the lir record of collection {name} does not match its checksum: edited, rebuild it")
    return record


def check_collection_target(client: Any, alias: str, overwrite: bool) -> str | None:
    """Refuse, before any work, to write where something lir may not replace stands; the collection an
    existing alias of lir's names (replaced with `overwrite`), or None."""
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    if alias in aliases:
        if not overwrite:
            raise LirError(f"collection {alias} already exists (pass --overwrite to replace it)")
        if (collection_info(client, aliases[alias]) or {}).get("format") != FORMAT:
            raise LirError(f"collection {alias} was not written by lir: refusing to replace it")
        return aliases[alias]
    if collection_info(client, alias) is not None:
        raise LirError(f"{alias} is a collection, not an alias lir wrote: refusing to replace it")
    return None


def check_qdrant_output(url: str, overwrite: bool) -> None:
    """Refuse a collection target before any encoding (see `check_collection_target`)."""
    client, name = connect(url)
    try:
        check_collection_target(client, name, overwrite)
    finally:
        client.close()


def create_collection(client: Any, name: str, info: dict[str, Any]) -> None:
    """A new collection for `info`'s family and build parameters, carrying `info` as its metadata."""
    m = _models()
    vector_name, params = VECTOR_NAME[info["family"]], info["build_parameters"]
    record = dict(info)
    metadata = {"lir": record | {"checksum": json_checksum(record)}}
    if info["family"] == "sparse":
        config: dict[str, Any] = {"sparse_vectors_config": {vector_name: m.SparseVectorParams()}}
    else:
        hnsw = m.HnswConfigDiff(
            m=params["hnsw_m"], ef_construct=params["ef_construct"], full_scan_threshold=params["full_scan_threshold"]
        )
        quantization = None
        if params["int8"]:
            scalar = m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=INT8_QUANTILE, always_ram=True)
            quantization = m.ScalarQuantization(scalar=scalar)
        multi = None
        if info["family"] == "multi-vector":
            multi = m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
        vector = m.VectorParams(
            size=info["dim"],
            distance=m.Distance.DOT,
            multivector_config=multi,
            hnsw_config=hnsw,
            quantization_config=quantization,
        )
        optimizers = m.OptimizersConfigDiff(indexing_threshold=params["indexing_threshold"])
        config = {"vectors_config": {vector_name: vector}, "optimizers_config": optimizers}
    _call(lambda: client.create_collection(name, metadata=metadata, **config), f"cannot create collection {name}")


def _edge_vector(vector: Vector) -> Any:
    return _edge().SparseVector(*vector) if isinstance(vector, tuple) else vector


def _client_vector(vector: Vector) -> Any:
    return _models().SparseVector(indices=vector[0], values=vector[1]) if isinstance(vector, tuple) else vector


def _call(action: Any, what: str) -> Any:
    """`action()`, with an error of Qdrant's (a Rust panic, a refused request) as one line."""
    try:
        return action()
    except LirError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise LirError(f"{what} ({detail})") from None


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError:
        raise LirError("a Qdrant index needs qdrant-edge-py: pip install 'lir[qdrant]'") from None
    return qdrant_edge


def _client() -> Any:
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise LirError("a Qdrant collection needs qdrant-client: pip install 'lir[qdrant]'") from None
    return QdrantClient


def _models() -> Any:
    _client()
    from qdrant_client import models

    return models


def _version(package: str) -> str | None:
    try:
        return version(package)
    except Exception:
        return None
