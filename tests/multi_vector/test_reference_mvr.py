"""Lightning IR 0.0.6 `mvr` (multi-view: n viewer tokens per document), built, saved and scored by Lightning IR
itself: lir loads each folder, tokenizes the same ids, scores alike in PyTorch and through its export
(relative difference ≤ 1e-4, same ranking), indexes, searches and re-ranks alike from the command line, writes
an mvr that Lightning IR reloads — or refuses the checkpoint in one line naming the option.

The cases of `EXPORTED` go through the export in `make test`, every case with `make verify-reference`."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

from lir.errors import LirError
from lir.manifest import TextRules, typed
from tests.reference import (
    DOCS,
    QUERIES,
    build,
    check_against,
    check_case,
    lightning_ir,
    reference_scores,
    relative_difference,
    same_ranking,
)

CASES = {
    "mvr-default": ({}, None),
    "mvr-3-views": ({"num_viewer_tokens": 3}, None),
    "mvr-1-view": ({"num_viewer_tokens": 1}, None),
    "mvr-l2": ({"normalization_strategy": "l2"}, None),
    "mvr-no-projection": ({"projection": None}, None),
    "mvr-no-bias": ({"projection": "linear_no_bias"}, None),
    "mvr-markers": ({"add_marker_tokens": True, "num_viewer_tokens": 3}, None),
    "mvr-cosine": ({"similarity_function": "cosine"}, None),
    "mvr-query-max-moot": ({"query_aggregation_function": "max"}, None),  # one query vector: nothing to aggregate
    "mvr-sparsification-ignored": ({"sparsification_strategy": "relu"}, None),  # MvrModel.encode never applies it
    "mvr-doc-sum": ({"doc_aggregation_function": "sum"}, None),
    "mvr-doc-mean": ({"doc_aggregation_function": "mean", "num_viewer_tokens": 3}, None),
    "mvr-l2-distance": ({"similarity_function": "l2"}, "similarity"),
}
EXPORTED = {"mvr-default", "mvr-doc-mean"}
LONG_DOC = "plants " * 40


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_mvr_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    options, refused = CASES[case]
    check_case("MvrConfig", options, refused, False, case in EXPORTED, reference_backbone, tmp_path, scifact)


@pytest.mark.parametrize("markers", [False, True])
def test_token_ids_equal_lightning_ir(markers, reference_backbone, tmp_path):
    """[CLS] ([QUE]) q [SEP] and [CLS] ([DOC]) [VIE0..n-1] text [SEP], truncated to doc_length with the viewer
    tokens counted: the ids Lightning IR's own tokenizer gives."""
    from lir.train.module import BiEncoderModule

    options = {"num_viewer_tokens": 3, "doc_length": 16, "add_marker_tokens": markers}
    module = build(reference_backbone, tmp_path / "checkpoint", "MvrConfig", options)
    docs = [d for ds in DOCS for d in ds] + [LONG_DOC]
    encoded = module.tokenizer.tokenize(QUERIES, docs, return_tensors="pt", padding=True, truncation=True)
    ours = BiEncoderModule(str(tmp_path / "checkpoint"))
    for role, texts in (("query", QUERIES), ("doc", docs)):
        encoding = encoded[f"{role}_encoding"]
        pairs = zip(encoding.input_ids, encoding.attention_mask, strict=True)
        theirs = [ids[mask.bool()].tolist() for ids, mask in pairs]
        assert ours.tokenize(texts, role) == theirs, role
    assert max(len(ids) for ids in ours.tokenize(docs, "doc")) == 16


def test_text_rules_take_a_list_of_markers():
    rules = TextRules(16, marker=["[DOC]", "[VIE0]"])
    assert typed(TextRules, asdict(rules)).markers == ["[DOC]", "[VIE0]"]
    assert typed(TextRules, {"max_length": 8, "marker": "[DOC]"}).markers == ["[DOC]"]
    with pytest.raises(LirError, match="TextRules.marker"):
        typed(TextRules, {"max_length": 8, "marker": [30522]})


def lir(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_index_search_rerank_score_like_lightning_ir(reference_backbone, tmp_path, scifact):
    """`lir index` (exact MaxSim over the views), `lir search` and `lir rerank` on the export of an mvr with
    markers and 3 views ([DOC] [VIE0] [VIE1] score): every query's scores of every document are Lightning IR's."""
    from lir.export.bundle import export_model
    from lir.manifest import load_manifest
    from lir.trec import read_run

    corpus = [d for ds in DOCS for d in ds]
    options = {"num_viewer_tokens": 3, "add_marker_tokens": True}
    module = build(reference_backbone, tmp_path / "checkpoint", "MvrConfig", options)
    expected = reference_scores(module, QUERIES, [corpus] * len(QUERIES)).reshape(len(QUERIES), len(corpus))
    directory = export_model(
        str(tmp_path / "checkpoint"), tmp_path / "repo", "mvr", parity_data=str(scifact), log=lambda _: None
    )
    assert load_manifest(directory).doc.markers == ["[DOC]", "[VIE0]", "[VIE1]", "[VIE2]"]
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\t{doc}\n" for i, doc in enumerate(corpus)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(QUERIES)))
    files = {name: str(tmp_path / name) for name in ("corpus.tsv", "queries.tsv", "index", "run", "reranked")}
    lir("index", "--engine", str(directory), "--corpus", files["corpus.tsv"], "--output", files["index"])
    lir("search", "--index", files["index"], "--queries", files["queries.tsv"], "--output", files["run"], "-k", "4")
    lir(
        "rerank", "--engine", str(directory), "--run", files["run"], "--queries", files["queries.tsv"],
        "--docs", files["corpus.tsv"], "--output", files["reranked"],
    )  # fmt: skip
    for name in ("run", "reranked"):
        run = read_run(files[name])
        found = np.array([[run[f"q{q}"][f"d{d}"] for d in range(len(corpus))] for q in range(len(QUERIES))])
        assert relative_difference(found, expected) <= 1e-4, (name, found, expected)
        assert same_ranking(found.ravel(), expected.ravel(), per_query=len(corpus)), (name, found, expected)


def test_a_fine_tuned_mvr_saves_as_mvr_and_reloads_in_lightning_ir(reference_backbone, tmp_path):
    """`lir fit` on an mvr checkpoint: after a training step its save (Lightning IR's mvr layout) loads back in
    lir as the same model and scores alike in 0.0.6."""
    import torch

    from lir.train.checkpoints import load_model
    from lir.train.data import RankSample
    from lir.train.fit_module import BiEncoderFitModule
    from lir.train.module import BiEncoderModule

    build(reference_backbone, tmp_path / "checkpoint", "MvrConfig", {"num_viewer_tokens": 3, "add_marker_tokens": True})
    module = BiEncoderFitModule(str(tmp_path / "checkpoint"))
    samples = [
        RankSample(str(i), q, (), tuple(d), (1.0, 0.0)) for i, (q, d) in enumerate(zip(QUERIES, DOCS, strict=True))
    ]
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.loss(module.collator(samples)).backward()
    optimizer.step()
    module.model.eval()
    saved = load_model(str(module.save_pretrained(tmp_path / "written")))
    assert type(saved.model) is type(module.model) and saved.model.config == module.model.config
    ours = BiEncoderModule(saved)
    rows = [ours.score(query, docs).scores.float().numpy() for query, docs in zip(QUERIES, DOCS, strict=True)]
    theirs = lightning_ir().BiEncoderModule(model_name_or_path=str(tmp_path / "written")).eval()
    check_against(reference_scores(theirs), np.concatenate(rows))
