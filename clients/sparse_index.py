"""Sparse (SPLADE) index: an inverted index of term impacts, searched by dot product.

For each vocabulary term, the documents that hold it (ascending) and their weights (impacts). A query
gathers the posting lists of its terms and accumulates weight × impact per document, then takes the
top k. The spec is how impacts are stored:

- `float32` (the default): exact, the top k equals `lir.vectors.sparse_dot`'s;
- `float16`: half the size, scores within about 1e-3 relative;
- `uint8`: a quarter of the size, impacts quantized to round(weight / scale) with
  scale = max weight / 255 (recorded in index.json); weights must be nonnegative.

Postings with a zero (or zero after quantization) impact are not stored: they add nothing.

Folder: `term_offsets.npy` [V + 1] int64 (term t owns postings offsets[t]:offsets[t+1]),
`postings_docs.npy` int32, `postings_impacts.npy`, `doc_ids.json`, `index.json` with the checksums.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from lir.clients.indexes import (
    IDS_FILE,
    check_doc_ids,
    check_offsets,
    load_array,
    parse_parameters,
    read_doc_ids,
    read_index_info,
    save_index_folder,
    top_k,
    write_array,
    write_doc_ids,
)
from lir.errors import LirError
from lir.vectors import SparseVectors

OFFSETS_FILE, DOCS_FILE, IMPACTS_FILE = "term_offsets.npy", "postings_docs.npy", "postings_impacts.npy"
FORMAT = "lir-sparse-index"
SPECS = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
BUILD_CHUNK = 1 << 23  # postings placed at once while building


class SparseIndex:
    """An inverted index of N sparse documents over a vocabulary of `dim` terms, with their doc ids."""

    FORMAT: ClassVar[str] = FORMAT

    def __init__(
        self,
        term_offsets: np.ndarray,
        postings_docs: np.ndarray,
        postings_impacts: np.ndarray,
        doc_ids: list[str],
        info: dict[str, Any],
    ) -> None:
        self.term_offsets = term_offsets
        self.postings_docs = postings_docs
        self.postings_impacts = postings_impacts
        self.doc_ids = doc_ids
        self.info = info
        self.search_parameters: dict[str, Any] = {}

    @classmethod
    def build(
        cls,
        docs: SparseVectors,
        doc_ids: list[str],
        spec: str = "float32",
        model: dict | None = None,
        progress: bool = False,
    ) -> SparseIndex:
        """Index `docs` (rows in the order of `doc_ids`); `spec` is float32, float16 or uint8."""
        if spec not in SPECS:
            raise LirError(f"{spec!r} is not a sparse index spec (float32, float16 or uint8)")
        term_ids, weights, offsets, dim = check_sparse_docs(docs)
        n_docs = len(offsets) - 1
        doc_ids = check_doc_ids(doc_ids, n_docs, "documents")
        scale = 1.0
        if spec == "float16" and len(weights) and np.abs(weights).max() > np.finfo(np.float16).max:
            raise LirError("weights beyond the float16 range (use float32 or uint8)")
        if spec == "uint8":
            if len(weights) and weights.min() < 0:
                raise LirError("uint8 impacts need nonnegative weights (use float32 or float16)")
            top = float(weights.max()) if len(weights) else 0.0
            scale = top / 255 if top > 0 else 1.0
        term_offsets, postings_docs, impacts = _invert(term_ids, weights, offsets, dim, spec, scale, progress)
        info = {
            "format": FORMAT,
            "version": 1,
            "spec": spec,
            "metric": "dot",
            "dim": dim,
            "count": n_docs,
            "postings": len(postings_docs),
            "scale": scale,
            "model": model or {},
        }
        return cls(term_offsets, postings_docs, impacts, doc_ids, info)

    def set_search_parameters(self, spec: str) -> None:
        """A sparse index searches exactly: it has no search parameters."""
        if parse_parameters(spec):
            raise LirError(f"{spec!r}: a sparse index has no search parameters")

    def search(self, queries: SparseVectors, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k dot products [Q, k'] (k' = min(k, count)) and doc ids per query, best first; documents
        of equal score in index order (those no query term reaches score 0)."""
        qterms, qweights, qoffsets = check_sparse_queries(queries, self.info["dim"])
        n_docs, n_queries = len(self.doc_ids), len(qoffsets) - 1
        k = max(min(int(k), n_docs), 0)
        out = np.zeros((n_queries, k), np.float32)
        ids = []
        for q in range(n_queries):
            span = slice(qoffsets[q], qoffsets[q + 1])
            scores = self.score(qterms[span], qweights[span])
            rows = top_k(scores, k)
            out[q] = scores[rows]
            ids.append([self.doc_ids[r] for r in rows])
        return out, ids

    def score(self, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Dot products of one query (term ids, weights) with every document: [N] float32."""
        terms, weights = query_terms(terms, weights)  # ascending: each document adds its products in term order
        keep = weights != 0
        terms, weights = terms[keep], weights[keep] * np.float32(self.info["scale"])
        starts, stops = self.term_offsets[terms], self.term_offsets[terms + 1]
        n_docs = len(self.doc_ids)
        if len(terms) == 0 or stops.sum() == starts.sum():
            return np.zeros(n_docs, np.float32)
        docs = np.concatenate([self.postings_docs[a:b] for a, b in zip(starts, stops, strict=True)])
        impacts = np.concatenate([self.postings_impacts[a:b] for a, b in zip(starts, stops, strict=True)])
        products = impacts.astype(np.float32) * np.repeat(weights, stops - starts)
        return np.bincount(docs, weights=products, minlength=n_docs).astype(np.float32)

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder atomically: arrays, doc ids, info with checksums."""
        writers = {
            OFFSETS_FILE: write_array(self.term_offsets),
            DOCS_FILE: write_array(self.postings_docs),
            IMPACTS_FILE: write_array(self.postings_impacts),
            IDS_FILE: write_doc_ids(self.doc_ids),
        }
        return save_index_folder(directory, self.info, writers, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> SparseIndex:
        """Read an index folder (arrays memory-mapped); with `verify`, a corrupted file is refused."""
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, (OFFSETS_FILE, DOCS_FILE, IMPACTS_FILE, IDS_FILE), verify=verify)
        if info.get("spec") not in SPECS:
            raise LirError(f"{folder}: unknown sparse index spec {info.get('spec')!r}")
        term_offsets = load_array(folder, OFFSETS_FILE, np.int64, 1)
        postings_docs = load_array(folder, DOCS_FILE, np.int32, 1)
        impacts = load_array(folder, IMPACTS_FILE, SPECS[info["spec"]], 1)
        if (
            len(term_offsets) != info.get("dim", -1) + 1
            or len(postings_docs) != len(impacts)
            or term_offsets[0] != 0
            or term_offsets[-1] != len(postings_docs)
        ):
            raise LirError(f"{folder}: its arrays do not fit together or with its index.json")
        doc_ids = read_doc_ids(folder, int(info.get("count", -1)))
        return cls(term_offsets, postings_docs, impacts, doc_ids, info)


def check_sparse_docs(docs: SparseVectors) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The term ids, weights, int64 offsets and vocabulary size of documents to index, refused in one line
    when they do not fit together, leave the vocabulary, are not finite or are more than 2**31 - 1 rows."""
    dim = int(docs.dim)
    term_ids, weights = np.asarray(docs.term_ids), np.asarray(docs.weights)
    if dim < 1:
        raise LirError(f"the vocabulary size must be positive, not {dim}")
    if term_ids.ndim != 1 or weights.ndim != 1 or len(term_ids) != len(weights):
        raise LirError(f"{len(term_ids)} term ids for {len(weights)} weights")
    if term_ids.dtype.kind not in "iu" or weights.dtype.kind != "f":
        raise LirError(f"term ids must be integers and weights floats, not {term_ids.dtype} and {weights.dtype}")
    offsets = check_offsets(docs.offsets, len(term_ids), "sparse row")
    if len(offsets) - 1 >= 2**31:
        raise LirError(f"{len(offsets) - 1} documents: a sparse index holds at most 2**31 - 1")
    if len(term_ids) and (term_ids.min() < 0 or term_ids.max() >= dim):
        raise LirError(f"term ids must lie in [0, {dim}), found {term_ids.min()}..{term_ids.max()}")
    if not np.isfinite(weights).all():
        raise LirError("sparse weights hold NaN or infinite values")
    return term_ids, weights, offsets, dim


def check_sparse_queries(queries: SparseVectors, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The term ids, weights and int64 offsets of queries for an index over `dim` terms, refused in one line
    when they do not fit it."""
    if queries.dim != dim:
        raise LirError(f"sparse queries over {queries.dim} terms do not fit an index of {dim} terms")
    qterms, qweights = np.asarray(queries.term_ids), np.asarray(queries.weights)
    qoffsets = check_offsets(queries.offsets, len(qterms), "query")
    if len(qterms) != len(qweights):
        raise LirError(f"{len(qterms)} query term ids for {len(qweights)} weights")
    if len(qterms) and (qterms.min() < 0 or qterms.max() >= dim):
        raise LirError(f"query term ids must lie in [0, {dim})")
    return qterms, qweights, qoffsets


def query_terms(terms: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query's terms ascending (int64) with their float32 weights; a repeated term keeps its last
    weight, as a dense vector would."""
    terms = np.asarray(terms, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float32)
    if len(np.unique(terms)) != len(terms):
        last = len(terms) - 1 - np.unique(terms[::-1], return_index=True)[1]
        terms, weights = terms[last], weights[last]
    order = np.argsort(terms, kind="stable")
    return terms[order], weights[order]


def _invert(
    term_ids: np.ndarray,
    weights: np.ndarray,
    offsets: np.ndarray,
    dim: int,
    spec: str,
    scale: float,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR rows (documents) → postings by term, documents ascending in each, in chunks of documents."""
    n_docs = len(offsets) - 1
    bounds = [0]  # document chunks of about BUILD_CHUNK postings
    while bounds[-1] < n_docs:
        stop = int(np.searchsorted(offsets, offsets[bounds[-1]] + BUILD_CHUNK, side="right")) - 1
        bounds.append(min(max(stop, bounds[-1] + 1), n_docs))
    sort_dtype = np.uint16 if dim <= 1 << 16 else np.int64  # uint16 keys sort by radix

    def chunk(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(offsets[bounds[i]]), int(offsets[bounds[i + 1]])
        impacts = _quantize(weights[a:b], spec, scale)
        keep = impacts != 0
        rows = np.repeat(
            np.arange(bounds[i], bounds[i + 1], dtype=np.int32), np.diff(offsets[bounds[i] : bounds[i + 1] + 1])
        )
        return term_ids[a:b][keep].astype(sort_dtype), rows[keep], impacts[keep]

    counts = np.zeros(dim, np.int64)
    chunks = len(bounds) - 1
    with tqdm(total=2 * chunks, desc="inverting", unit="chunk", disable=not progress or chunks < 2) as bar:
        for i in range(chunks):  # pass 1: postings per term
            a, b = int(offsets[bounds[i]]), int(offsets[bounds[i + 1]])
            counts += np.bincount(term_ids[a:b][_quantize(weights[a:b], spec, scale) != 0], minlength=dim)
            bar.update(1)
        term_offsets = np.zeros(dim + 1, np.int64)
        np.cumsum(counts, out=term_offsets[1:])
        postings_docs = np.empty(int(term_offsets[-1]), np.int32)
        postings_impacts = np.empty(int(term_offsets[-1]), SPECS[spec])
        filled = term_offsets[:-1].copy()
        for i in range(chunks):  # pass 2: each chunk's postings after the earlier chunks' in each term
            terms, rows, impacts = chunk(i)
            order = np.argsort(terms, kind="stable")
            terms = terms[order].astype(np.int64)
            chunk_counts = np.bincount(terms, minlength=dim)
            chunk_starts = np.zeros(dim, np.int64)
            np.cumsum(chunk_counts[:-1], out=chunk_starts[1:])
            positions = filled[terms] + np.arange(len(terms)) - chunk_starts[terms]
            postings_docs[positions] = rows[order]
            postings_impacts[positions] = impacts[order]
            filled += chunk_counts
            bar.update(1)
    return term_offsets, postings_docs, postings_impacts


def _quantize(weights: np.ndarray, spec: str, scale: float) -> np.ndarray:
    if spec == "uint8":
        return np.clip(np.rint(weights / np.float32(scale)), 0, 255).astype(np.uint8)
    return weights.astype(SPECS[spec])
