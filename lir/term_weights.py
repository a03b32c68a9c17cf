"""Sparse roles encoded without a graph: Lightning IR's `static` (inference-free) and unweighted roles.

A text's terms are its own distinct tokens (taken without special tokens); each weighs its entry of a
[vocabulary] float32 table, or 1 without one. `TermTable.run` gives what a sparse encoder graph gives
(`term_ids` and `weights`, zero weight = no term), so engines and the server treat such a role like any.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lir.errors import LirError
from lir.files import confined, sha256_file
from lir.manifest import Manifest, TermWeights


class TermTable:
    """The term weights of one role: a [vocabulary] table, or None (every term weighs 1)."""

    def __init__(self, table: np.ndarray | None, dim: int) -> None:
        if table is not None and (table.dtype != np.float32 or table.shape != (dim,)):
            raise LirError(f"term weights must be float32 [{dim}], not {table.dtype} {list(table.shape)}")
        if table is not None and not np.isfinite(table).all():
            raise LirError("term weights hold NaN or infinite values")
        self.table, self.dim = table, dim

    @classmethod
    def from_manifest(cls, directory: str | Path, manifest: Manifest, role: str) -> TermTable:
        """The table of `role` of an exported model directory, its checksum verified."""
        weights: TermWeights = manifest.term_weights[role]
        if weights.file is None:
            return cls(None, manifest.embedding_dim)
        path = confined(directory, weights.file, "term weights file")
        if not path.is_file():
            raise LirError(f"term weights file {path} is missing")
        if sha256_file(path) != weights.sha256:
            raise LirError(f"term weights file {path} does not match its checksum in the manifest (corrupted?)")
        try:
            table = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise LirError(f"term weights file {path} cannot be read ({str(exc).splitlines()[0]})") from None
        return cls(table, manifest.embedding_dim)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """[B, L] ids and mask → `term_ids` and `weights` [B, L]: each distinct attended token once."""
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= self.dim):
            raise LirError(f"token ids outside the vocabulary of {self.dim} terms")
        weights = np.ones(input_ids.shape, np.float32) if self.table is None else self.table[input_ids]
        keep = attention_mask.astype(bool)
        for row, ids in enumerate(input_ids):
            first = np.zeros(len(ids), bool)
            first[np.unique(np.where(keep[row], ids, -1), return_index=True)[1]] = True
            keep[row] &= first
        return {"term_ids": input_ids.astype(np.int64), "weights": np.where(keep, weights, 0).astype(np.float32)}
