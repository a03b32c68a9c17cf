"""COIL index: COIL's own design, exact. Each token id's inverted list holds the (document, token vector)
entries of that id, so a query token meets only the document tokens it can match; every document's cls
vector is scored for every query (one dense product). Scores equal `lir.coil.coil_scores`: exact search,
the only spec (`exact`), with no search parameters.

Why this index: COIL scores only equal token ids, so inverted lists visit exactly the pairs that can be
nonzero (the work of a query token is its list's length, not the corpus's), and no approximation is needed;
the dense cls part costs one [Q, C] x [C, N] product, like a flat dense index.

Folder: `cls.npy` [N, C], `list_ids.npy` [U] and `list_offsets.npy` [U + 1] (token id `list_ids[k]` owns
entries `list_offsets[k]:list_offsets[k + 1]`), `doc_rows.npy` [T] and `vectors.npy` [T, D] (the entries),
`doc_lengths.npy` [N] (scored tokens per document), `doc_ids.json` and `index.json` with the checksums.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

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
from lir.coil import CoilVectors, Postings, check_aggregations
from lir.errors import LirError

FORMAT = "lir-coil-index"
ARRAYS = {
    "cls.npy": ("cls", np.float32, 2),
    "list_ids.npy": ("list_ids", np.int64, 1),
    "list_offsets.npy": ("list_offsets", np.int64, 1),
    "doc_rows.npy": ("doc_rows", np.int64, 1),
    "vectors.npy": ("vectors", np.float32, 2),
    "doc_lengths.npy": ("doc_lengths", np.int64, 1),
}
"""file → (attribute of the index or of its postings, dtype, rank)."""


class CoilIndex:
    """The cls vectors and the inverted lists of N documents with their doc ids, searched exactly."""

    FORMAT: ClassVar[str] = FORMAT

    def __init__(self, cls: np.ndarray, postings: Postings, doc_ids: list[str], info: dict[str, Any]) -> None:
        self.cls = cls
        self.postings = postings
        self.doc_ids = doc_ids
        self.info = info

    @classmethod
    def build(
        cls,
        docs: CoilVectors,
        doc_ids: list[str],
        spec: str = "exact",
        model: dict | None = None,
        aggregation: str = "sum",
        doc_aggregation: str = "max",
    ) -> CoilIndex:
        """Index encoded documents (in the order of `doc_ids`); `spec` must be `exact`."""
        if spec != "exact":
            raise LirError(f"{spec!r} is not a COIL index spec (exact: inverted lists, exact scores)")
        check_aggregations(aggregation, doc_aggregation)
        check_offsets(docs.offsets, len(docs.vectors), "token")
        doc_ids = check_doc_ids(doc_ids, len(docs), "documents")
        if not (np.isfinite(docs.cls).all() and np.isfinite(docs.vectors).all()):
            raise LirError("COIL vectors hold NaN or infinite values")
        postings = Postings.build(docs)
        info = {
            "format": FORMAT,
            "version": 1,
            "spec": spec,
            "metric": "coil",
            "aggregation": aggregation,
            "doc_aggregation": doc_aggregation,
            "dim": int(docs.vectors.shape[1]),
            "cls_dim": int(docs.cls.shape[1]),
            "count": len(doc_ids),
            "tokens": len(docs.vectors),
            "model": model or {},
        }
        return cls(np.ascontiguousarray(docs.cls, dtype=np.float32), postings, doc_ids, info)

    def set_search_parameters(self, spec: str) -> None:
        """A COIL index is exact: it has no search parameters."""
        if parse_parameters(spec):
            raise LirError(f"{spec!r}: an exact COIL index has no search parameters")

    def search(self, queries: CoilVectors, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [Q, k'] (k' = min(k, count)) and doc ids per query, best first."""
        if queries.cls.shape[1:] != self.cls.shape[1:] or queries.vectors.shape[1:] != (self.info["dim"],):
            raise LirError(
                f"query vectors of dims {queries.cls.shape[1:]}, {queries.vectors.shape[1:]} do not fit an index of "
                f"cls dim {self.info['cls_dim']} and token dim {self.info['dim']}"
            )
        k = min(int(k), len(self.doc_ids))
        aggregations = self.info["aggregation"], self.info["doc_aggregation"]
        scores = np.full((len(queries), max(k, 0)), -np.inf, np.float32)
        ids = []
        for i in range(len(queries)):
            query_cls, token_ids, vectors = queries.row(i)
            row = self.cls @ query_cls.astype(np.float32) + self.postings.token_scores(
                token_ids, vectors, *aggregations
            )
            row = row.astype(np.float32)
            rows = top_k(row, k)
            scores[i, : len(rows)] = row[rows]
            ids.append([self.doc_ids[r] for r in rows])
        return scores, ids

    def _array(self, attribute: str) -> np.ndarray:
        return self.cls if attribute == "cls" else getattr(self.postings, attribute)

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder atomically (see the module)."""
        writers = {name: write_array(self._array(attribute)) for name, (attribute, _, _) in ARRAYS.items()}
        return save_index_folder(directory, self.info, writers | {IDS_FILE: write_doc_ids(self.doc_ids)}, overwrite)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> CoilIndex:
        """Read an index folder (arrays memory-mapped); with `verify`, a corrupted file is refused."""
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, (*ARRAYS, IDS_FILE), verify=verify)
        check_aggregations(info.get("aggregation"), info.get("doc_aggregation"))
        arrays = {attribute: load_array(folder, name, dtype, ndim) for name, (attribute, dtype, ndim) in ARRAYS.items()}
        count, tokens = info.get("count", -1), info.get("tokens", -1)
        if (
            arrays["cls"].shape != (count, info.get("cls_dim"))
            or arrays["vectors"].shape != (tokens, info.get("dim"))
            or len(arrays["doc_rows"]) != tokens
            or len(arrays["doc_lengths"]) != count
            or len(arrays["list_offsets"]) != len(arrays["list_ids"]) + 1
        ):
            raise LirError(f"{folder}: arrays that do not fit its index.json")
        check_offsets(arrays["list_offsets"], tokens, f"{folder} inverted list")
        cls_vectors = arrays.pop("cls")
        return cls(cls_vectors, Postings(**arrays), read_doc_ids(folder, count), info)
