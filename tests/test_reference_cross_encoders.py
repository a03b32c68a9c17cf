"""Cross-encoders of Lightning IR 0.0.6 (`mono`, `set-encoder`), built, saved and scored by Lightning IR
itself: lir loads each folder and must score the same pairs alike in PyTorch and through its export
(relative difference ≤ 1e-4, same ranking), or refuse in one line naming what it does not implement.

Every case is compared in PyTorch; the cases of `EXPORTED` also through the export in `make test`, every
case with `make verify-reference` (LIR_FULL_REFERENCE=1). Set-encoders are built with
`sample_missing_docs=False`: Lightning IR otherwise adds random documents to every candidate list."""

from __future__ import annotations

import pytest

from tests.reference import check_case

LISTWISE = {"sample_missing_docs": False}
CASES = {
    "mono-rank": ("MonoConfig", {}, None),
    "mono-mono": ("MonoConfig", {"scoring_strategy": "mono"}, None),
    "mono-bias": ("MonoConfig", {"linear_bias": True}, None),
    "mono-mean": ("MonoConfig", {"pooling_strategy": "mean"}, None),
    "mono-max": ("MonoConfig", {"pooling_strategy": "max"}, None),
    "mono-sum": ("MonoConfig", {"pooling_strategy": "sum"}, None),
    "mono-bert-pool": ("MonoConfig", {"pooling_strategy": "bert_pool"}, None),
    "mono-short": ("MonoConfig", {"query_length": 4, "doc_length": 6}, None),
    "set-encoder": ("SetEncoderConfig", LISTWISE, None),
    "set-encoder-mono": ("SetEncoderConfig", LISTWISE | {"scoring_strategy": "mono"}, None),
    "set-encoder-extra-token": ("SetEncoderConfig", LISTWISE | {"add_extra_token": True}, None),
}
EXPORTED = {"mono-rank", "mono-bert-pool", "set-encoder-extra-token"}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    config, options, refused = CASES[case]
    check_case(config, options, refused, True, case in EXPORTED, reference_backbone, tmp_path, scifact)
