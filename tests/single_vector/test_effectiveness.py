"""Effectiveness on real data, fast: a fixed SciFact subset (50 test queries over their 49 judged documents
and 300 others: 349 documents).

The reference figures were measured with sentence-transformers 5.7 (PyTorch, exact cosine search, max length
256) on the same subset (tests/subsets.py): nDCG@10 0.8276, R@100 0.98 (on 1,049 documents: nDCG@10 0.7556).
The full collection's 0.6451 is reproduced by `make demo`.
"""

from __future__ import annotations

import pytest

from lir.clients.dense_index import DenseIndex
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever
from lir.metrics import evaluate
from tests.subsets import scifact_subset

REFERENCE = {"nDCG@10": 0.8276, "R@100": 0.98}


@pytest.fixture(scope="module")
def subset(scifact):
    return scifact_subset(scifact, n_others=300)


# fp32 must rank like PyTorch; int8 may lose up to one point of nDCG@10 and one judged document in 50 queries
TOLERANCE = {"fp32": {"nDCG@10": 0.001, "R@100": 0.001}, "int8": {"nDCG@10": 0.01, "R@100": 0.025}}


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_minilm_reaches_the_reference_on_the_scifact_subset(minilm_export, subset, variant):
    queries, docs, qrels = subset
    engine = OnnxEngine(minilm_export, variant=variant)
    index = DenseIndex.build(engine.encode_docs(list(docs.values())), list(docs), model=engine.fingerprint)
    results = evaluate(Retriever(engine, index).search(queries, k=100), qrels, list(REFERENCE))
    for measure, expected in REFERENCE.items():
        if variant == "fp32":
            assert results[measure] == pytest.approx(expected, abs=TOLERANCE[variant][measure]), (variant, results)
        else:  # a quantized model may rank a few documents differently, for better or worse
            assert results[measure] >= expected - TOLERANCE[variant][measure], (variant, results)
