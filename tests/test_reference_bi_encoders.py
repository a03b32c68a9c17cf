"""Bi-encoders of every Lightning IR 0.0.6 model type, built, saved and scored by Lightning IR itself: lir
loads each folder, scores the same texts in PyTorch and through its export (embedded onnxruntime), and
must agree (relative difference ≤ 1e-4, same ranking) — or refuse the checkpoint in one line naming what it
does not implement. Never an approximation.

Every case is compared in PyTorch; the cases of `EXPORTED` (one per graph shape) also through the export in
`make test`, every case with `make verify-reference` (LIR_FULL_REFERENCE=1)."""

from __future__ import annotations

import pytest

from tests.reference import check_case

CASES = {
    # lir-dpr (DprConfig): what 0.0.6 reads is pooling_strategy (default mean), projection, `normalize`
    "dpr-default": ("DprConfig", {}, None),
    "dpr-first": ("DprConfig", {"pooling_strategy": "first"}, None),
    "dpr-max": ("DprConfig", {"pooling_strategy": "max"}, None),
    "dpr-sum": ("DprConfig", {"pooling_strategy": "sum"}, None),
    "dpr-no-projection": ("DprConfig", {"projection": None}, None),
    "dpr-no-bias": ("DprConfig", {"projection": "linear_no_bias"}, None),
    "dpr-normalize": ("DprConfig", {"normalize": True}, None),
    "dpr-strategy-l2-ignored": ("DprConfig", {"normalization_strategy": "l2"}, None),
    "dpr-per-role-pooling-ignored": ("DprConfig", {"query_pooling_strategy": "max"}, None),
    "dpr-cosine": ("DprConfig", {"similarity_function": "cosine"}, None),
    "dpr-markers": ("DprConfig", {"add_marker_tokens": True}, None),
    "dpr-sparsified": ("DprConfig", {"sparsification_strategy": "relu"}, "sparsified"),
    "dpr-l2-distance": ("DprConfig", {"similarity_function": "l2"}, "similarity"),
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
    "col-doc-expansion": ("ColConfig", {"doc_expansion": True}, "doc_expansion"),
    "col-query-max": ("ColConfig", {"query_aggregation_function": "max"}, "aggregation 'max'"),
    "col-doc-sum": ("ColConfig", {"doc_aggregation_function": "sum"}, "doc_aggregation_function"),
    # splade (SpladeConfig), saved in 0.0.6's own layout (projection.predictions.*)
    "splade-default": ("SpladeConfig", {}, None),
    "splade-relu": ("SpladeConfig", {"sparsification_strategy": "relu"}, None),
    "splade-relu-2xlog": ("SpladeConfig", {"sparsification_strategy": "relu_2xlog"}, None),
    "splade-sum": ("SpladeConfig", {"pooling_strategy": "sum"}, None),
    "splade-mean": ("SpladeConfig", {"pooling_strategy": "mean"}, None),
    "splade-markers": ("SpladeConfig", {"add_marker_tokens": True}, None),
    "splade-l2-ignored": ("SpladeConfig", {"normalization_strategy": "l2"}, None),
    "splade-first": ("SpladeConfig", {"pooling_strategy": "first"}, None),
    "splade-no-query-expansion": ("SpladeConfig", {"query_expansion": False}, None),
    "splade-no-doc-expansion": ("SpladeConfig", {"doc_expansion": False, "add_marker_tokens": True}, None),
    # inference-free: static query weights (may be negative), no model call for queries
    "splade-static-query": ("SpladeConfig", {"query_expansion": False, "query_weighting": "static"}, None),
    "splade-static-query-markers": (
        "SpladeConfig",
        {"query_expansion": False, "query_weighting": "static", "add_marker_tokens": True, "query_length": 8},
        None,
    ),
    "splade-static-doc": ("SpladeConfig", {"doc_expansion": False, "doc_weighting": "static"}, None),
    "splade-static-query-expansion-ignored": ("SpladeConfig", {"query_weighting": "static"}, None),
    "splade-bag-of-words-query": ("SpladeConfig", {"query_expansion": False, "query_weighting": None}, None),
    "splade-no-sparsification": ("SpladeConfig", {"sparsification_strategy": None}, "sparsification_strategy null"),
    "splade-cosine": ("SpladeConfig", {"similarity_function": "cosine"}, "cosine"),
    # unicoil (UniCoilConfig): relu impacts scattered into the vocabulary (a repeated token: its last weight)
    "unicoil": ("UniCoilConfig", {}, None),
    "unicoil-no-bias": ("UniCoilConfig", {"projection": "linear_no_bias"}, None),
    "unicoil-markers": ("UniCoilConfig", {"add_marker_tokens": True}, None),
    "unicoil-cosine": ("UniCoilConfig", {"similarity_function": "cosine"}, "cosine"),
}


EXPORTED = {
    "dpr-default",
    "dpr-sum",
    "dpr-markers",
    "col-webis",
    "col-colbertv2",
    "splade-default",
    "splade-mean",
    "splade-no-doc-expansion",
    "splade-static-query",
    "splade-static-doc",
    "unicoil",
}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    config, options, refused = CASES[case]
    check_case(config, options, refused, False, case in EXPORTED, reference_backbone, tmp_path, scifact)
