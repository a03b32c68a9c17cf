"""A fixed, fast SciFact subset: 50 test queries over their judged documents plus 1,000 others."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lir.collections import iter_docs, read_qrels_spec, read_queries


def scifact_subset(scifact: Path, n_queries: int = 50, n_others: int | None = 1000, seed: int = 0):
    """(queries, docs, qrels) of the subset (`n_others=None`: every document); deterministic."""
    queries = read_queries(str(scifact), "test")
    qrels = read_qrels_spec(str(scifact), "test")
    docs = dict(iter_docs(str(scifact)))
    chosen = sorted(queries)[:n_queries]
    judged = sorted({d for q in chosen for d in qrels[q]})
    others = sorted(set(docs) - set(judged))
    if n_others is None:
        picked = sorted(docs)
    else:
        picked = sorted(judged + list(np.random.default_rng(seed).choice(others, n_others, replace=False)))
    return {q: queries[q] for q in chosen}, {d: docs[d] for d in picked}, {q: qrels[q] for q in chosen}
