"""PLAID on real ColBERT token vectors (the exported MiniLM ColBERT, random 128-d projection, on a fixed
SciFact subset: 50 test queries over their 49 judged documents and 100 others), held against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, build_index
from lir.metrics import evaluate
from tests.subsets import scifact_subset

TOP = 10


@pytest.fixture(scope="module")
def runs(minilm_colbert, scifact):
    """The subset's qrels and its top 100 per query by exact search and by PLAID (vectors kept, exact
    re-scoring; then 2-bit re-scoring), documents encoded once, the PLAID index built once."""
    queries, docs, qrels = scifact_subset(scifact, n_others=100)
    with OnnxEngine(minilm_colbert[1]) as engine:
        encoded = engine.encode_docs(list(docs.values()))
        found = {"exact": Retriever(engine, build_index(engine, encoded, list(docs))).search(queries, k=100)}
        plaid = build_index(engine, encoded, list(docs), "plaid,vectors=fp16")
        for name, params in (("plaid", "ncells=8,ndocs=1024"), ("decompressed", "rescore=decompressed")):
            plaid.set_search_parameters(params)  # the second keeps ncells and ndocs of the first
            found[name] = Retriever(engine, plaid).search(queries, k=100)
    return qrels, found


def recall_at_top(approximate, exact) -> float:
    return float(np.mean([len(set(list(exact[q])[:TOP]) & set(list(approximate[q])[:TOP])) / TOP for q in exact]))


def test_plaid_with_exact_rescoring_keeps_recall_and_ndcg(runs):
    qrels, found = runs
    assert recall_at_top(found["plaid"], found["exact"]) >= 0.95
    ours, reference = (evaluate(found[name], qrels, ["nDCG@10"])["nDCG@10"] for name in ("plaid", "exact"))
    assert ours == pytest.approx(reference, abs=0.005)


def test_two_bit_rescoring_is_recorded_as_lower(runs):
    """2-bit scores reorder the close top-10 scores of real vectors: recall is lower, and stays measured."""
    _, found = runs
    assert 0.6 <= recall_at_top(found["decompressed"], found["exact"]) <= recall_at_top(found["plaid"], found["exact"])
