"""Multi-vector and sparse retrieval on real data: the exported model searched in exact mode ranks
exactly like a PyTorch brute-force reference (every query's top 10, same order, same scores).

Models are MiniLM-initialized with a random projection (ColBERT) or MLM head (SPLADE): trained
effectiveness comes with the trainer. The collection is a fixed SciFact subset (tests/subsets.py: 50 test
queries over their 49 judged documents and 100 others; SPLADE's vocabulary-wide head makes every document
cost twice a MiniLM pass, in PyTorch and in onnxruntime); `make verify-late` runs the same tests over the
whole of SciFact test (300 queries, 5,183 documents; LIR_FULL_SCIFACT=1).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, build_index
from lir.metrics import evaluate
from lir.train.module import BiEncoderModule
from tests.subsets import scifact_subset

TOP = 10


@pytest.fixture(scope="module")
def subset(scifact):
    if os.environ.get("LIR_FULL_SCIFACT") == "1":
        return scifact_subset(scifact, n_queries=300, n_others=None)
    return scifact_subset(scifact, n_others=100)


def pytorch_top(checkpoint, queries: dict[str, str], docs: dict[str, str]) -> dict[str, list[tuple[str, float]]]:
    """Brute force in PyTorch: every query against every document with the model's own similarity."""
    module = BiEncoderModule(str(checkpoint))
    doc_ids = list(docs)
    scores = module.score_matrix([queries[q] for q in queries], [docs[d] for d in doc_ids])
    top = torch.topk(scores, TOP, dim=1)
    return {
        qid: [(doc_ids[i], float(s)) for i, s in zip(top.indices[row].tolist(), top.values[row], strict=True)]
        for row, qid in enumerate(queries)
    }


@pytest.fixture(scope="module")
def colbert_docs(minilm_colbert, subset):
    """The subset's documents encoded once by the exported ColBERT (embedded engine)."""
    with OnnxEngine(minilm_colbert[1]) as engine:
        return engine.encode_docs(list(subset[1].values()))


@pytest.fixture(scope="module")
def splade_docs(minilm_splade, subset):
    """The subset's documents encoded once by the exported SPLADE (embedded engine)."""
    with OnnxEngine(minilm_splade[1]) as engine:
        return engine.encode_docs(list(subset[1].values()))


def lir_run(export, queries, docs, encoded=None, spec: str | None = None, params: str | None = None):
    with OnnxEngine(export) as engine:
        encoded = encoded if encoded is not None else engine.encode_docs(list(docs.values()))
        index = build_index(engine, encoded, list(docs), spec)
        if params:
            index.set_search_parameters(params)
        return Retriever(engine, index).search(queries, k=100)


def assert_same_top(run, reference) -> None:
    for qid, expected in reference.items():
        got = list(run[qid].items())[:TOP]
        assert [d for d, _ in got] == [d for d, _ in expected], qid
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fixture", ["minilm_colbert", "minilm_splade"])
def test_exact_search_ranks_like_pytorch_brute_force(fixture, subset, request):
    checkpoint, export = request.getfixturevalue(fixture)
    queries, docs, qrels = subset
    reference = pytorch_top(checkpoint, queries, docs)
    encoded = request.getfixturevalue("colbert_docs" if fixture == "minilm_colbert" else "splade_docs")
    run = lir_run(export, queries, docs, encoded)
    assert_same_top(run, reference)
    ours = evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]
    theirs = evaluate({q: dict(top) for q, top in reference.items()}, qrels, ["nDCG@10"])["nDCG@10"]
    assert ours == pytest.approx(theirs, abs=1e-3)


def recall_at_top(approximate, exact) -> float:
    return float(np.mean([len(set(list(exact[q])[:TOP]) & set(list(approximate[q])[:TOP])) / TOP for q in exact]))


def test_approximate_multi_vector_search_keeps_recall(minilm_colbert, subset, colbert_docs):
    queries, docs, _ = subset
    exact = lir_run(minilm_colbert[1], queries, docs, colbert_docs)
    approximate = lir_run(minilm_colbert[1], queries, docs, colbert_docs, "IVF256,Flat")
    assert recall_at_top(approximate, exact) >= 0.95


def test_seismic_keeps_recall_and_ndcg_on_real_splade_vectors(minilm_splade, subset, splade_docs):
    queries, docs, qrels = subset
    exact = lir_run(minilm_splade[1], queries, docs, splade_docs)
    approximate = lir_run(minilm_splade[1], queries, docs, splade_docs, "seismic")
    assert recall_at_top(approximate, exact) >= 0.95
    ours, reference = evaluate(approximate, qrels, ["nDCG@10"]), evaluate(exact, qrels, ["nDCG@10"])
    assert ours["nDCG@10"] == pytest.approx(reference["nDCG@10"], abs=0.005)
