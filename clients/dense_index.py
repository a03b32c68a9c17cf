"""Faiss dense index with its doc ids, saved atomically with checksums and verified on load.

The index type is a Faiss factory string: `Flat` (exact, the default), `HNSW32`, `IVF1024,Flat`, ...
Scores are inner products: cosine models export L2-normalized embeddings, so this is exact cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before Faiss loads: see lir.clients.indexes

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from lir.clients.indexes import (  # noqa: E402
    IDS_FILE,
    INFO_FILE,
    check_doc_ids,
    read_doc_ids,
    read_index_info,
    save_index_folder,
    write_doc_ids,
)
from lir.errors import LirError  # noqa: E402

INDEX_FILE = "index.faiss"
FORMAT = "lir-dense-index"
__all__ = ["DenseIndex", "FORMAT", "IDS_FILE", "INDEX_FILE", "INFO_FILE"]


@dataclass
class DenseIndex:
    """A Faiss index, the doc id of each row, and what built it."""

    index: faiss.Index
    doc_ids: list[str]
    info: dict[str, Any]
    FORMAT: ClassVar[str] = FORMAT

    @classmethod
    def build(
        cls, embeddings: np.ndarray, doc_ids: list[str], factory: str = "Flat", model: dict[str, str] | None = None
    ) -> DenseIndex:
        """Index `embeddings` (rows in the order of `doc_ids`) with a Faiss factory string."""
        if embeddings.ndim != 2 or len(embeddings) != len(doc_ids):
            raise LirError(f"{len(doc_ids)} doc ids for embeddings of shape {embeddings.shape}")
        doc_ids = check_doc_ids(doc_ids, len(embeddings), "embeddings")
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        try:
            index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError:
            raise LirError(
                f"{factory!r} is not a Faiss index factory string (e.g. Flat, HNSW32, IVF1024,Flat)"
            ) from None
        if not index.is_trained:
            try:
                index.train(vectors)
            except RuntimeError as exc:
                raise LirError(
                    f"cannot train {factory!r} on {len(vectors)} vectors ({str(exc).strip().splitlines()[-1]})"
                ) from None
        index.add(vectors)
        info = {
            "format": FORMAT,
            "version": 1,
            "factory": factory,
            "metric": "inner_product",
            "dim": int(vectors.shape[1]),
            "count": len(doc_ids),
            "model": model or {},
        }
        return cls(index, list(doc_ids), info)

    def set_search_parameters(self, spec: str) -> None:
        """Faiss search parameters as a spec string, e.g. `nprobe=16` (IVF) or `efSearch=128` (HNSW)."""
        try:
            faiss.ParameterSpace().set_index_parameters(self.index, spec)
        except RuntimeError:
            raise LirError(f"{spec!r} are not search parameters of a {self.info['factory']!r} index") from None

    def search(self, queries: np.ndarray, k: int = 100) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [Q, k'] and doc ids per query (k' = min(k, count))."""
        if queries.ndim != 2 or queries.shape[1] != self.info["dim"]:
            raise LirError(f"query embeddings of shape {queries.shape} do not fit an index of dim {self.info['dim']}")
        k = min(k, len(self.doc_ids))
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        ids = [[self.doc_ids[r] for r in row if r >= 0] for row in rows]
        return scores, ids

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the index folder atomically: index, doc ids, and info with their checksums."""
        writers = {
            INDEX_FILE: lambda path: faiss.write_index(self.index, str(path)),
            IDS_FILE: write_doc_ids(self.doc_ids),
        }
        return save_index_folder(directory, self.info, writers, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> DenseIndex:
        """Read an index folder; with `verify`, a file that does not match its checksum is refused."""
        folder = Path(directory)
        info = read_index_info(folder, FORMAT, (INDEX_FILE, IDS_FILE), verify=verify)
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as exc:
            raise LirError(f"{folder} cannot be read ({str(exc).strip().splitlines()[-1]})") from None
        doc_ids = read_doc_ids(folder, index.ntotal)
        if index.d != info.get("dim"):
            raise LirError(f"{folder}: vectors of dim {index.d} but index.json records dim {info.get('dim')}")
        return cls(index, doc_ids, info)
