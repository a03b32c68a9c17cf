"""PLAID multi-vector (ColBERT) index: each token vector stored as a centroid id and a 2- or 4-bit residual,
searched with PLAID's centroid pruning and centroid interaction, then MaxSim on decompressed vectors.

Build (ColBERTv2): Faiss k-means on a sample of the token vectors gives the centroids; each token keeps the
id of its nearest centroid and its residual (vector - centroid), scaled to norm 1 and quantized per
dimension into 2^nbits buckets: cutoffs and values per dimension learned from a sample's residuals
(ColBERTv2's quantiles, refined by Lloyd's iterations), plus one float16 scale per token that gives the
decompressed residual the norm of the true one. The scale is not ColBERTv2's (its vectors have norm 1):
token vectors of any norm keep their scores (on MiniLM ColBERT tokens, 4-bit MaxSim errors of 0.7%
instead of 9%). Each centroid lists the documents holding one of its tokens (an inverted file), each
document its distinct centroids.

Search (PLAID), per query: its tokens' scores against every centroid (one matmul); the candidates are the
documents of each query token's `ncells` best centroids; they are ranked by centroid interaction (MaxSim
where each document token stands for its centroid's score) over the centroids that score at least
`centroid_score_threshold` for some query token; the best `ndocs` are ranked again with all their
centroids, and the best ndocs / 4 (at least k) are scored by MaxSim on their decompressed vectors (centroid
+ scale x bucket values), aggregated over the query tokens as the exact index does (sum or mean): equal to
exact MaxSim up to the compression error; or, where the index keeps the token vectors (`vectors=fp16`), by
exact MaxSim on them (`rescore=exact`, the default then: on real MiniLM ColBERT tokens of SciFact, whose
top-10 scores lie close together, 2-bit scores keep only 0.87 of the exact top 10 even among the exact top
100). Documents without tokens score 0, as in exact search; so does every document for a query without
tokens.

The spec: `plaid` (the defaults) or `plaid,nbits=4,centroids=16384,vectors=fp16`: `nbits` 2 (default,
ColBERTv2's and PLAID's) or 4 bits per dimension; `centroids` defaults to ColBERTv2's 2^floor(log2(16
sqrt(T))) for T token vectors (at most T); `vectors=fp16` also keeps the token vectors as float16 (2 bytes
per dimension more) for exact re-scoring (default `none`). Search parameters (`set_search_parameters`, e.g.
`ncells=4,ndocs=1024`): `ncells` (default 4), `ndocs` (default 256; at least 4 k are kept),
`centroid_score_threshold` (a score, -inf to prune nothing; default `auto`: per query, half the median over
its tokens of their best centroid score, about PLAID's 0.45 for unit vectors and scaled like the query's
scores otherwise) and `rescore` (`exact`, needing vectors=fp16, or `decompressed`).

Folder: `centroids.npy` [K, D] float32, `codes.npy` [T] (centroid of each token; uint16, or int32 above
65,536 centroids), `residuals.npy` [T, ceil(D nbits / 8)] uint8 (bucket indices, the first dimension in
the high bits), `scales.npy` [T] float16, `bucket_cutoffs.npy` [D, 2^nbits - 1] and `bucket_weights.npy`
[D, 2^nbits] float32, `offsets.npy` [N + 1] int64 (document i owns tokens offsets[i]:offsets[i + 1]),
`doc_cells.npy` with `doc_cell_offsets.npy` (each document's distinct centroids), `cell_docs.npy` int32
with `cell_offsets.npy` (each centroid's documents), `vectors.npy` [T, D] float16 (vectors=fp16 only),
`doc_ids.json` and `index.json` with the checksums.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before Faiss loads: see lir.clients.indexes

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lir.clients.indexes import (  # noqa: E402
    IDS_FILE,
    check_doc_ids,
    check_offsets,
    load_array,
    parse_parameters,
    positive_int,
    read_doc_ids,
    read_index_info,
    save_index_folder,
    top_k,
    write_array,
    write_doc_ids,
)
from lir.errors import LirError  # noqa: E402
from lir.vectors import MultiVectors  # noqa: E402

FORMAT = "lir-plaid-index"
ARRAYS = {  # file stem → (dtype, rank); codes' dtype follows the number of centroids
    "centroids": (np.float32, 2),
    "codes": (None, 1),
    "residuals": (np.uint8, 2),
    "scales": (np.float16, 1),
    "bucket_cutoffs": (np.float32, 2),
    "bucket_weights": (np.float32, 2),
    "offsets": (np.int64, 1),
    "doc_cells": (None, 1),
    "doc_cell_offsets": (np.int64, 1),
    "cell_docs": (np.int32, 1),
    "cell_offsets": (np.int64, 1),
}
VECTORS = ("vectors", np.float16, 2)  # optional: the token vectors, for exact MaxSim on the survivors
RESCORE = ("exact", "decompressed")
NBITS = (2, 4)
DEFAULT_NBITS, DEFAULT_NCELLS, DEFAULT_NDOCS = 2, 4, 256
KMEANS_ITERATIONS, KMEANS_SEED = 4, 123  # ColBERTv2's
TRAIN_PER_CENTROID, MIN_TRAIN = 32, 1 << 16  # k-means sample: 32 token vectors per centroid, at least 65536
QUANTILE_SAMPLE, LLOYD_ITERATIONS = 1 << 16, 20  # sample tokens whose residuals give the buckets; refinements
THRESHOLD_SHARE = 0.5  # default centroid_score_threshold: this share of the query tokens' median best score
CHUNK = 1 << 16  # token vectors encoded, or decompressed, at once
ARGMAX_CELLS = 16  # a query token's best ncells centroids by repeated argmax up to 16, else by argpartition
HNSW_CENTROIDS, HNSW_NEIGHBORS, HNSW_EF_SEARCH = 8192, 32, 64  # tokens find their centroid by HNSW from 8192 on


def parse_spec(spec: str) -> dict[str, int]:
    """`plaid`, `plaid,nbits=4,centroids=16384,vectors=fp16` → {"nbits": ..., "centroids": ... (0: the
    default), "vectors": whether the token vectors are kept as float16}."""
    head, _, rest = spec.partition(",")
    if head.strip() != "plaid":
        raise LirError(f"{spec!r} is not a PLAID index spec (plaid, plaid,nbits=2, plaid,nbits=4,centroids=16384)")
    try:
        params = parse_parameters(rest)
    except LirError as exc:
        raise LirError(f"{spec!r} is not a PLAID index spec ({exc})") from None
    unknown = sorted(set(params) - {"nbits", "centroids", "vectors"})
    if unknown:
        raise LirError(f"{spec!r}: unknown PLAID option {unknown[0]!r} (nbits, centroids, vectors)")
    nbits = params.get("nbits", str(DEFAULT_NBITS))
    if nbits not in {str(n) for n in NBITS}:
        raise LirError(f"{spec!r}: nbits must be 2 or 4, not {nbits!r}")
    centroids = positive_int("centroids", params["centroids"]) if "centroids" in params else 0
    vectors = params.get("vectors", "none")
    if vectors not in ("none", "fp16"):
        raise LirError(f"{spec!r}: vectors must be fp16 or none, not {vectors!r}")
    return {"nbits": int(nbits), "centroids": centroids, "vectors": vectors == "fp16"}


def default_centroids(tokens: int) -> int:
    """ColBERTv2's number of centroids for `tokens` token vectors, 2^floor(log2(16 sqrt(T))), at most T."""
    if tokens == 0:
        return 0
    return min(2 ** int(math.floor(math.log2(16 * math.sqrt(tokens)))), tokens)


