"""Lightning IR 0.0.6 `col` (ColConfig: ColBERT-style late interaction), built, saved and scored by
Lightning IR itself: lir loads each folder, scores the same texts in PyTorch and through its export (embedded
onnxruntime), and must agree (relative difference ≤ 1e-4, same ranking) — or refuse the checkpoint in one
line naming what it does not implement. Never an approximation.

Every case is compared in PyTorch; the cases of `EXPORTED` (one per graph shape) also through the export in
`make test`, every case with `make verify-reference` (LIR_FULL_REFERENCE=1)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import DOCS, QUERIES, assert_refused, build, check_case, reference_scores, relative_difference

CASES = {
    # col (ColConfig)
    "col-default": ("ColConfig", {}, None),
    "col-query-expansion": ("ColConfig", {"query_expansion": True}, None),
    "col-query-expansion-attended": (
        "ColConfig",
        {"query_expansion": True, "attend_to_query_expanded_tokens": True},
        None,
    ),
    "col-punctuation": ("ColConfig", {"doc_mask_scoring_tokens": "punctuation"}, None),
    "col-query-mask": ("ColConfig", {"query_mask_scoring_tokens": ["?"]}, None),
    "col-mean": ("ColConfig", {"query_aggregation_function": "mean"}, None),
    "col-l2": ("ColConfig", {"normalization_strategy": "l2"}, None),
    "col-no-bias": ("ColConfig", {"projection": "linear_no_bias"}, None),
    "col-markers": ("ColConfig", {"add_marker_tokens": True}, None),
    "col-cosine": ("ColConfig", {"similarity_function": "cosine"}, None),
    "col-webis": (
        "ColConfig",
        {
            "query_expansion": True,
            "attend_to_query_expanded_tokens": True,
            "doc_mask_scoring_tokens": "punctuation",
            "query_aggregation_function": "mean",
            "projection": "linear_no_bias",
        },
        None,
    ),
    "col-colbertv2": (
        "ColConfig",
        {
            "query_expansion": True,
            "add_marker_tokens": True,
            "normalization_strategy": "l2",
            "doc_mask_scoring_tokens": "punctuation",
            "doc_length": 184,
            "projection": "linear_no_bias",
        },
        None,
    ),
    "col-doc-expansion": ("ColConfig", {"doc_expansion": True}, None),
    "col-doc-expansion-attended": ("ColConfig", {"doc_expansion": True, "attend_to_doc_expanded_tokens": True}, None),
    "col-doc-expansion-truncated": ("ColConfig", {"doc_expansion": True, "doc_length": 8}, None),
    "col-query-max": ("ColConfig", {"query_aggregation_function": "max"}, None),
    "col-doc-sum": ("ColConfig", {"doc_aggregation_function": "sum"}, None),
    "col-doc-mean": ("ColConfig", {"doc_aggregation_function": "mean", "doc_mask_scoring_tokens": "punctuation"}, None),
    "col-both-expanded": (
        "ColConfig",
        {
            "query_expansion": True,
            "doc_expansion": True,
            "attend_to_doc_expanded_tokens": True,
            "add_marker_tokens": True,
            "normalization_strategy": "l2",
            "query_aggregation_function": "max",
            "doc_aggregation_function": "mean",
            "doc_length": 24,
        },
        None,
    ),
    "col-l2-similarity": ("ColConfig", {"similarity_function": "l2"}, "similarity 'l2'"),
}

EXPORTED = {"col-webis", "col-colbertv2", "col-both-expanded", "col-doc-sum"}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    config, options, refused = CASES[case]
    check_case(config, options, refused, False, case in EXPORTED, reference_backbone, tmp_path, scifact)


def test_index_search_scores_like_lightning_ir(reference_backbone, tmp_path, scifact):
    """The exact index serves every aggregation: searching the export of a col with expanded documents, max
    over query tokens and mean over document tokens gives each query Lightning IR's score of every document;
    token search (Faiss) and PLAID, which find MaxSim's candidates, refuse it in one line."""
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.retriever import build_index
    from lir.export.bundle import export_model

    corpus = [d for ds in DOCS for d in ds]
    options = dict(CASES["col-both-expanded"][1])
    module = build(reference_backbone, tmp_path / "checkpoint", "ColConfig", options)
    expected = reference_scores(module, QUERIES, [corpus] * len(QUERIES)).reshape(len(QUERIES), len(corpus))
    directory = export_model(
        str(tmp_path / "checkpoint"), tmp_path / "repo", "col", parity_data=str(scifact), log=lambda _: None
    )
    engine = OnnxEngine(directory)
    assert (engine.aggregation, engine.doc_aggregation) == ("max", "mean")
    docs, ids = engine.encode_docs(corpus), [f"d{i}" for i in range(len(corpus))]
    scores, found = build_index(engine, docs, ids).search(engine.encode_queries(QUERIES), k=len(corpus))
    by_id = np.array([[scores[q][found[q].index(f"d{d}")] for d in range(len(corpus))] for q in range(len(QUERIES))])
    assert relative_difference(by_id, expected) <= 1e-4, (by_id, expected)
    for spec in ("IVF2,Flat", "plaid"):
        assert_refused(lambda spec=spec: build_index(engine, docs, ids, spec), "doc aggregation 'mean'")


def test_a_texts_own_mask_token_scores_like_lightning_ir(reference_backbone, tmp_path):
    """Expanded, unattended queries and documents whose text holds `[MASK]` itself: that token is attended
    (only the expansion is not), as Lightning IR tokenizes it."""
    from lir.train.module import BiEncoderModule

    docs = [["Paris [MASK] the capital of France.", "[MASK] tower"], ["plants [MASK] food", "cats sleep"]]
    queries = ["what [MASK] the capital of france?", "how do plants make food"]
    module = build(
        reference_backbone, tmp_path / "checkpoint", "ColConfig", {"query_expansion": True, "doc_expansion": True}
    )
    expected = reference_scores(module, queries, docs)
    ours = BiEncoderModule(str(tmp_path / "checkpoint"))
    found = np.concatenate([ours.score(q, d).scores.float().numpy() for q, d in zip(queries, docs, strict=True)])
    assert relative_difference(found, expected) <= 1e-4, (found, expected)
