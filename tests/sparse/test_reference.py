"""Lightning IR 0.0.6 `splade` (SpladeConfig, in 0.0.6's own layout) and `unicoil` (UniCoilConfig), built,
saved and scored by Lightning IR itself: lir loads each folder, scores the same texts in PyTorch and through
its export (embedded onnxruntime), and must agree (relative difference ≤ 1e-4, same ranking) — or refuse the
checkpoint in one line naming what it does not implement. Never an approximation.

Every case is compared in PyTorch; the cases of `EXPORTED` (one per graph shape) also through the export in
`make test`, every case with `make verify-reference` (LIR_FULL_REFERENCE=1)."""

from __future__ import annotations

import pytest

from tests.reference import check_case

CASES = {
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
