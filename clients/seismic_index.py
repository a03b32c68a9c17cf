"""Learned-sparse (SPLADE) retrieval with Seismic (`pyseismic-lsr`): approximate, and far faster than exact.

Seismic (Bruch et al., SIGIR 2024) keeps the `n_postings` heaviest postings of each term, cuts each
posting list into blocks of similar documents, summarizes each block by a sparse vector that keeps
`summary_energy` of its mass, and at query time scans the blocks of the query's `query_cut` heaviest
terms, skipping a block whose summary score cannot beat the current top k by more than `heap_factor`.
Documents it visits are scored on their full vectors (Seismic stores weights as float16: scores within
about 1e-3 relative of exact); only documents it skips can be missed. `SparseIndex` (exact) stays the reference.

Spec: `seismic` (the library's build defaults) or `seismic,n_postings=3500,centroid_fraction=0.1,
summary_energy=0.4,...` (any of BUILD_DEFAULTS). Search parameters: `query_cut=…,heap_factor=…`
(`--search-params`; defaults in SEARCH_DEFAULTS, chosen for recall@10 ≥ 0.95 against exact search on
SPLADE-shaped data, see benchmarks/bench_indexes.py). Document weights must be nonnegative.

Why a library: Seismic is the published state of the art for learned sparse retrieval, maintained by
its authors, numpy-only (the clients stay torch-free), and its Rust kernels are out of numpy's reach.

Folder: `seismic.index.seismic` (Seismic's own serialization; the pyseismic-lsr version that wrote it is
recorded and required to read it), `doc_ids.json`, `index.json` with the checksums. Seismic's own messages
go to stderr while it builds (progress) and nowhere otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import seismic
from tqdm import tqdm

from lir.clients.indexes import (
    IDS_FILE,
    check_doc_ids,
    parse_parameters,
    positive_int,
    read_doc_ids,
    read_index_info,
    save_index_folder,
    write_doc_ids,
)
from lir.clients.sparse_index import check_sparse_docs, check_sparse_queries, query_terms
from lir.errors import LirError
from lir.vectors import SparseVectors

FORMAT = "lir-seismic-index"
INDEX_FILE = "seismic.index.seismic"
BUILD_DEFAULTS: dict[str, float] = {
    "n_postings": 3500,
    "centroid_fraction": 0.1,
    "min_cluster_size": 2,
    "summary_energy": 0.4,
    "max_fraction": 1.5,
    "doc_cut": 15,
}
INTEGER_PARAMETERS = ("n_postings", "min_cluster_size", "doc_cut", "query_cut")
SEARCH_DEFAULTS: dict[str, float] = {"query_cut": 15, "heap_factor": 0.8}
ADD_CHUNK = 1 << 16  # documents handed to Seismic at once while building
STRING = seismic.get_seismic_string()


def parse_spec(spec: str) -> dict[str, float]:
    """`seismic` or `seismic,n_postings=2000,summary_energy=0.5` → every build parameter."""
    head, _, rest = spec.partition(",")
    if head.strip() != "seismic":
        raise LirError(f"{spec!r} is not a Seismic index spec (seismic, or seismic,n_postings=3500,...)")
    return BUILD_DEFAULTS | _numbers(parse_parameters(rest), BUILD_DEFAULTS, "build")


def _numbers(params: dict[str, str], known: dict[str, float], kind: str) -> dict[str, float]:
    """name=value pairs as numbers, refused in one line unless each is a known, positive parameter."""
    out: dict[str, float] = {}
    for name, value in params.items():
        if name not in known:
            raise LirError(f"{name!r} is not a Seismic {kind} parameter ({', '.join(known)})")
        if name in INTEGER_PARAMETERS:
            out[name] = positive_int(name, value)
            continue
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = 0.0
        if not 0 < out[name] < float("inf"):
            raise LirError(f"Seismic {kind} parameter {name} must be a positive number, not {value!r}")
    return out


class SeismicIndex:
    """A Seismic index of N sparse documents over a vocabulary of `dim` terms, with their doc ids."""

    FORMAT: ClassVar[str] = FORMAT

    def __init__(self, index: Any, doc_ids: list[str], info: dict[str, Any]) -> None:
        self.index = index
        self.doc_ids = doc_ids
        self.info = info
        self.search_parameters: dict[str, float] = dict(SEARCH_DEFAULTS)
        self.threads = 0  # batches of queries: Seismic's default, every core

    @classmethod
    def build(
        cls,
        docs: SparseVectors,
        doc_ids: list[str],
        spec: str = "seismic",
        model: dict | None = None,
        progress: bool = False,
    ) -> SeismicIndex:
        """Index `docs` (rows in the order of `doc_ids`) with the build parameters of `spec`."""
        params = parse_spec(spec)
        term_ids, weights, offsets, dim = check_sparse_docs(docs)
        doc_ids = check_doc_ids(doc_ids, len(offsets) - 1, "documents")
        if len(weights) and weights.min() < 0:
            raise LirError("Seismic needs nonnegative document weights (use the exact float32 index)")
        dataset = seismic.SeismicDataset(dim=dim)
        n_docs = len(doc_ids)
        with tqdm(total=n_docs, desc="seismic dataset", unit="doc", disable=not progress) as bar:
            for first in range(0, n_docs, ADD_CHUNK):
                last = min(first + ADD_CHUNK, n_docs)
                terms, values, rows = _unique_sorted_rows(term_ids, weights, offsets, first, last)
                dataset.add_documents_by_id([str(r) for r in range(first, last)], terms, values, rows)
                bar.update(last - first)
        if dataset.len == 0:
            raise LirError("no document has a nonzero term weight: Seismic has nothing to index")
        built = {name: int(v) if name in INTEGER_PARAMETERS else v for name, v in params.items()}
        with seismic_output(progress):
            index = seismic.SeismicIndex.build_from_dataset(dataset, **built)
        info = {
            "format": FORMAT,
            "version": 1,
            "spec": spec,
            "metric": "dot",
            "dim": dim,
            "count": n_docs,
            "postings": int(np.count_nonzero(weights)),
            "build_parameters": built,
            "pyseismic_lsr": version("pyseismic-lsr"),
            "model": model or {},
        }
        return cls(index, doc_ids, info)

    def set_search_parameters(self, spec: str) -> None:
        """E.g. `query_cut=10,heap_factor=0.7`: the query's heaviest terms searched, and how far below the
        current k-th score a block's summary may be and still be scanned (1 scans more, smaller skips more)."""
        self.search_parameters.update(_numbers(parse_parameters(spec), SEARCH_DEFAULTS, "search"))

    def search(self, queries: SparseVectors, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k dot products [Q, k'] (k' = min(k, count)) and doc ids per query, best first. Documents no
        query term reaches are not returned: a shorter ids list, its scores padded with -inf."""
        qterms, qweights, qoffsets = check_sparse_queries(queries, self.info["dim"])
        n_queries = len(qoffsets) - 1
        k = max(min(int(k), len(self.doc_ids)), 0)
        scores = np.full((n_queries, k), -np.inf, np.float32)
        if n_queries == 0 or k == 0:
            return scores, [[] for _ in range(n_queries)]
        components, values = [], []
        for q in range(n_queries):
            terms, weights = query_terms(qterms[qoffsets[q] : qoffsets[q + 1]], qweights[qoffsets[q] : qoffsets[q + 1]])
            keep = weights != 0
            components.append(terms[keep].astype(str).astype(STRING))
            values.append(weights[keep])
        cut, heap = int(self.search_parameters["query_cut"]), float(self.search_parameters["heap_factor"])
        if n_queries == 1:
            found = [self.index.search("0", components[0], values[0], k, cut, heap)]
        else:  # its answers come in no fixed order: each is matched by the query's name (none: no hits)
            names = np.array([str(q) for q in range(n_queries)], dtype=STRING)
            answers = self.index.batch_search(names, components, values, k, cut, heap, num_threads=self.threads)
            by_name = {hits[0][0]: hits for hits in answers if hits}
            found = [by_name.get(str(q), []) for q in range(n_queries)]
        ids = []
        for q, hits in enumerate(found):
            scores[q, : len(hits)] = [score for _, score, _ in hits]
            ids.append([self.doc_ids[int(row)] for _, _, row in hits])
        return scores, ids

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder atomically: Seismic's file, doc ids, info with checksums."""

        def write_index(path: Path) -> None:
            with seismic_output(False):
                self.index.save(str(path)[: -len(".index.seismic")])

        writers = {INDEX_FILE: write_index, IDS_FILE: write_doc_ids(self.doc_ids)}
        return save_index_folder(directory, self.info, writers, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> SeismicIndex:
        """Read an index folder; with `verify`, a corrupted file is refused before Seismic reads it."""
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, (INDEX_FILE, IDS_FILE), verify=verify)
        if info.get("pyseismic_lsr") != version("pyseismic-lsr"):
            raise LirError(
                f"{folder} was built with pyseismic-lsr {info.get('pyseismic_lsr')}, this is "
                f"{version('pyseismic-lsr')}: rebuild the index (Seismic's file format is its own)"
            )
        try:
            with seismic_output(False):
                index = seismic.SeismicIndex.load(str(folder / INDEX_FILE))
        except Exception as exc:  # a Rust panic or an I/O error from the extension
            raise LirError(f"{folder / INDEX_FILE} cannot be read by Seismic ({exc})") from None
        doc_ids = read_doc_ids(folder, int(info.get("count", -1)))
        if index.dim > info.get("dim", -1) or index.len > len(doc_ids):
            raise LirError(f"{folder}: Seismic's index does not fit its index.json")
        return cls(index, doc_ids, info)


def _unique_sorted_rows(
    term_ids: np.ndarray, weights: np.ndarray, offsets: np.ndarray, first: int, last: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows first..last as Seismic takes them: zero weights dropped, terms strictly ascending in each row
    (a repeated term's weights summed, as the exact index adds its postings)."""
    a, b = int(offsets[first]), int(offsets[last])
    rows = np.repeat(np.arange(last - first, dtype=np.int64), np.diff(offsets[first : last + 1]))
    terms, values = term_ids[a:b].astype(np.int64), weights[a:b].astype(np.float32)
    keep = values != 0
    rows, terms, values = rows[keep], terms[keep], values[keep]
    ordered = len(terms) < 2 or bool(np.all((np.diff(rows) > 0) | (np.diff(terms) > 0)))
    if not ordered:
        order = np.lexsort((terms, rows))
        rows, terms, values = rows[order], terms[order], values[order]
        starts = np.flatnonzero(np.r_[True, (np.diff(rows) != 0) | (np.diff(terms) != 0)])
        rows, terms, values = rows[starts], terms[starts], np.add.reduceat(values, starts).astype(np.float32)
    row_offsets = np.zeros(last - first + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=last - first), out=row_offsets[1:])
    return terms, values, row_offsets


@contextlib.contextmanager
def seismic_output(progress: bool) -> Iterator[None]:
    """Seismic prints its phases on the process's stdout (fd 1), which carries lir's results: send them
    to stderr while building with progress, and to /dev/null otherwise."""
    sys.stdout.flush()
    saved = os.dup(1)
    target = os.dup(2) if progress else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(target, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(target)
