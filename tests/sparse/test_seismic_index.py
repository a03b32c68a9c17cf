"""The Seismic sparse index (pyseismic-lsr, real) against the exact inverted index: recall, scores, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lir.clients.seismic_index as seismic_module
from lir.clients.indexes import open_index
from lir.clients.seismic_index import SeismicIndex
from lir.clients.sparse_index import SparseIndex
from lir.errors import LirError
from lir.vectors import SparseVectors, sparse_dot
from tests.test_indexes import random_sparse

VOCAB = 2000


@pytest.fixture(scope="module")
def collection() -> tuple[SparseVectors, SparseVectors, list[str]]:
    docs = random_sparse(3000, VOCAB, 60)
    queries = random_sparse(40, VOCAB, 12, seed=1)
    return docs, queries, [f"d{i}" for i in range(3000)]


@pytest.fixture(scope="module")
def seismic(collection) -> SeismicIndex:
    docs, _, ids = collection
    return SeismicIndex.build(docs, ids, "seismic,n_postings=400", model={"model": "splade"})


def row(vectors: SparseVectors, i: int) -> SparseVectors:
    a, b = vectors.offsets[i], vectors.offsets[i + 1]
    return SparseVectors(vectors.term_ids[a:b], vectors.weights[a:b], np.array([0, b - a]), vectors.dim)


def test_recall_against_exact_search_and_exact_scores(collection, seismic):
    docs, queries, ids = collection
    _, truth = SparseIndex.build(docs, ids).search(queries, k=10)
    scores, found = seismic.search(queries, k=10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall
    for q in range(len(found)):  # every score it returns is the document's dot product (float16 weights)
        reference = sparse_dot(queries.row(q), docs)[[int(d[1:]) for d in found[q]]]
        np.testing.assert_allclose(scores[q, : len(found[q])], reference, rtol=2e-3, atol=1e-4)
        assert list(scores[q, : len(found[q])]) == sorted(scores[q, : len(found[q])], reverse=True)


def test_a_batch_answers_each_query_as_alone(collection, seismic):
    _, queries, _ = collection
    scores, found = seismic.search(queries, k=5)
    for q in range(len(found)):
        one_scores, one = seismic.search(row(queries, q), k=5)
        assert one[0] == found[q]
        np.testing.assert_array_equal(one_scores[0], scores[q])


def test_search_parameters_trade_recall(collection, seismic):
    docs, queries, ids = collection
    _, truth = SparseIndex.build(docs, ids).search(queries, k=10)

    def recall(params: str) -> float:
        seismic.set_search_parameters(params)
        found = seismic.search(queries, k=10)[1]
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))

    try:
        assert recall("query_cut=1,heap_factor=0.1") < recall("query_cut=30,heap_factor=1")
    finally:
        seismic.search_parameters = dict(seismic_module.SEARCH_DEFAULTS)
    with pytest.raises(LirError, match="'nprobe' is not a Seismic search parameter"):
        seismic.set_search_parameters("nprobe=4")
    with pytest.raises(LirError, match="heap_factor must be a positive number"):
        seismic.set_search_parameters("heap_factor=-1")


def test_unsorted_rows_and_repeated_terms_are_taken_as_the_exact_index_takes_them(collection):
    docs, queries, ids = collection
    n = 300
    part = SparseVectors(
        docs.term_ids[: docs.offsets[n]], docs.weights[: docs.offsets[n]], docs.offsets[: n + 1], VOCAB
    )
    lengths = np.diff(part.offsets)
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(n), lengths)
    order = np.lexsort((rng.random(len(rows)), rows))  # terms shuffled in each row
    terms, weights = part.term_ids[order], part.weights[order]
    split = np.concatenate([weights / 2, weights / 2])  # each weight as two postings of half of it
    doubled = SparseVectors(
        np.concatenate([terms, terms])[np.argsort(np.r_[rows, rows], kind="stable")],
        split[np.argsort(np.r_[rows, rows], kind="stable")],
        part.offsets * 2,
        VOCAB,
    )
    a = SeismicIndex.build(part, ids[:n]).search(queries, k=10)
    b = SeismicIndex.build(doubled, ids[:n]).search(queries, k=10)
    assert a[1] == b[1]
    np.testing.assert_allclose(a[0], b[0], rtol=1e-3)


def test_round_trip_corruption_and_version(tmp_path, collection, seismic, monkeypatch):
    _, queries, _ = collection
    seismic.save(tmp_path / "se")
    assert {p.name for p in (tmp_path / "se").iterdir()} == {"seismic.index.seismic", "doc_ids.json", "index.json"}
    loaded = open_index(tmp_path / "se")
    assert isinstance(loaded, SeismicIndex) and loaded.info["model"] == {"model": "splade"}
    expected, again = seismic.search(queries, k=10), loaded.search(queries, k=10)
    assert again[1] == expected[1]
    np.testing.assert_array_equal(again[0], expected[0])
    monkeypatch.setattr(seismic_module, "version", lambda name: "9.9.9")
    with pytest.raises(LirError, match=r"built with pyseismic-lsr 0\.5\.\d+, this is 9\.9\.9: rebuild"):
        SeismicIndex.load(tmp_path / "se")
    monkeypatch.undo()
    data = bytearray((tmp_path / "se" / "seismic.index.seismic").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "se" / "seismic.index.seismic").write_bytes(bytes(data))
    with pytest.raises(LirError, match="does not match its checksum"):
        SeismicIndex.load(tmp_path / "se")
    info = json.loads((tmp_path / "se" / "index.json").read_text())
    assert info["format"] == "lir-seismic-index" and info["build_parameters"]["n_postings"] == 400


def test_bad_input_is_refused_in_one_line(collection):
    docs, queries, ids = collection
    with pytest.raises(LirError, match="is not a Seismic index spec"):
        SeismicIndex.build(docs, ids, "seismik")
    with pytest.raises(LirError, match="'nlist' is not a Seismic build parameter"):
        SeismicIndex.build(docs, ids, "seismic,nlist=4")
    with pytest.raises(LirError, match="n_postings must be a positive integer"):
        SeismicIndex.build(docs, ids, "seismic,n_postings=0.5")
    negative = SparseVectors(docs.term_ids, -docs.weights, docs.offsets, VOCAB)
    with pytest.raises(LirError, match="nonnegative document weights"):
        SeismicIndex.build(negative, ids)
    zero = SparseVectors(docs.term_ids, 0 * docs.weights, docs.offsets, VOCAB)
    with pytest.raises(LirError, match="no document has a nonzero term weight"):
        SeismicIndex.build(zero, ids)
    with pytest.raises(LirError, match="doc ids for"):
        SeismicIndex.build(docs, ids[:-1])
    wide = SparseVectors(queries.term_ids, queries.weights, queries.offsets, VOCAB + 1)
    small = SeismicIndex.build(row(docs, 1), ["one"])
    with pytest.raises(LirError, match="do not fit an index of 2000 terms"):
        small.search(wide)


def test_edge_cases(collection):
    docs, queries, ids = collection
    index = SeismicIndex.build(row(docs, 1), ["one"])
    scores, found = index.search(queries, k=10)  # k beyond the corpus: k' = 1
    assert scores.shape == (len(found), 1)
    empty = SparseVectors(np.empty(0, np.int32), np.empty(0, np.float32), np.array([0, 0]), VOCAB)
    scores, found = index.search(empty, k=3)
    assert found == [[]] and np.isneginf(scores).all()
