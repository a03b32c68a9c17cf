"""Lightning IR 0.0.6 `coil` (a [CLS] vector plus token vectors matched on equal token ids), built, saved and
scored by Lightning IR itself: lir loads each folder and scores alike in PyTorch and through its export
(relative difference ≤ 1e-4, same ranking), indexes and searches alike from the command line, or refuses the
checkpoint in one line naming the option.

The cases of `EXPORTED` go through the export in `make test`, every case with `make verify-reference`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lir.coil import CoilVectors, Postings, coil_scores
from tests.reference import DOCS, QUERIES, build, check_case, reference_scores, relative_difference, same_ranking

CASES = {
    "coil-default": ({}, None),
    "coil-dims": ({"token_embedding_dim": 8, "cls_embedding_dim": 16}, None),
    "coil-no-bias": ({"projection": "linear_no_bias"}, None),
    "coil-markers": ({"add_marker_tokens": True}, None),
    "coil-cosine": ({"similarity_function": "cosine"}, None),
    "coil-query-mean": ({"query_aggregation_function": "mean"}, None),
    "coil-query-max": ({"query_aggregation_function": "max"}, None),
    "coil-doc-sum": ({"doc_aggregation_function": "sum"}, None),
    "coil-doc-mean": ({"doc_aggregation_function": "mean"}, None),
    "coil-doc-punctuation": ({"doc_mask_scoring_tokens": "punctuation"}, None),
    "coil-l2-ignored": ({"normalization_strategy": "l2"}, None),  # CoilModel.encode never normalizes
    "coil-l2-distance": ({"similarity_function": "l2"}, "similarity 'l2'"),
}
EXPORTED = {"coil-default", "coil-cosine"}


@pytest.mark.parametrize("case", list(CASES))
def test_lir_scores_coil_like_lightning_ir(case, reference_backbone, tmp_path, scifact):
    options, refused = CASES[case]
    check_case("CoilConfig", options, refused, False, case in EXPORTED, reference_backbone, tmp_path, scifact)


def _texts(*rows: tuple[list[float], list[int], list[list[float]]]) -> CoilVectors:
    return CoilVectors.from_rows([(np.array(c), np.array(i), np.array(v)) for c, i, v in rows], 1, 1)


def test_unmatched_pairs_count_zero_not_missing():
    """A query token whose only match is negative scores 0 in a document with other tokens (the unmatched
    pairs are 0 under max), its negative similarity in a document of nothing else; no match at all gives 0."""
    query = _texts(([1.0], [7, 9], [[1.0], [2.0]]))
    docs = _texts(([0.5], [7, 3], [[-1.0], [4.0]]), ([0.0], [7], [[-1.0]]), ([1.0], [3], [[5.0]]))
    assert coil_scores(query, docs).tolist() == [[0.5, -1.0, 1.0]]
    assert coil_scores(query, docs, "sum", "sum").tolist() == [[-0.5, -1.0, 1.0]]
    assert coil_scores(query, docs, "mean", "mean").tolist() == [[0.25, -0.5, 1.0]]
    assert Postings.build(docs).list_ids.tolist() == [3, 7]


def lir(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_index_and_search_score_like_lightning_ir(reference_backbone, tmp_path, scifact):
    """`lir index` (COIL's inverted lists plus every document's cls vector) and `lir search` on the export of a
    coil with markers and small dimensions, and re-ranking with the PyTorch engine: every query's scores of
    every document are Lightning IR's."""
    from lir.clients.reranker import Reranker
    from lir.export.bundle import export_model
    from lir.train.torch_engine import TorchEngine
    from lir.trec import read_run

    corpus = [d for ds in DOCS for d in ds] + ["Paris? Paris! plants, plants."]
    options = {"add_marker_tokens": True, "token_embedding_dim": 8, "cls_embedding_dim": 16}
    module = build(reference_backbone, tmp_path / "checkpoint", "CoilConfig", options)
    expected = reference_scores(module, QUERIES, [corpus] * len(QUERIES)).reshape(len(QUERIES), len(corpus))
    directory = export_model(
        str(tmp_path / "checkpoint"), tmp_path / "repo", "coil", parity_data=str(scifact), log=lambda _: None
    )
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\t{doc}\n" for i, doc in enumerate(corpus)))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(QUERIES)))
    files = {name: str(tmp_path / name) for name in ("corpus.tsv", "queries.tsv", "index", "run")}
    lir("index", "--engine", str(directory), "--corpus", files["corpus.tsv"], "--output", files["index"])
    lir("search", "--index", files["index"], "--queries", files["queries.tsv"], "--output", files["run"], "-k", "9")
    run = read_run(files["run"])
    found = np.array([[run[f"q{q}"][f"d{d}"] for d in range(len(corpus))] for q in range(len(QUERIES))])
    assert relative_difference(found, expected) <= 1e-4, (found, expected)
    assert same_ranking(found.ravel(), expected.ravel(), per_query=len(corpus)), (found, expected)
    torch_engine = TorchEngine(str(tmp_path / "checkpoint"))
    reranked = np.stack(Reranker(torch_engine).score_lists(QUERIES, [corpus] * len(QUERIES)))
    assert relative_difference(reranked, expected) <= 1e-4, (reranked, expected)
