"""Lightning IR 0.0.6 `lir-dpr` (DprConfig), built, saved and scored by Lightning IR itself: lir loads each
folder, scores the same texts in PyTorch and through its export (embedded onnxruntime), and must agree
(relative difference ≤ 1e-4, same ranking) — or refuse the checkpoint in one line naming what it does not
implement. Never an approximation.

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
}

EXPORTED = {"dpr-default", "dpr-sum", "dpr-markers"}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    config, options, refused = CASES[case]
    check_case(config, options, refused, False, case in EXPORTED, reference_backbone, tmp_path, scifact)