class PlaidIndex:
    """Compressed token vectors of N documents with their doc ids, searched by PLAID (see the module)."""

    FORMAT: ClassVar[str] = FORMAT

    def __init__(self, arrays: dict[str, np.ndarray], doc_ids: list[str], info: dict[str, Any]) -> None:
        self.arrays = arrays
        self.doc_ids = doc_ids
        self.info = info
        self.centroids = arrays["centroids"]
        self.codes, self.residuals, self.scales = arrays["codes"], arrays["residuals"], arrays["scales"]
        self.offsets = arrays["offsets"]
        self.doc_cells, self.doc_cell_offsets = arrays["doc_cells"], arrays["doc_cell_offsets"]
        self.cell_docs, self.cell_offsets = arrays["cell_docs"], arrays["cell_offsets"]
        self.vectors = arrays.get("vectors")  # float16 [T, D] where the spec keeps them (vectors=fp16)
        self._centroids_t = np.ascontiguousarray(self.centroids.T)  # [D, K]: the centroid matmul 12% faster
        self._decode_table = _decode_table(arrays["bucket_weights"], info["nbits"])
        self._byte_base = np.arange(self.residuals.shape[1], dtype=np.intp) * 256
        self._empty = np.flatnonzero(np.diff(self.offsets) == 0)  # documents without tokens: score 0
        self.search_parameters: dict[str, float | None] = {
            "ncells": DEFAULT_NCELLS,
            "ndocs": DEFAULT_NDOCS,
            "centroid_score_threshold": None,  # per query: THRESHOLD_SHARE x its tokens' median best score
            "rescore": "exact" if self.vectors is not None else "decompressed",
        }

    # ---------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        docs: MultiVectors,
        doc_ids: list[str],
        spec: str = "plaid",
        model: dict | None = None,
        aggregation: str = "sum",
        progress: bool = False,
    ) -> PlaidIndex:
        """Index the token vectors of `docs` (in the order of `doc_ids`); see the module for `spec`."""
        options = parse_spec(spec)
        if aggregation not in ("sum", "mean"):
            raise LirError(f"unknown aggregation {aggregation!r} (sum or mean)")
        vectors = docs.vectors
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[1] < 1:
            raise LirError(f"token vectors must be a [T, D] array, not of shape {np.shape(vectors)}")
        if vectors.dtype.kind != "f":
            raise LirError(f"token vectors must be floating point, not {vectors.dtype}")
        offsets = check_offsets(docs.offsets, len(vectors), "token")
        doc_ids = check_doc_ids(doc_ids, len(offsets) - 1, "documents")
        for start in range(0, len(vectors), CHUNK):
            if not np.isfinite(vectors[start : start + CHUNK]).all():
                raise LirError("token vectors hold NaN or infinite values")
        kept = _float16(vectors) if options["vectors"] else None  # refused before the k-means if they overflow
        n_tokens, dim, nbits = len(vectors), int(vectors.shape[1]), options["nbits"]
        n_centroids = min(options["centroids"] or default_centroids(n_tokens), n_tokens)
        centroids, assigner = _train_centroids(vectors, n_centroids, progress)
        sample = _sample(n_tokens, QUANTILE_SAMPLE, seed=1)
        cutoffs, weights = _buckets(np.asarray(vectors[sample], np.float32), centroids, assigner, nbits)
        code_type = np.uint16 if n_centroids <= 1 << 16 else np.int32
        codes = np.empty(n_tokens, code_type)
        residuals = np.empty((n_tokens, -(-dim * nbits // 8)), np.uint8)
        scales = np.empty(n_tokens, np.float16)
        with tqdm(total=n_tokens, desc="compressing tokens", unit="tok", disable=not progress) as bar:
            for start in range(0, n_tokens, CHUNK):
                chunk = np.ascontiguousarray(vectors[start : start + CHUNK], dtype=np.float32)
                stop = start + len(chunk)
                codes[start:stop] = assigner.search(chunk, 1)[1][:, 0]
                buckets, scales[start:stop] = _quantize(chunk - centroids[codes[start:stop]], cutoffs, weights)
                residuals[start:stop] = _pack(buckets, nbits)
                bar.update(len(chunk))
        doc_cells, doc_cell_offsets, cell_docs, cell_offsets = _inverted_file(codes, offsets, n_centroids)
        arrays = {
            "centroids": centroids,
            "codes": codes,
            "residuals": residuals,
            "scales": scales,
            "bucket_cutoffs": cutoffs,
            "bucket_weights": weights,
            "offsets": offsets,
            "doc_cells": doc_cells.astype(code_type),
            "doc_cell_offsets": doc_cell_offsets,
            "cell_docs": cell_docs,
            "cell_offsets": cell_offsets,
        }
        if kept is not None:
            arrays["vectors"] = kept
        info = {
            "format": FORMAT,
            "version": 1,
            "spec": spec,
            "metric": "maxsim",
            "aggregation": aggregation,
            "dim": dim,
            "count": len(doc_ids),
            "tokens": n_tokens,
            "nbits": nbits,
            "centroids": n_centroids,
            "vectors": "fp16" if options["vectors"] else "none",
            "size_bytes": sum(int(a.nbytes) for a in arrays.values()),
            "fp16_bytes": 2 * n_tokens * dim,
            "model": model or {},
        }
        return cls(arrays, doc_ids, info)

    # ---------------------------------------------------------------- search

    def set_search_parameters(self, spec: str) -> None:
        """E.g. `ncells=4,ndocs=4096,centroid_score_threshold=0.45,rescore=exact` (see the module)."""
        params = parse_parameters(spec)
        update: dict[str, float | None] = {}
        for name, value in params.items():
            if name in ("ncells", "ndocs"):
                update[name] = positive_int(name, value)
            elif name == "centroid_score_threshold":
                update[name] = None if value == "auto" else _number(name, value)
            elif name == "rescore":
                if value not in RESCORE:
                    raise LirError(f"search parameter rescore must be exact or decompressed, not {value!r}")
                if value == "exact" and self.vectors is None:
                    raise LirError("rescore=exact needs the token vectors: build the index with vectors=fp16")
                update[name] = value
            else:
                raise LirError(
                    f"{name!r} is not a search parameter of a PLAID index "
                    "(ncells, ndocs, centroid_score_threshold, rescore)"
                )
        self.search_parameters.update(update)

    def search(self, queries: MultiVectors, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [Q, k'] (k' = min(k, count)) and doc ids per query, best first; a query whose
        candidates are fewer than k' has its scores padded with -inf (and a shorter ids list)."""
        qvectors = np.asarray(queries.vectors)
        if qvectors.ndim != 2 or qvectors.shape[1] != self.info["dim"]:
            raise LirError(
                f"query token vectors of shape {qvectors.shape} do not fit an index of dim {self.info['dim']}"
            )
        qoffsets = check_offsets(queries.offsets, len(qvectors), "query token")
        qvectors = np.ascontiguousarray(qvectors, dtype=np.float32)
        k = min(int(k), len(self.doc_ids))
        n_queries = len(qoffsets) - 1
        if n_queries == 0 or k <= 0:
            return np.zeros((n_queries, max(k, 0)), np.float32), [[] for _ in range(n_queries)]
        scores = np.full((n_queries, k), -np.inf, np.float32)
        ids = []
        for i in range(n_queries):
            rows, row_scores = self._search_one(qvectors[qoffsets[i] : qoffsets[i + 1]], k)
            scores[i, : len(rows)] = row_scores
            ids.append([self.doc_ids[r] for r in rows])
        return scores, ids

    def _search_one(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best k documents of one query (rows, float32 scores), by PLAID's stages."""
        if len(query) == 0 or len(self.centroids) == 0:  # every document scores 0, as in exact search
            return np.arange(k), np.zeros(k, np.float32)
        cell_scores = query @ self._centroids_t  # [Lq, K]
        rows = self._docs_of(_best_cells(cell_scores, int(self.search_parameters["ncells"])))
        by_cell = np.ascontiguousarray(cell_scores.T)  # [K, Lq]: a centroid's scores in one cache line or two
        ndocs = max(int(self.search_parameters["ndocs"]), 4 * k)
        threshold = self.search_parameters["centroid_score_threshold"]
        if threshold is None:
            threshold = THRESHOLD_SHARE * float(np.median(cell_scores.max(axis=1)))
        kept = by_cell.max(axis=1) >= threshold
        rows, estimate = self._centroid_interaction(by_cell, rows, kept)
        rows, estimate = self._centroid_interaction(by_cell, np.sort(rows[top_k(estimate, ndocs)]))
        rows = np.sort(rows[top_k(estimate, max(ndocs // 4, k))])
        scores = self._maxsim(query, by_cell, rows, self.search_parameters["rescore"] == "exact")
        if len(self._empty):  # documents without tokens score 0 (ties broken by row, as in exact search)
            rows = np.concatenate([rows, self._empty[:k]])
            scores = np.concatenate([scores, np.zeros(min(k, len(self._empty)), np.float32)])
            order = np.argsort(rows, kind="stable")
            rows, scores = rows[order], scores[order]
        best = top_k(scores, k)
        return rows[best], scores[best]

    def _docs_of(self, cells: np.ndarray) -> np.ndarray:
        """The documents (sorted rows) holding a token of any of `cells`."""
        found = np.zeros(len(self.doc_ids), bool)
        found[np.take(self.cell_docs, _ranges(self.cell_offsets, cells)[0])] = True
        return np.flatnonzero(found)

    def _centroid_interaction(
        self, by_cell: np.ndarray, rows: np.ndarray, kept: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """MaxSim of the documents `rows` with each token replaced by its centroid's scores [K, Lq], over
        the `kept` centroids only where given (documents with none of them are dropped): rows, estimates."""
        if len(rows) == 0:
            return rows, np.zeros(0, np.float32)
        tokens, local = _ranges(self.doc_cell_offsets, rows)
        cells = np.take(self.doc_cells, tokens)
        if kept is not None:
            keep = np.take(kept, cells)
            counts = np.add.reduceat(keep, local[:-1], dtype=np.int64)
            cells, rows, counts = cells[keep], rows[counts > 0], counts[counts > 0]
            local = np.zeros(len(rows) + 1, np.int64)
            np.cumsum(counts, out=local[1:])
        if len(rows) == 0:
            return rows, np.zeros(0, np.float32)
        best = np.maximum.reduceat(np.take(by_cell, cells, axis=0), local[:-1], axis=0)  # [rows, Lq]
        return rows, best.sum(axis=1)

    def _maxsim(self, query: np.ndarray, by_cell: np.ndarray, rows: np.ndarray, exact: bool) -> np.ndarray:
        """MaxSim of the query with the token vectors of `rows` (sorted, each with tokens), aggregated as the
        index says: the stored float16 vectors where `exact`, else the decompressed ones, q . (centroid +
        residual) = centroid score [K, Lq] + q . residual."""
        tokens, local = _ranges(self.offsets, rows)
        scores = np.empty(len(rows), np.float64)
        first = 0
        while first < len(rows):  # bounded memory for many long documents
            last = int(np.searchsorted(local, local[first] + CHUNK, side="right")) - 1
            last = min(max(last, first + 1), len(rows))
            chunk = tokens[local[first] : local[last]]
            if exact:
                sims = np.take(self.vectors, chunk, axis=0).astype(np.float32) @ query.T  # [tokens, Lq]
            else:
                sims = self._decode(np.take(self.residuals, chunk, axis=0)) @ query.T
                sims *= np.take(self.scales, chunk).astype(np.float32)[:, None]
                sims += np.take(by_cell, np.take(self.codes, chunk), axis=0)
            best = np.maximum.reduceat(sims, local[first:last] - local[first], axis=0)  # [rows, Lq]
            scores[first:last] = best.sum(axis=1, dtype=np.float64)
            first = last
        if self.info["aggregation"] == "mean":
            scores /= len(query)
        return scores.astype(np.float32)

    def _decode(self, packed: np.ndarray) -> np.ndarray:
        """Bucket values [n, D] float32 (residuals before their scale) of packed bucket indices [n, B]: one
        table look-up per byte."""
        values = np.take(self._decode_table, packed + self._byte_base, axis=0)  # [n, B, dims per byte]
        return values.reshape(len(packed), -1)[:, : self.info["dim"]]

    # ---------------------------------------------------------------- files

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder atomically: arrays, doc ids, info with checksums."""
        writers = {f"{name}.npy": write_array(array) for name, array in self.arrays.items()}
        writers[IDS_FILE] = write_doc_ids(self.doc_ids)
        return save_index_folder(directory, self.info, writers, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> PlaidIndex:
        """Read an index folder (arrays memory-mapped); with `verify`, a corrupted file is refused."""
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, _files, verify=verify)
        if info.get("aggregation") not in ("sum", "mean") or info.get("nbits") not in NBITS:
            raise LirError(f"{folder}: unknown aggregation {info.get('aggregation')!r} or nbits {info.get('nbits')!r}")
        n_centroids = info.get("centroids", -1)
        code_type = np.uint16 if n_centroids <= 1 << 16 else np.int32
        arrays = {
            name: load_array(folder, f"{name}.npy", dtype or code_type, ndim) for name, (dtype, ndim) in ARRAYS.items()
        }
        if info.get("vectors") == "fp16":
            arrays["vectors"] = load_array(folder, f"{VECTORS[0]}.npy", *VECTORS[1:])
        _check_arrays(folder, arrays, info)
        return cls(arrays, read_doc_ids(folder, info["count"]), info)


def _files(info: dict[str, Any]) -> list[str]:
    """The files of an index folder: the arrays, the token vectors where kept, the doc ids."""
    vectors = [f"{VECTORS[0]}.npy"] if info.get("vectors") == "fp16" else []
    return [*(f"{name}.npy" for name in ARRAYS), *vectors, IDS_FILE]


def _float16(vectors: np.ndarray) -> np.ndarray:
    """The token vectors as float16, converted a chunk at a time (refused where a value overflows)."""
    out = np.empty(vectors.shape, np.float16)
    for start in range(0, len(vectors), CHUNK):
        with np.errstate(over="ignore"):
            out[start : start + CHUNK] = vectors[start : start + CHUNK]
        if not np.isfinite(out[start : start + CHUNK]).all():
            raise LirError("token vectors overflow float16 (|value| > 65504): build without vectors=fp16")
    return out


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isnan(number):
        raise LirError(f"search parameter {name} must be a number or auto, not {value!r}")
    return number


def _check_arrays(folder: Path, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Refuse arrays whose shapes do not fit each other and index.json (an index.json with valid
    checksums of other files is not enough: the shapes bound every look-up)."""
    dim, nbits, count, tokens, n_centroids = (info.get(key) for key in ("dim", "nbits", "count", "tokens", "centroids"))
    expected = {
        "centroids": (n_centroids, dim),
        "codes": (tokens,),
        "residuals": (tokens, -(-dim * nbits // 8)) if isinstance(dim, int) else None,
        "scales": (tokens,),
        "bucket_cutoffs": (dim, 2**nbits - 1),
        "bucket_weights": (dim, 2**nbits),
        "offsets": (count + 1,) if isinstance(count, int) else None,
        "doc_cell_offsets": (count + 1,) if isinstance(count, int) else None,
        "cell_offsets": (n_centroids + 1,) if isinstance(n_centroids, int) else None,
        "cell_docs": arrays["doc_cells"].shape,
    }
    if "vectors" in arrays:
        expected["vectors"] = (tokens, dim)
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise LirError(f"{folder / (name + '.npy')} has shape {arrays[name].shape}, expected {shape}")
    for name, total in (("offsets", tokens), ("doc_cell_offsets", len(arrays["doc_cells"]))):
        if arrays[name][0] != 0 or arrays[name][-1] != total:
            raise LirError(f"{folder / (name + '.npy')} does not cover its {total} entries")
    if arrays["cell_offsets"][0] != 0 or arrays["cell_offsets"][-1] != len(arrays["cell_docs"]):
        raise LirError(f"{folder / 'cell_offsets.npy'} does not cover its {len(arrays['cell_docs'])} entries")


def _sample(total: int, size: int, seed: int) -> np.ndarray | slice:
    """Sorted rows of a seeded random sample of `size` of `total` rows (all rows when size >= total)."""
    if size >= total:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(total, size, replace=False))


def _train_centroids(vectors: np.ndarray, n_centroids: int, progress: bool) -> tuple[np.ndarray, faiss.Index]:
    """Faiss k-means (L2, as ColBERTv2) on a seeded sample of the token vectors: the centroids [K, D] float32
    and an index of them that finds a token's nearest (exact; HNSW from HNSW_CENTROIDS centroids on)."""
    dim = vectors.shape[1]
    if n_centroids == 0:
        return np.zeros((0, dim), np.float32), faiss.IndexFlatL2(dim)
    n_train = min(len(vectors), max(MIN_TRAIN, TRAIN_PER_CENTROID * n_centroids))
    train = np.ascontiguousarray(vectors[_sample(len(vectors), n_train, seed=0)], dtype=np.float32)
    if progress:
        tqdm.write(f"k-means: {n_centroids} centroids on {len(train)} of {len(vectors)} token vectors", file=sys.stderr)
    parameters = faiss.ClusteringParameters()
    parameters.niter, parameters.seed = KMEANS_ITERATIONS, KMEANS_SEED
    parameters.max_points_per_centroid, parameters.min_points_per_centroid = TRAIN_PER_CENTROID, 1
    clustering = faiss.Clustering(dim, n_centroids, parameters)
    clustering.train(train, _nearest(dim, n_centroids))
    centroids = faiss.vector_to_array(clustering.centroids).reshape(n_centroids, dim)
    nearest = _nearest(dim, n_centroids)
    nearest.add(centroids)
    return centroids, nearest


def _nearest(dim: int, n_centroids: int) -> faiss.Index:
    """An empty index for the nearest of `n_centroids` centroids: exact, or HNSW for many (a token then
    sometimes gets its second-nearest centroid: a slightly larger residual, no other harm)."""
    if n_centroids < HNSW_CENTROIDS:
        return faiss.IndexFlatL2(dim)
    index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBORS)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _buckets(
    sample: np.ndarray, centroids: np.ndarray, assigner: faiss.Index, nbits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per dimension, the 2^nbits - 1 bucket cutoffs and 2^nbits bucket values of the sample's residuals,
    each scaled to norm 1: ColBERTv2's quantiles (values at (i + 0.5) / 2^nbits) refined by Lloyd's
    iterations (each value the mean of its bucket, cutoffs halfway between values: on MiniLM ColBERT tokens,
    recall@10 of 4-bit MaxSim against exact 0.95 instead of 0.93)."""
    dim, options = sample.shape[1], 2**nbits
    if len(sample) == 0:
        return np.zeros((dim, options - 1), np.float32), np.zeros((dim, options), np.float32)
    nearest = assigner.search(sample, 1)[1][:, 0]
    residuals = sample - centroids[nearest]
    norms = np.linalg.norm(residuals, axis=1)
    units = np.sort(residuals[norms > 0] / norms[norms > 0, None], axis=0)  # each dimension sorted
    if len(units) == 0:  # every sample token is a centroid
        units = np.zeros((1, dim), np.float32)
    sums = np.zeros((len(units) + 1, dim), np.float64)
    np.cumsum(units, axis=0, out=sums[1:])
    weights = np.quantile(units, (np.arange(options) + 0.5) / options, axis=0).T.astype(np.float64)
    columns = np.arange(dim)
    for _ in range(LLOYD_ITERATIONS):
        cutoffs = (weights[:, 1:] + weights[:, :-1]) / 2
        ends = np.array([np.searchsorted(units[:, d], cutoffs[d], side="right") for d in columns])  # [D, o - 1]
        ends = np.concatenate([np.zeros((dim, 1), np.int64), ends, np.full((dim, 1), len(units))], axis=1)
        counts = np.diff(ends, axis=1)
        totals = sums[ends[:, 1:], columns[:, None]] - sums[ends[:, :-1], columns[:, None]]
        weights = np.where(counts > 0, totals / np.maximum(counts, 1), weights)  # an empty bucket keeps its value
    cutoffs = (weights[:, 1:] + weights[:, :-1]) / 2
    return np.ascontiguousarray(cutoffs, np.float32), np.ascontiguousarray(weights, np.float32)


def _quantize(residuals: np.ndarray, cutoffs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bucket indices [n, D] uint8 of residuals scaled to norm 1 (how many of its dimension's cutoffs lie below
    each value), and the scale [n] that gives the decompressed residual (scale x bucket values) the norm of
    the residual (on MiniLM ColBERT tokens, MaxSim errors of 2.4% at 2 bits and 0.7% at 4 bits, against 17% and
    9% without a scale)."""
    norms = np.linalg.norm(residuals, axis=1)
    units = residuals / np.maximum(norms, np.finfo(np.float32).tiny)[:, None]
    buckets = np.zeros(residuals.shape, np.uint8)
    for column in cutoffs.T:
        buckets += units > column
    values = np.linalg.norm(np.take_along_axis(weights.T, buckets.astype(np.intp), axis=0), axis=1)
    return buckets, norms / np.maximum(values, np.finfo(np.float32).tiny)


def _pack(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """Bucket indices [n, D] → bytes [n, ceil(D nbits / 8)], the first dimension in the high bits."""
    per_byte = 8 // nbits
    n, dim = buckets.shape
    padded = np.zeros((n, -(-dim // per_byte) * per_byte), np.uint8)
    padded[:, :dim] = buckets
    shifts = (nbits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)
    return np.bitwise_or.reduce(padded.reshape(n, -1, per_byte) << shifts, axis=2)


def _decode_table(weights: np.ndarray, nbits: int) -> np.ndarray:
    """[B x 256, dims per byte] float32: for byte b of a packed residual holding value v, row b * 256 + v
    holds the bucket values of its dimensions."""
    per_byte = 8 // nbits
    dim, options = weights.shape
    n_bytes = -(-dim // per_byte)
    padded = np.zeros((n_bytes * per_byte, options), np.float32)
    padded[:dim] = weights
    shifts = nbits * np.arange(per_byte - 1, -1, -1)
    indices = (np.arange(256)[:, None] >> shifts) & (options - 1)  # [256, per_byte]
    table = padded.reshape(n_bytes, per_byte, options)[:, np.arange(per_byte), indices]  # [B, 256, per_byte]
    return np.ascontiguousarray(table.reshape(n_bytes * 256, per_byte))


def _inverted_file(codes: np.ndarray, offsets: np.ndarray, n_centroids: int) -> tuple[np.ndarray, ...]:
    """Each document's distinct centroids (CSR by document) and each centroid's documents (CSR by centroid)."""
    n_docs = len(offsets) - 1
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(offsets))
    pairs = np.unique(doc_of * max(n_centroids, 1) + codes)  # sorted by document, then centroid
    del doc_of
    docs, cells = pairs // max(n_centroids, 1), pairs % max(n_centroids, 1)
    doc_cell_offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(np.bincount(docs, minlength=n_docs), out=doc_cell_offsets[1:])
    order = np.argsort(cells, kind="stable")  # by centroid, then document
    cell_offsets = np.zeros(n_centroids + 1, np.int64)
    np.cumsum(np.bincount(cells, minlength=n_centroids), out=cell_offsets[1:])
    return cells, doc_cell_offsets, docs[order].astype(np.int32), cell_offsets


def _best_cells(cell_scores: np.ndarray, ncells: int) -> np.ndarray:
    """The `ncells` best centroids of each query token (flattened): by repeated argmax up to ARGMAX_CELLS
    (an argmax pass costs 1/50 of an argpartition of the [Lq, K] scores), else by argpartition."""
    n_cells = cell_scores.shape[1]
    if ncells >= n_cells:
        return np.arange(n_cells)
    if ncells > ARGMAX_CELLS:
        return np.argpartition(cell_scores, n_cells - ncells, axis=1)[:, -ncells:].ravel()
    scores, tokens = cell_scores.copy(), np.arange(len(cell_scores))
    best = np.empty((ncells, len(cell_scores)), np.intp)
    for i in range(ncells):
        best[i] = scores.argmax(axis=1)
        scores[tokens, best[i]] = -np.inf
    return best.ravel()


def _ranges(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries offsets[r]:offsets[r + 1] of each row in `rows`, concatenated, and where each row's
    entries start in them ([len(rows) + 1])."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    local = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=local[1:])
    return np.repeat(starts - local[:-1], lengths) + np.arange(local[-1]), local
