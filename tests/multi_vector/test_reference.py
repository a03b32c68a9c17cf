"""Lightning IR 0.0.6 `col` (ColConfig: ColBERT-style late interaction), built, saved and scored by
Lightning IR itself: lir loads each folder, scores the same texts in PyTorch and through its export (embedded
onnxruntime), and must agree (relative difference ≤ 1e-4, same ranking) — or refuse the checkpoint in one
line naming what it does not implement. Never an approximation.

Every case is compared in PyTorch; the cases of `EXPORTED` (one per graph shape) also through the export in
`make test`, every case with `make verify-reference` (LIR_FULL_REFERENCE=1)."""

from __future__ import annotations

import pytest

from tests.reference import check_case

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
    "col-doc-expansion": ("ColConfig", {"doc_expansion": True}, "doc_expansion"),
    "col-query-max": ("ColConfig", {"query_aggregation_function": "max"}, "aggregation 'max'"),
    "col-doc-sum": ("ColConfig", {"doc_aggregation_function": "sum"}, "doc_aggregation_function"),
}

EXPORTED = {"col-webis", "col-colbertv2"}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    config, options, refused = CASES[case]
    check_case(config, options, refused, False, case in EXPORTED, reference_backbone, tmp_path, scifact)
