"""Multi-vector (ColBERT) index: every scored token vector of every document, searched with MaxSim.

The spec says how documents are found:

- `exact` (the default): every document is scored with MaxSim (`lir.vectors.maxsim`, batched), or with
  the model's other late interaction (Lightning IR's sum / mean / max over query tokens of each query
  token's max / sum / mean over document tokens);
- a Faiss factory string for the token vectors (`IVF1024,Flat`, `IVF1024,PQ32x8`, `HNSW32`, ...):
  each query token retrieves its `token_k` nearest document tokens (inner product); their documents
  are ranked by an estimate of MaxSim: per query token, the best retrieved similarity, or 0.8 x the
  token's last retrieved one where it retrieved none of the document's tokens (a max over query tokens:
  the best retrieved similarity); the best `candidates` (at least k) are re-scored exactly on the stored
  vectors. Token search finds MaxSim's candidates: a model that sums or averages over document tokens is
  refused (use `exact`).
  Defaults: `token_k=1024`; `candidates` = 65536 tokens' worth of documents (65536 / mean document
  length), between 256 and 1024; `nprobe=16` (IVF); `efSearch=128` (HNSW).

A `,fp16` suffix (`exact,fp16`, `IVF1024,PQ32x8,fp16`) stores the token vectors as float16 (half the
disk and memory; scores then differ from float32 by about 1e-3).

Folder: `vectors.npy` [T, D], `offsets.npy` [N + 1] int64 (document i owns rows offsets[i]:offsets[i+1]),
`doc_ids.json`, `tokens.faiss` (approximate specs only) and `index.json` with the checksums.
"""

from __future__ import annotations

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
from lir.coil import check_aggregations  # noqa: E402
from lir.errors import LirError  # noqa: E402
from lir.vectors import MultiVectors, doc_reduce  # noqa: E402

VECTORS_FILE, OFFSETS_FILE, FAISS_FILE = "vectors.npy", "offsets.npy", "tokens.faiss"
FORMAT = "lir-multi-vector-index"
STORAGE = {"fp32": np.float32, "fp16": np.float16}
DEFAULT_TOKEN_K, CANDIDATE_TOKENS, MIN_CANDIDATES, MAX_CANDIDATES = 1024, 1 << 16, 256, 1024
OWN_PARAMETERS = ("token_k", "candidates")
IMPUTE = 0.8  # a missed (query token, document) pair's share of the token's last retrieved similarity
DEFAULT_NPROBE, DEFAULT_EF_SEARCH = 16, 128
TRAIN_PER_LIST, MIN_TRAIN = 128, 1 << 16  # training sample: 128 token vectors per IVF list, at least 65536
ADD_CHUNK = 1 << 17
SCORE_BUDGET = 1 << 25  # floats computed at once: similarities [query tokens, doc tokens], scores [Q, N]
GROUP_TOKENS = 2048  # query tokens scored together by exact search
RESULT_BUDGET = 1 << 24  # Faiss results (query tokens x token_k) of one call


def parse_spec(spec: str) -> tuple[str, str]:
    """`exact`, `exact,fp16`, `IVF1024,PQ32x8,fp16` → (token factory or "exact", storage)."""
    parts = [p.strip() for p in spec.split(",")]
    storage = "fp32"
    if parts and parts[-1] in STORAGE:
        storage = parts.pop()
    factory = ",".join(parts)
    if not factory:
        raise LirError(f"{spec!r} is not a multi-vector index spec (exact, IVF1024,Flat, HNSW32, ...; ,fp16)")
    return factory, storage


