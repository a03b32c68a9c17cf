"""The PLAID index against exact MaxSim (`MultiVectorIndex`), on ColBERT-like clustered token vectors, with
real Faiss k-means."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before Faiss loads: see tests/test_indexes.py

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lir.clients.multi_vector_index import MultiVectorIndex  # noqa: E402
from lir.clients.plaid_index import PlaidIndex, default_centroids  # noqa: E402
from lir.errors import LirError  # noqa: E402
from lir.vectors import MultiVectors, maxsim  # noqa: E402
from tests.test_indexes import clustered, recall  # noqa: E402

DIM = 64


@pytest.fixture(scope="module")
def colbert():
    docs, queries = clustered(1500, 40, DIM, 40)  # documents d0-d2 have no tokens
    return docs, queries, [f"d{i}" for i in range(len(docs))]


@pytest.fixture(scope="module")
def exact(colbert):
    docs, queries, ids = colbert
    return MultiVectorIndex.build(docs, ids).search(queries, k=10)


@pytest.fixture(scope="module")
def plaid(colbert):
    docs, _, ids = colbert
    return PlaidIndex.build(docs, ids, model={"model": "colbert"})


def exact_scores(queries: MultiVectors, docs: MultiVectors, ids: list[str], found: list[list[str]], agg="sum"):
    """MaxSim of each query with its found documents, as the exact index scores them."""
    rows = {doc_id: i for i, doc_id in enumerate(ids)}
    return [
        maxsim(queries[q], MultiVectors.from_list([docs[rows[d]] for d in found[q]], DIM), agg)
        for q in range(len(queries))
    ]


def relative_errors(scores: np.ndarray, reference: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.abs(s[: len(r)] - r) / np.abs(r) for s, r in zip(scores, reference, strict=True)])


def test_defaults_keep_recall_and_scores(colbert, exact, plaid):
    docs, queries, ids = colbert
    assert plaid.info["nbits"] == 2 and plaid.info["centroids"] == default_centroids(len(docs.vectors))
    assert plaid.info["model"] == {"model": "colbert"} and plaid.info["tokens"] == len(docs.vectors)
    assert plaid.info["size_bytes"] < plaid.info["fp16_bytes"] / 2
    scores, found = plaid.search(queries, k=10)
    assert scores.shape == (40, 10) and recall(found, exact[1]) >= 0.95
    errors = relative_errors(scores, exact_scores(queries, docs, ids, found))
    assert np.median(errors) < 0.015 and errors.max() < 0.05  # 2 bits per dimension


def test_four_bits_scores_are_close(colbert, exact):
    docs, queries, ids = colbert
    index = PlaidIndex.build(docs, ids, "plaid,nbits=4,centroids=512")
    assert index.info["nbits"] == 4 and index.info["centroids"] == 512
    scores, found = index.search(queries, k=10)
    assert recall(found, exact[1]) >= 0.95
    errors = relative_errors(scores, exact_scores(queries, docs, ids, found))
    assert np.median(errors) < 0.005 and errors.max() < 0.02


def test_mean_aggregation_and_no_pruning_equal_exact_ranking(colbert):
    docs, queries, ids = colbert
    exact_scores_, truth = MultiVectorIndex.build(docs, ids, aggregation="mean").search(queries, k=10)
    index = PlaidIndex.build(docs, ids, "plaid,nbits=4,centroids=512", aggregation="mean")
    index.set_search_parameters("ncells=512,ndocs=100000,centroid_score_threshold=-inf")  # every document
    scores, found = index.search(queries, k=10)
    assert recall(found, truth) >= 0.97
    np.testing.assert_allclose(scores, exact_scores_, rtol=0.02)
    errors = relative_errors(scores, exact_scores(queries, docs, ids, found, "mean"))
    assert np.median(errors) < 0.01


def test_kept_vectors_rescore_exactly(tmp_path, colbert):
    """vectors=fp16: the survivors are scored by exact MaxSim on float16 vectors (as `exact,fp16` scores them),
    on held-out queries; the vectors are memory-mapped and checksummed like every array."""
    docs, queries, ids = colbert
    more = clustered(1500, 40, DIM, 80)[1]  # the same documents; queries 40-79 are used by no other test
    held_out = MultiVectors(more.vectors[more.offsets[40] :], more.offsets[40:] - more.offsets[40])
    exact_scores_, truth = MultiVectorIndex.build(docs, ids, "exact,fp16").search(held_out, k=10)
    index = PlaidIndex.build(docs, ids, "plaid,centroids=256,vectors=fp16")
    assert index.info["vectors"] == "fp16" and index.search_parameters["rescore"] == "exact"
    assert index.info["size_bytes"] > index.info["fp16_bytes"]
    index.set_search_parameters("ncells=8,ndocs=1024")
    scores, found = index.search(held_out, k=10)
    assert recall(found, truth) >= 0.98
    fp16 = MultiVectors(docs.vectors.astype(np.float16).astype(np.float32), docs.offsets)
    errors = relative_errors(scores, exact_scores(held_out, fp16, ids, found))
    assert errors.max() < 1e-5
    index.set_search_parameters("rescore=decompressed")
    assert index.search(held_out, k=10)[1] != found  # 2-bit scores reorder some near ties
    index.save(tmp_path / "plaid")
    loaded = PlaidIndex.load(tmp_path / "plaid")
    assert isinstance(loaded.vectors, np.memmap) and loaded.search_parameters["rescore"] == "exact"
    loaded.set_search_parameters("ncells=8,ndocs=1024")
    np.testing.assert_array_equal(loaded.search(held_out, k=10)[0], scores)
    with open(tmp_path / "plaid/vectors.npy", "r+b") as handle:
        handle.seek(-1, 2)
        byte = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(LirError, match=r"vectors.npy does not match its checksum: the index is corrupted$"):
        PlaidIndex.load(tmp_path / "plaid")
    with pytest.raises(LirError, match="overflow float16"):
        PlaidIndex.build(MultiVectors(docs.vectors * 1e6, docs.offsets), ids, "plaid,centroids=16,vectors=fp16")


def test_empty_documents_and_queries_score_zero():
    docs, queries = clustered(60, 8, 16, 2, seed=3)  # documents d0-d2 have no tokens
    docs = MultiVectors(np.abs(docs.vectors), docs.offsets)  # a query of negative values scores below 0
    ids = [f"d{i}" for i in range(len(docs))]
    exact = MultiVectorIndex.build(docs, ids)
    index = PlaidIndex.build(docs, ids, "plaid,nbits=4")
    opposite = MultiVectors(-docs.vectors[:4], np.array([0, 4]))
    no_tokens = MultiVectors(np.zeros((0, 16), np.float32), np.zeros(2, np.int64))
    for query in (opposite, no_tokens):
        scores, found = index.search(query, k=3)
        assert found == exact.search(query, k=3)[1] == [["d0", "d1", "d2"]] and not scores.any()
    scores, found = index.search(MultiVectors(queries.vectors, queries.offsets), k=100)  # k > the 60 documents
    assert scores.shape == (2, 60) and all(len(set(f)) == len(f) <= 60 for f in found)
    assert all(
        np.isneginf(s[len(f) :]).all() and np.isfinite(s[: len(f)]).all() for s, f in zip(scores, found, strict=True)
    )
    index.set_search_parameters(f"ncells={index.info['centroids']},ndocs=1000,centroid_score_threshold=-inf")
    assert sorted(index.search(queries, k=100)[1][0]) == sorted(ids)


def test_no_tokens_at_all():
    docs = MultiVectors(np.zeros((0, 8), np.float32), np.zeros(4, np.int64))
    index = PlaidIndex.build(docs, ["a", "b", "c"])
    assert index.info["centroids"] == 0
    scores, found = index.search(MultiVectors(np.ones((2, 8), np.float32), np.array([0, 2])), k=2)
    assert found == [["a", "b"]] and not scores.any()


def test_round_trip_and_corruption(tmp_path, colbert, plaid):
    _, queries, _ = colbert
    plaid.set_search_parameters("ncells=2,ndocs=128")
    before = plaid.search(queries, k=10)
    plaid.save(tmp_path / "plaid")
    loaded = PlaidIndex.load(tmp_path / "plaid")
    assert isinstance(loaded.residuals, np.memmap) and isinstance(loaded.cell_docs, np.memmap)
    assert loaded.info == plaid.info
    assert json.loads((tmp_path / "plaid/index.json").read_text())["format"] == "lir-plaid-index"
    loaded.set_search_parameters("ncells=2,ndocs=128")
    after = loaded.search(queries, k=10)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]
    plaid.set_search_parameters("ncells=4,ndocs=256,centroid_score_threshold=auto")
    expected = {"ncells": 4, "ndocs": 256, "centroid_score_threshold": None, "rescore": "decompressed"}
    assert plaid.search_parameters == expected
    with pytest.raises(LirError, match="already exists"):
        plaid.save(tmp_path / "plaid")
    with open(tmp_path / "plaid/residuals.npy", "r+b") as handle:
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(LirError, match=r"residuals.npy does not match its checksum: the index is corrupted$"):
        PlaidIndex.load(tmp_path / "plaid")
    with pytest.raises(LirError, match="holds a 'lir-plaid-index' index, expected 'lir-multi-vector-index'"):
        MultiVectorIndex.load(tmp_path / "plaid")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hnsw", r"^'hnsw' is not a PLAID index spec"),
        ("plaid,nbits=3", r"^'plaid,nbits=3': nbits must be 2 or 4, not '3'$"),
        ("plaid,bits=2", r"^'plaid,bits=2': unknown PLAID option 'bits' \(nbits, centroids, vectors\)$"),
        ("plaid,vectors=fp32", r"^'plaid,vectors=fp32': vectors must be fp16 or none, not 'fp32'$"),
        ("plaid,centroids=0", "centroids must be a positive integer"),
        ("plaid,nbits", r"^'plaid,nbits' is not a PLAID index spec \('nbits' is not a search parameter"),
    ],
)
def test_bad_spec(colbert, spec, message):
    docs, _, ids = colbert
    with pytest.raises(LirError, match=message):
        PlaidIndex.build(docs, ids, spec)


def test_bad_search_parameters_and_input(colbert, plaid):
    docs, _, ids = colbert
    with pytest.raises(LirError, match=r"^'nprobe' is not a search parameter of a PLAID index"):
        plaid.set_search_parameters("nprobe=4")
    with pytest.raises(LirError, match="ndocs must be a positive integer, not '0'"):
        plaid.set_search_parameters("ndocs=0")
    with pytest.raises(LirError, match="centroid_score_threshold must be a number or auto, not 'high'"):
        plaid.set_search_parameters("centroid_score_threshold=high")
    with pytest.raises(LirError, match=r"^rescore=exact needs the token vectors: build the index with vectors=fp16$"):
        plaid.set_search_parameters("rescore=exact")
    with pytest.raises(LirError, match="rescore must be exact or decompressed, not 'fp16'"):
        plaid.set_search_parameters("rescore=fp16")
    assert plaid.search_parameters["ndocs"] == 256
    with pytest.raises(LirError, match="1499 doc ids for 1500 documents"):
        PlaidIndex.build(docs, ids[:-1])
    with pytest.raises(LirError, match="repeats doc id"):
        PlaidIndex.build(docs, ids[:-1] + ids[:1])
    with pytest.raises(LirError, match="must be floating point"):
        PlaidIndex.build(MultiVectors(docs.vectors.astype(np.int32), docs.offsets), ids)
    with pytest.raises(LirError, match="offsets must rise from 0"):
        PlaidIndex.build(MultiVectors(docs.vectors[:-1], docs.offsets), ids)
    nan = docs.vectors.copy()
    nan[5, 3] = np.inf
    with pytest.raises(LirError, match="NaN or infinite"):
        PlaidIndex.build(MultiVectors(nan, docs.offsets), ids)
    with pytest.raises(LirError, match="unknown aggregation"):
        PlaidIndex.build(docs, ids, aggregation="max")
    with pytest.raises(LirError, match=r"^query token vectors of shape \(32, 8\) do not fit an index of dim 64$"):
        plaid.search(MultiVectors(np.zeros((32, 8), np.float32), np.array([0, 32])), k=3)
