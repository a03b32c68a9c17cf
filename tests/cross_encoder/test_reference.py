"""Cross-encoders of Lightning IR 0.0.6 (`mono`, `set-encoder`), built, saved and scored by Lightning IR
itself: lir loads each folder and must score the same pairs alike in PyTorch and through its export
(relative difference ≤ 1e-4, same ranking), or refuse in one line naming what it does not implement.

Every case is compared in PyTorch; the cases of `EXPORTED` also through the export in `make test`, every
case with `make verify-reference` (LIR_FULL_REFERENCE=1). Set-encoders are built with
`sample_missing_docs=False`: Lightning IR otherwise adds random documents to every candidate list.

monoT5 / RankT5 are `mono` on a tiny tied-embedding T5 (Lightning IR's MonoT5Model: one decoder step, head
`linear(state · d_model^-0.5)`). With the hub-style head (`linear` = rows of `shared`), Lightning IR's score
is the seq2seq model's own, so lir's export of the backbone as a `T5ForConditionalGeneration` scores alike."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.reference import (
    DOCS,
    QUERIES,
    assert_refused,
    build,
    build_t5_mono,
    check_case,
    check_module,
    check_t5_case,
    reference_scores,
)
from tests.t5_builders import t5_cross_encoder_dir

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
    # Lightning IR's default sample_missing_docs=True draws random stand-ins for a query's documents short of
    # `depth`; with every query at depth (2 documents each here) nothing is drawn and the scores are lir's
    "set-encoder-sampling-at-depth": ("SetEncoderConfig", {"depth": 2, "pooling_strategy": "mean"}, None),
    "set-encoder-short": ("SetEncoderConfig", LISTWISE | {"query_length": 4, "doc_length": 6, "depth": 8}, None),
}
EXPORTED = {"mono-rank", "mono-bert-pool", "set-encoder-extra-token"}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    config, options, refused = CASES[case]
    check_case(config, options, refused, True, case in EXPORTED, reference_backbone, tmp_path, scifact)


T5_CASES = {
    "t5-rank": ({}, None),
    "t5-mono": ({"scoring_strategy": "mono"}, None),
    "t5-bias": ({"scoring_strategy": "mono", "linear_bias": True}, None),
    "t5-mean": ({"pooling_strategy": "mean"}, None),
    "t5-max": ({"pooling_strategy": "max"}, None),
    "t5-sum": ({"pooling_strategy": "sum"}, None),  # the one decoder state times the pair's length
    "t5-short": ({"query_length": 4, "doc_length": 6}, None),
    "t5-unlimited": ({"query_length": None, "doc_length": None}, None),
    "t5-bert-pool": ({"pooling_strategy": "bert_pool"}, "'bert_pool' on a T5 backbone is not supported"),
}
T5_EXPORTED = {"t5-mono"}
HUB_HEADS = {"mono": ("▁false", "▁true"), "rank": ("<extra_id_10>",)}
"""The rows of `shared` Lightning IR's hub mappings copy into `linear` for castorini's monoT5 and RankT5."""


@pytest.mark.parametrize("case", list(T5_CASES))
def test_lir_scores_t5_like_lightning_ir(case, reference_t5_backbone, tmp_path, scifact):
    options, refused = T5_CASES[case]
    check_t5_case(options, refused, case in T5_EXPORTED, reference_t5_backbone, tmp_path, scifact)


@pytest.mark.parametrize("scoring", ["mono", "rank"])
def test_hub_style_t5_head_scores_as_the_seq2seq_model(scoring, reference_t5_backbone, tmp_path, scifact):
    """linear = shared rows: Lightning IR's score, lir's load of its save and lir's seq2seq monoT5/RankT5 of
    the backbone (T5ForConditionalGeneration) agree, in PyTorch and (mono) through the seq2seq export."""
    from lir.train.cross_module import CrossEncoderModule

    checkpoint = tmp_path / "checkpoint"
    options = {"scoring_strategy": scoring, "query_length": None, "doc_length": None}  # the hub configs
    expected = reference_scores(build_t5_mono(reference_t5_backbone, checkpoint, options, HUB_HEADS[scoring]))
    lightning_ir = CrossEncoderModule(str(checkpoint))
    seq2seq = CrossEncoderModule(str(reference_t5_backbone), t5_scoring=scoring)
    queries = [q for q, docs in zip(QUERIES, DOCS, strict=True) for _ in docs]
    docs = [d for texts in DOCS for d in texts]
    np.testing.assert_allclose(lightning_ir.score_pairs(queries, docs), seq2seq.score_pairs(queries, docs), atol=1e-6)
    check_module(lightning_ir, expected, False, tmp_path / "lightning-ir", scifact)  # exported: case t5-mono
    check_module(seq2seq, expected, scoring == "mono", tmp_path / "seq2seq", scifact)


def test_untied_t5_keeps_the_rescaling(tmp_path, scifact):
    """On an untied T5 v1.1-like backbone (gated GELU, own LM head) Lightning IR still scales the state by
    d_model^-0.5 before `linear`; lir does as it does."""
    from lir.train.cross_module import CrossEncoderModule

    backbone = t5_cross_encoder_dir(tmp_path / "backbone", tied=False, t5_splits=True)
    checkpoint = tmp_path / "checkpoint"
    expected = reference_scores(build_t5_mono(backbone, checkpoint, {"scoring_strategy": "mono"}))
    check_module(CrossEncoderModule(str(checkpoint)), expected, False, tmp_path, scifact)


def test_t5_refusals(reference_t5_backbone, tmp_path):
    """What lir does not load from a T5 backbone, in one line each: a set-encoder (Lightning IR itself builds
    none), a vocabulary that lacks a template piece (the default tiny one has `▁Query`, not `Query`: Lightning
    IR feeds <unk> in its place) and one that splits a template part into other pieces."""
    from lir.train.cross_module import CrossEncoderModule

    with pytest.raises(ValueError, match="does not support backbone model type t5"):
        build(reference_t5_backbone, tmp_path / "set-encoder", "SetEncoderConfig", {}, cross=True)
    checkpoint = tmp_path / "mono"
    build_t5_mono(reference_t5_backbone, checkpoint, {})

    def edited(name: str, file: str, change) -> str:
        copy = shutil.copytree(checkpoint, tmp_path / name)
        (copy / file).write_text(json.dumps(change(json.loads((copy / file).read_text()))))
        return str(copy)

    set_encoder = edited("set-encoder-t5", "config.json", lambda config: config | {"model_type": "set-encoder"})
    assert_refused(lambda: CrossEncoderModule(set_encoder), "'set-encoder' on a T5 backbone is not supported")
    with_piece = edited("query-piece", "tokenizer.json", lambda file: _with_piece(file, "▁Query"))
    assert_refused(lambda: CrossEncoderModule(with_piece), r"splits 'Query:' into \['▁Query', ':'\], not into")
    lacking = tmp_path / "no-query-piece"
    build_t5_mono(t5_cross_encoder_dir(tmp_path / "backbone"), lacking, {})
    assert_refused(lambda: CrossEncoderModule(str(lacking)), "lacks 'Query', which Lightning IR's T5 template")


def _with_piece(tokenizer: dict, piece: str) -> dict:
    """tokenizer.json with one more Unigram piece (the best-scored)."""
    return tokenizer | {"model": tokenizer["model"] | {"vocab": [*tokenizer["model"]["vocab"], [piece, 0.0]]}}