class MultiVectorIndex:
    """Token vectors of N documents with their doc ids, searched by MaxSim (exactly or through Faiss)."""

    FORMAT: ClassVar[str] = FORMAT

    def __init__(
        self,
        vectors: np.ndarray,
        offsets: np.ndarray,
        doc_ids: list[str],
        info: dict[str, Any],
        token_index: faiss.Index | None = None,
    ) -> None:
        self.vectors = vectors
        self.offsets = offsets
        self.doc_ids = doc_ids
        self.info = info
        self.token_index = token_index
        self.search_parameters: dict[str, int] = {}
        if token_index is not None:
            # re-scoring costs candidates x document length: about 65536 tokens' worth, 256 to 1024 documents
            mean_length = info["tokens"] / max(info["count"], 1)
            candidates = int(np.clip(CANDIDATE_TOKENS // max(mean_length, 1), MIN_CANDIDATES, MAX_CANDIDATES))
            self.search_parameters = {"token_k": DEFAULT_TOKEN_K, "candidates": candidates}
            defaults = []
            if _ivf(token_index) is not None:
                defaults.append(f"nprobe={min(DEFAULT_NPROBE, _ivf(token_index).nlist)}")
            if _hnsw(token_index) is not None:
                defaults.append(f"efSearch={DEFAULT_EF_SEARCH}")
            if defaults:
                self.set_search_parameters(",".join(defaults))

    # ---------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        docs: MultiVectors,
        doc_ids: list[str],
        spec: str = "exact",
        model: dict | None = None,
        aggregation: str = "sum",
        progress: bool = False,
        doc_aggregation: str = "max",
    ) -> MultiVectorIndex:
        """Index the token vectors of `docs` (in the order of `doc_ids`) for a model's aggregations over
        query and document tokens; see the module for `spec`."""
        factory, storage = parse_spec(spec)
        check_aggregations(aggregation, doc_aggregation)
        if factory != "exact" and doc_aggregation != "max":
            raise LirError(
                f"{spec!r}: token search finds MaxSim candidates, not those of doc aggregation "
                f"{doc_aggregation!r}: use the exact index"
            )
        vectors = docs.vectors
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[1] < 1:
            raise LirError(f"token vectors must be a [T, D] array, not of shape {np.shape(vectors)}")
        if vectors.dtype.kind != "f":
            raise LirError(f"token vectors must be floating point, not {vectors.dtype}")
        offsets = check_offsets(docs.offsets, len(vectors), "token")
        doc_ids = check_doc_ids(doc_ids, len(offsets) - 1, "documents")
        vectors = np.ascontiguousarray(vectors, dtype=STORAGE[storage])  # no copy when it is already so
        for start in range(0, len(vectors), ADD_CHUNK):
            if not np.isfinite(vectors[start : start + ADD_CHUNK]).all():
                raise LirError("token vectors hold NaN or infinite values")
        dim = int(vectors.shape[1])
        token_index = None
        if factory != "exact":
            token_index = _build_token_index(vectors, factory, progress)
        info = {
            "format": FORMAT,
            "version": 1,
            "spec": spec,
            "factory": factory,
            "storage": storage,
            "metric": "maxsim",
            "aggregation": aggregation,
            "doc_aggregation": doc_aggregation,
            "dim": dim,
            "count": len(doc_ids),
            "tokens": len(vectors),
            "model": model or {},
        }
        return cls(vectors, offsets, doc_ids, info, token_index)

    # ---------------------------------------------------------------- search

    def set_search_parameters(self, spec: str) -> None:
        """E.g. `token_k=1024,candidates=512`, with Faiss parameters of the token index (`nprobe=16`,
        `efSearch=128`, ...); an exact index has none. At least k candidates are re-scored."""
        params = parse_parameters(spec)
        if self.token_index is None:
            if params:
                raise LirError(f"{spec!r}: an exact multi-vector index has no search parameters")
            return
        own = {name: positive_int(name, params.pop(name)) for name in list(params) if name in OWN_PARAMETERS}
        faiss_spec = ",".join(f"{name}={value}" for name, value in params.items())
        if faiss_spec:
            try:
                faiss.ParameterSpace().set_index_parameters(self.token_index, faiss_spec)
            except RuntimeError:
                raise LirError(
                    f"{faiss_spec!r} are not search parameters of a {self.info['factory']!r} token index "
                    f"(nor token_k, candidates)"
                ) from None
            for name, value in params.items():
                self.search_parameters[name] = int(value) if value.isdigit() else value
        self.search_parameters.update(own)

    def search(self, queries: MultiVectors, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k MaxSim scores [Q, k'] (k' = min(k, count)) and doc ids per query, best first.

        An approximate index that finds fewer than k' documents for a query pads its scores with -inf
        (its ids list is then shorter).
        """
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
        if self.token_index is None:
            rows_and_scores = self._search_exact(qvectors, qoffsets, k)
        else:
            rows_and_scores = self._search_approximate(qvectors, qoffsets, k)
        scores = np.full((n_queries, k), -np.inf, np.float32)
        ids = []
        for i, (rows, row_scores) in enumerate(rows_and_scores):
            scores[i, : len(rows)] = row_scores
            ids.append([self.doc_ids[r] for r in rows])
        return scores, ids

    def _search_exact(self, qvectors: np.ndarray, qoffsets: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every document scored, for groups of queries at a time (their [group, N] scores and their
        [group tokens, chunk tokens] similarities bounded in memory)."""
        max_queries = max(1, SCORE_BUDGET // max(len(self.doc_ids), 1))
        results = []
        first, n_queries = 0, len(qoffsets) - 1
        while first < n_queries:
            last = int(np.searchsorted(qoffsets, qoffsets[first] + GROUP_TOKENS, side="right")) - 1
            last = min(max(last, first + 1), first + max_queries, n_queries)
            sub = qoffsets[first : last + 1]
            scores = self._maxsim_all(qvectors[sub[0] : sub[-1]], sub - sub[0])
            for row in scores:
                rows = top_k(row, k)
                results.append((rows, row[rows]))
            first = last
        return results

    def _maxsim_all(self, qvectors: np.ndarray, qoffsets: np.ndarray) -> np.ndarray:
        """Late interaction of some queries with every document: [Q, N] float32 (as `lir.vectors.maxsim`)."""
        n_docs, n_queries = len(self.doc_ids), len(qoffsets) - 1
        qlens = np.diff(qoffsets)
        scores = np.zeros((n_queries, n_docs), np.float64)
        live = np.flatnonzero(qlens > 0)  # a query without tokens scores 0 everywhere
        if len(live) == 0 or len(self.vectors) == 0:
            return scores.astype(np.float32)
        lengths = np.diff(self.offsets)
        chunk_tokens = max(SCORE_BUDGET // max(len(qvectors), 1), 1024)
        start = 0
        while start < n_docs:  # documents in chunks of about chunk_tokens tokens
            stop = int(np.searchsorted(self.offsets, self.offsets[start] + chunk_tokens, side="right")) - 1
            stop = min(max(stop, start + 1), n_docs)
            first, last = int(self.offsets[start]), int(self.offsets[stop])
            nonempty = np.flatnonzero(lengths[start:stop] > 0)
            if len(nonempty):
                chunk = np.asarray(self.vectors[first:last], dtype=np.float32)
                sims = qvectors @ chunk.T  # [query tokens, chunk tokens]
                starts = self.offsets[start:stop][nonempty] - first
                per_token = doc_reduce(sims, starts, lengths[start:stop][nonempty], self.doc_aggregation)
                scores[np.ix_(live, start + nonempty)] = self._query_reduce(per_token, qoffsets[live])
            start = stop
        if self.info["aggregation"] == "mean":
            scores /= np.maximum(qlens, 1)[:, None]
        return scores.astype(np.float32)

    @property
    def doc_aggregation(self) -> str:
        """The aggregation over a document's tokens (indexes without one: max)."""
        return self.info.get("doc_aggregation", "max")

    def _query_reduce(self, per_token: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """[query tokens, documents] per-token scores of consecutive queries (each starting at `starts`) →
        [queries, documents] float64: summed (sum, mean) or the best (max)."""
        if self.info["aggregation"] == "max":
            return np.maximum.reduceat(per_token, starts, axis=0).astype(np.float64)
        return np.add.reduceat(per_token, starts, axis=0, dtype=np.float64)

    def _search_approximate(
        self, qvectors: np.ndarray, qoffsets: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Candidates from the token index (one Faiss call for the tokens of many queries), re-scored exactly."""
        token_k = min(self.search_parameters["token_k"], max(len(self.vectors), 1))
        limit = max(self.search_parameters["candidates"], k)
        group_tokens = max(RESULT_BUDGET // token_k, 1)  # Faiss results [tokens, token_k] bounded in memory
        results: list[tuple[np.ndarray, np.ndarray]] = []
        first, n_queries = 0, len(qoffsets) - 1
        while first < n_queries:
            last = int(np.searchsorted(qoffsets, qoffsets[first] + group_tokens, side="right")) - 1
            last = min(max(last, first + 1), n_queries)
            a0, b0 = int(qoffsets[first]), int(qoffsets[last])
            sims, tokens = self.token_index.search(qvectors[a0:b0], token_k) if b0 > a0 else (None, None)
            for q in range(first, last):
                a, b = int(qoffsets[q]) - a0, int(qoffsets[q + 1]) - a0
                if a == b:  # no query tokens: every document scores 0
                    results.append((np.arange(k), np.zeros(k, np.float32)))
                    continue
                candidates = self._candidates(sims[a:b], tokens[a:b], limit)
                if len(candidates) == 0:
                    results.append((candidates, np.zeros(0, np.float32)))
                    continue
                exact = self._maxsim_some(qvectors[a0 + a : a0 + b], candidates)
                best = top_k(exact, k)
                results.append((candidates[best], exact[best]))
            first = last
        return results

    def _candidates(self, sims: np.ndarray, tokens: np.ndarray, limit: int) -> np.ndarray:
        """Documents retrieved by a query's tokens, the best `limit` by their estimated MaxSim, sorted."""
        found = tokens >= 0
        n_found = found.sum(axis=1)
        qtok = np.repeat(np.arange(len(tokens)), n_found)
        docs = np.searchsorted(self.offsets, tokens[found], side="right") - 1
        if len(docs) == 0:
            return np.empty(0, np.int64)
        # each (query token, document) pair keeps its best similarity
        key = qtok * len(self.doc_ids) + docs
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        best = np.maximum.reduceat(sims[found][order], starts)
        pair_qtok = qtok[order][starts]
        unique_docs, inverse = np.unique(docs[order][starts], return_inverse=True)
        if self.info["aggregation"] == "max":  # the best retrieved similarity of any query token
            estimate = np.full(len(unique_docs), -np.inf)
            np.maximum.at(estimate, inverse, best)
        else:
            # a query token that missed a document counts IMPUTE x its last retrieved similarity (the
            # document's is below that): rank by the gain over it, summed over the query tokens
            floor = IMPUTE * sims[np.arange(len(sims)), np.maximum(n_found - 1, 0)]
            estimate = np.bincount(inverse, weights=best - floor[pair_qtok], minlength=len(unique_docs))
        if len(unique_docs) > limit:
            unique_docs = np.sort(unique_docs[top_k(estimate, limit)])
        return unique_docs

    def _maxsim_some(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """MaxSim (max over document tokens: approximate indexes) of one query against the documents `rows`
        (sorted, each with tokens), aggregated over the query tokens: [len(rows)] float32."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        lengths = stops - starts
        local = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=local[1:])
        tokens = np.repeat(starts - local[:-1], lengths) + np.arange(local[-1])
        scores = np.empty(len(rows), np.float64)
        step = max(SCORE_BUDGET // max(len(query), 1), 1024)
        first = 0
        while first < len(rows):  # bounded memory for many long candidates
            last = int(np.searchsorted(local, local[first] + step, side="right")) - 1
            last = min(max(last, first + 1), len(rows))
            chunk = np.asarray(self.vectors[tokens[local[first] : local[last]]], dtype=np.float32)
            sims = query @ chunk.T
            best = np.maximum.reduceat(sims, local[first:last] - local[first], axis=1)
            scores[first:last] = self._query_reduce(best, np.zeros(1, np.int64))[0]
            first = last
        if self.info["aggregation"] == "mean":
            scores /= len(query)
        return scores.astype(np.float32)

    # ---------------------------------------------------------------- files

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder atomically: arrays, doc ids, token index, info with checksums."""
        writers = {
            VECTORS_FILE: write_array(self.vectors),
            OFFSETS_FILE: write_array(self.offsets),
            IDS_FILE: write_doc_ids(self.doc_ids),
        }
        if self.token_index is not None:
            writers[FAISS_FILE] = lambda path: faiss.write_index(self.token_index, str(path))
        return save_index_folder(directory, self.info, writers, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> MultiVectorIndex:
        """Read an index folder (arrays memory-mapped); with `verify`, a corrupted file is refused."""
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, _file_names, verify=verify)
        storage = info.get("storage")
        if storage not in STORAGE:
            raise LirError(f"{folder}: unknown storage {storage!r}")
        try:
            check_aggregations(info.get("aggregation"), info.get("doc_aggregation", "max"))
        except LirError as exc:
            raise LirError(f"{folder}: {exc}") from None
        vectors = load_array(folder, VECTORS_FILE, STORAGE[storage], 2)
        offsets = load_array(folder, OFFSETS_FILE, np.int64, 1)
        if vectors.shape[1] != info.get("dim") or len(offsets) != info.get("count", -1) + 1:
            raise LirError(f"{folder}: arrays of shape {vectors.shape}, {offsets.shape} do not fit its index.json")
        if offsets[0] != 0 or offsets[-1] != len(vectors):
            raise LirError(f"{folder / OFFSETS_FILE} does not cover the {len(vectors)} token vectors")
        doc_ids = read_doc_ids(folder, len(offsets) - 1)
        token_index = None
        if info.get("factory") != "exact":
            try:
                token_index = faiss.read_index(str(folder / FAISS_FILE))
            except RuntimeError as exc:
                raise LirError(f"{folder} cannot be read ({str(exc).strip().splitlines()[-1]})") from None
            if token_index.ntotal != len(vectors) or token_index.d != vectors.shape[1]:
                raise LirError(f"{folder / FAISS_FILE} does not index the {len(vectors)} token vectors")
        return cls(vectors, offsets, doc_ids, info, token_index)


def _file_names(info: dict[str, Any]) -> tuple[str, ...]:
    names = (VECTORS_FILE, OFFSETS_FILE, IDS_FILE)
    return names if info.get("factory") == "exact" else (*names, FAISS_FILE)


def _build_token_index(vectors: np.ndarray, factory: str, progress: bool) -> faiss.Index:
    dim = vectors.shape[1]
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise LirError(
            f"{factory!r} is neither exact nor a Faiss index factory string (e.g. IVF1024,Flat, HNSW32)"
        ) from None
    ivf = _ivf(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        faiss.downcast_index(ivf).do_polysemous_training = False  # slow, and only for Hamming filtering
    if not index.is_trained:
        n_train = min(len(vectors), max(MIN_TRAIN, TRAIN_PER_LIST * (ivf.nlist if ivf is not None else 256)))
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(vectors), n_train, replace=False)) if n_train < len(vectors) else slice(None)
        train = np.ascontiguousarray(vectors[sample], dtype=np.float32)
        if progress:
            tqdm.write(f"training {factory} on {len(train)} of {len(vectors)} token vectors", file=sys.stderr)
        try:
            index.train(train)
        except RuntimeError as exc:
            raise LirError(
                f"cannot train {factory!r} on {len(train)} token vectors ({str(exc).strip().splitlines()[-1]})"
            ) from None
    with tqdm(total=len(vectors), desc=f"adding to {factory}", unit="tok", disable=not progress) as bar:
        for start in range(0, len(vectors), ADD_CHUNK):
            chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
            index.add(chunk)
            bar.update(len(chunk))
    return index


def _ivf(index: faiss.Index) -> Any:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index: faiss.Index) -> Any:
    index = faiss.downcast_index(index)
    return index if hasattr(index, "hnsw") else None
