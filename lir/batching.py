"""Length-bucketed batching: sort by length so that each batch pads as little as possible; listwise
cross-encoders keep each group of pairs whole. `score_pair_batches` is the one loop that scores pairs in such
batches, whatever runs the scorer (PyTorch, an ONNX graph, an engine).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np

from lir.errors import LirError
from lir.tokenization import PairEncoder


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


def pair_groups(queries: Sequence[object], groups: Sequence[Hashable] | None) -> np.ndarray:
    """Group numbers of pairs: of `groups`, or of the query texts when none are given: [N] int64."""
    if groups is not None and len(groups) != len(queries):
        raise LirError(f"{len(groups)} group ids for {len(queries)} pairs: give one per pair")
    return group_numbers(queries if groups is None else groups)


def score_pair_batches(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    pairs: PairEncoder,
    encoded: Sequence[tuple[list[int], list[int]]],
    groups: np.ndarray | None,
    batch_size: int,
    max_tokens: int | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> np.ndarray:
    """float32 [N] scores of encoded pairs in input order: `run` scores one padded batch (the scorer's
    inputs); batches are length-sorted, and whole groups (`groups`, needed only then, renumbered per batch and
    fed as `groups`) when the pair rules are listwise. `on_batch` hears each batch's size (progress)."""
    lengths = [len(ids) for ids, _ in encoded]
    if pairs.pair.listwise:
        if groups is None:
            raise LirError("a listwise model scores groups of pairs: give their group ids")
        batches: Iterator[tuple[np.ndarray, np.ndarray | None]] = group_batches(lengths, groups, batch_size, max_tokens)
    else:
        batches = ((rows, None) for rows in length_batches(lengths, batch_size, max_tokens))
    scores = np.empty(len(encoded), np.float32)
    for rows, numbers in batches:
        feeds = pairs.batch([encoded[i] for i in rows])
        if numbers is not None:
            feeds["groups"] = numbers
        scores[rows] = run(feeds)
        if on_batch is not None:
            on_batch(len(rows))
    return scores
