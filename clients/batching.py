"""Length-bucketed batching: sort by length so that each batch pads as little as possible."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

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


def group_numbers(keys: Sequence[Hashable]) -> np.ndarray:
    """0, 1, 2, … for the distinct keys in order of first appearance: [N] int64."""
    numbers: dict[Hashable, int] = {}
    return np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=np.int64)


def group_members(groups: np.ndarray) -> list[np.ndarray]:
    """The indices of each group's items (in input order), groups by ascending number."""
    order = np.argsort(groups, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(groups[order])) + 1) if len(order) else []


def group_batches(
    lengths: Sequence[int], groups: np.ndarray, batch_size: int, max_tokens: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of whole groups (listwise scoring), groups with the longest members first: (indices, group
    ids renumbered 0..k-1 within the batch). A batch holds at most `batch_size` items and `max_tokens`
    padded tokens unless one group alone is larger: a group is never split."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    members = group_members(groups)
    members.sort(key=lambda rows: -int(lengths[rows].max()))
    batch: list[np.ndarray] = []
    count, widest = 0, 1
    for rows in members:  # longest first: the first group of a batch sets its padded width
        total = count + len(rows)
        if batch and (total > batch_size or (max_tokens is not None and total * widest > max_tokens)):
            yield _numbered(batch)
            batch, count = [], 0
        if not batch:
            widest = max(int(lengths[rows].max()), 1)
        batch.append(rows)
        count += len(rows)
    if batch:
        yield _numbered(batch)


def _numbered(batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([np.full(len(rows), number, np.int64) for number, rows in enumerate(batch)])
    return np.concatenate(batch), ids
