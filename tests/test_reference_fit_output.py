"""The other direction: what lir writes (`lir fit`'s checkpoints, Lightning IR's layout) loads in Lightning
IR 0.0.6 and scores there as it scores in lir, for each family lir trains.

Lightning IR 0.0.6 drops `embedding_dim` when it loads a config and uses its default (the hidden size for
lir-dpr, 128 for col), so these models keep those sizes; a `bert_pool` mono save does not reload in it
(transformers 4.57 skips weights whose names start with `bert`), so mono uses first-token pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference import check_against, lightning_ir, reference_scores

NEW_MODELS = {
    "dpr": {"model_type": "lir-dpr"},
    "dpr-first-normalize-cosine-no-bias": {
        "model_type": "lir-dpr",
        "pooling_strategy": "first",
        "normalize": True,
        "similarity_function": "cosine",
        "projection": "linear_no_bias",
    },
    "dpr-no-projection": {"model_type": "lir-dpr", "projection": None, "add_marker_tokens": True},
    "col": {"model_type": "col"},
    "col-webis": {
        "model_type": "col",
        "projection": "linear_no_bias",
        "query_expansion": True,
        "attend_to_query_expanded_tokens": True,
        "doc_mask_scoring_tokens": "punctuation",
    },
    "col-l2-mean": {"model_type": "col", "normalization_strategy": "l2", "query_aggregation_function": "mean"},
    "splade": {"model_type": "splade"},
    "splade-static-query": {"model_type": "splade", "query_weighting": "static", "query_expansion": False},
    "mono": {"model_type": "mono", "scoring_strategy": "mono", "linear_bias": True},
    "mono-mean": {"model_type": "mono", "pooling_strategy": "mean"},
}
"""New models as `lir fit` starts them (Lightning IR's keys; the rest Lightning IR 0.0.6's defaults)."""


@pytest.mark.parametrize("kind", list(NEW_MODELS))
def test_what_lir_writes_scores_alike_in_lightning_ir(kind, reference_backbone, tmp_path):
    from lir.train.cross_module import CrossEncoderModule
    from lir.train.initialize import initialize
    from lir.train.module import BiEncoderModule
    from lir.train.saving import save_lightning_ir
    from tests.reference import DOCS, QUERIES, SPLADE_BIAS_SHIFT

    torch.manual_seed(0)
    loaded = initialize(str(reference_backbone), NEW_MODELS[kind])
    if kind.startswith("splade"):  # sparse like a trained SPLADE (see tests.reference)
        with torch.no_grad():
            loaded.model.head.bias.uniform_(-0.5, 0.5).sub_(SPLADE_BIAS_SHIFT)
            for table in loaded.model.static_weights.values():  # a table of ones would hide a misplaced row
                table.uniform_(0.1, 2.0)
    directory = save_lightning_ir(loaded.model, loaded.tokenizer, tmp_path / kind)
    cross = kind.startswith("mono")
    ours = (CrossEncoderModule if cross else BiEncoderModule)(str(directory))
    rows = [ours.score(query, docs).scores.float().numpy() for query, docs in zip(QUERIES, DOCS, strict=True)]
    li = lightning_ir()
    theirs = (li.CrossEncoderModule if cross else li.BiEncoderModule)(model_name_or_path=str(directory)).eval()
    check_against(reference_scores(theirs), np.concatenate(rows))


@pytest.mark.parametrize(
    ("config", "options"),
    [
        ("SpladeConfig", {"query_weighting": "static", "query_expansion": False}),
        ("SpladeConfig", {"doc_expansion": False, "add_marker_tokens": True}),
        ("UniCoilConfig", {"add_marker_tokens": True}),
        ("CoilConfig", {"add_marker_tokens": True, "cls_embedding_dim": 16, "similarity_function": "cosine"}),
        (
            "ColConfig",
            {
                "doc_expansion": True,
                "attend_to_doc_expanded_tokens": True,
                "doc_length": 24,
                "query_aggregation_function": "max",
                "doc_aggregation_function": "mean",
            },
        ),
    ],
    ids=[
        "splade-static-query",
        "splade-no-doc-expansion-markers",
        "unicoil-markers",
        "coil-markers-cosine",
        "col-doc-expansion-max-mean",
    ],
)
def test_a_lightning_ir_save_written_back_by_lir_scores_alike(config, options, reference_backbone, tmp_path):
    """A Lightning IR model whose settings lir's own training does not start (SPLADE with static query weights
    or without document expansion, UniCOIL, COIL, col with document expansion and other aggregations) written back
    by lir keeps its settings and tables: Lightning IR scores lir's save as it scored its own."""
    from lir.train.module import BiEncoderModule
    from lir.train.saving import save_lightning_ir
    from tests.reference import build

    expected = reference_scores(build(reference_backbone, tmp_path / "theirs", config, options))
    loaded = BiEncoderModule(str(tmp_path / "theirs")).loaded
    directory = save_lightning_ir(loaded.model, loaded.tokenizer, tmp_path / "ours")
    theirs = lightning_ir().BiEncoderModule(model_name_or_path=str(directory)).eval()
    check_against(expected, reference_scores(theirs))
