"""Length-bucketed batching: sort by length so that each batch pads as little as possible."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> Iterator[np.ndarray]:
    """Indices of batches, longest texts first; a batch holds at most `batch_size` texts and
    (when set) at most `max_tokens` padded tokens."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]]) or 1
        size = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // longest))
        yield order[start : start + size]
        start += size
