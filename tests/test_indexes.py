"""Multi-vector (ColBERT) and sparse (SPLADE) indexes against the reference scorers, with real Faiss."""

from __future__ import annotations

import json
import os

# Faiss's OpenMP threads spin after each call and starve numpy's BLAS threads on few cores (Faiss
# k-means after numpy work: 20x slower); effective when Faiss is not loaded yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lir.clients.sparse_index as sparse_module  # noqa: E402
from lir.clients.dense_index import DenseIndex  # noqa: E402
from lir.clients.indexes import open_index  # noqa: E402
from lir.clients.multi_vector_index import MultiVectorIndex  # noqa: E402
from lir.clients.sparse_index import SparseIndex  # noqa: E402
from lir.errors import LirError  # noqa: E402
from lir.files import json_checksum  # noqa: E402
from lir.vectors import MultiVectors, SparseVectors, maxsim, sparse_dot  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n_docs: int, mean_len: int, dim: int, n_queries: int, seed: int = 0) -> tuple[MultiVectors, MultiVectors]:
    """ColBERT-like token vectors: documents of topics that share token clusters, plus common clusters;
    queries of 32 tokens from one document's topic (a quarter of them its own tokens, perturbed)."""
    rng = np.random.default_rng(seed)
    n_topics, per_topic, n_common = max(n_docs // 20, 1), 24, 64
    n_clusters = n_common + max(n_topics * per_topic // 16, per_topic)
    centroids = _unit(rng.standard_normal((n_clusters, dim)))
    topic_clusters = rng.integers(n_common, n_clusters, (n_topics, per_topic))
    doc_topic = rng.integers(0, n_topics, n_docs)
    lengths = rng.poisson(mean_len, n_docs)
    lengths[:3] = 0  # documents without scored tokens
    doc_of = np.repeat(np.arange(n_docs), lengths)
    common = rng.random(len(doc_of)) < 0.3
    picked = np.where(
        common,
        rng.integers(0, n_common, len(doc_of)),
        topic_clusters[doc_topic[doc_of], rng.integers(0, per_topic, len(doc_of))],
    )
    noise = 0.7 / np.sqrt(dim)
    vectors = _unit(centroids[picked] + noise * rng.standard_normal((len(doc_of), dim)))
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    queries = []
    for source in rng.integers(3, n_docs, n_queries):
        own = vectors[offsets[source] : offsets[source + 1]]
        own = own[rng.choice(len(own), min(8, len(own)), replace=False)]
        rest = topic_clusters[doc_topic[source], rng.integers(0, per_topic, 32 - len(own))]
        queries.append(_unit(np.concatenate([own + 0.5 * noise * rng.standard_normal(own.shape), centroids[rest]])))
        queries[-1] = _unit(queries[-1] + noise * rng.standard_normal(queries[-1].shape))
    return MultiVectors(vectors, offsets), MultiVectors.from_list(queries, dim)


def random_sparse(n_docs: int, vocab: int, mean_terms: int, seed: int = 0) -> SparseVectors:
    """Rows of distinct terms from a Zipf-like vocabulary with positive weights; the first row is empty."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, vocab + 1)
    popularity /= popularity.sum()
    rows = [np.unique(rng.choice(vocab, rng.poisson(mean_terms), p=popularity)) for _ in range(n_docs)]
    rows[0] = rows[0][:0]
    weights = [rng.lognormal(-0.5, 0.7, len(r)).astype(np.float32) for r in rows]
    offsets = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    return SparseVectors(np.concatenate(rows).astype(np.int32), np.concatenate(weights), offsets, vocab)


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def colbert():
    docs, queries = clustered(1500, 40, 64, 40)
    return docs, queries, [f"d{i}" for i in range(len(docs))]


@pytest.fixture(scope="module")
def ivf(colbert):
    docs, _, ids = colbert
    return MultiVectorIndex.build(docs, ids, "IVF256,Flat", model={"model": "colbert"})


# ------------------------------------------------------------------------------------------ multi-vector


@pytest.mark.parametrize(
    "aggregation, doc_aggregation",
    [("sum", "max"), ("mean", "max"), ("max", "max"), ("sum", "sum"), ("mean", "mean"), ("max", "mean")],
)
def test_exact_multi_vector_equals_maxsim(aggregation, doc_aggregation):
    docs, queries = clustered(300, 12, 16, 6, seed=1)
    queries = MultiVectors.from_list([queries[i] for i in range(5)] + [np.empty((0, 16), np.float32)], 16)
    ids = [f"d{i}" for i in range(len(docs))]
    index = MultiVectorIndex.build(docs, ids, aggregation=aggregation, doc_aggregation=doc_aggregation)
    scores, found = index.search(queries, k=10)
    assert scores.shape == (6, 10)
    for q in range(len(queries)):
        reference = maxsim(queries[q], docs, aggregation, doc_aggregation)
        top = np.argsort(-reference, kind="stable")[:10]
        assert found[q] == [ids[i] for i in top]
        np.testing.assert_allclose(scores[q], reference[top], atol=1e-5)
    assert found[5] == ids[:10] and not scores[5].any()  # no query tokens: every document scores 0
    everything, all_ids = index.search(queries, k=10_000)  # k' = count; documents without tokens score 0
    assert everything.shape == (6, 300) and sorted(all_ids[0]) == sorted(ids)
    assert everything[0][[all_ids[0].index(d) for d in ("d0", "d1", "d2")]].tolist() == [0, 0, 0]


def test_approximate_multi_vector_keeps_recall(colbert, ivf):
    docs, queries, ids = colbert
    exact_scores, truth = MultiVectorIndex.build(docs, ids).search(queries, k=10)
    assert ivf.search_parameters == {"token_k": 1024, "candidates": 1024, "nprobe": 16}
    scores, found = ivf.search(queries, k=10)
    assert recall(found, truth) >= 0.95
    same = [f == t for f, t in zip(found, truth, strict=True)]  # re-scored exactly: same scores where same docs
    np.testing.assert_allclose(scores[same], exact_scores[same], atol=1e-5)
    ivf.set_search_parameters("nprobe=1,token_k=4,candidates=8")  # cheaper and worse, still a ranking
    _, few = ivf.search(queries, k=10)
    assert recall(few, truth) < recall(found, truth)
    ivf.set_search_parameters("nprobe=16,token_k=1024,candidates=1024")


def test_approximate_multi_vector_with_max_over_query_tokens(colbert, ivf):
    """A model that takes the best query token: candidates by their best retrieved similarity, re-scored exactly."""
    docs, queries, ids = colbert
    exact_scores, truth = MultiVectorIndex.build(docs, ids, aggregation="max").search(queries, k=10)
    best = MultiVectorIndex(ivf.vectors, ivf.offsets, ivf.doc_ids, ivf.info | {"aggregation": "max"}, ivf.token_index)
    scores, found = best.search(queries, k=10)
    assert recall(found, truth) >= 0.95
    same = [f == t for f, t in zip(found, truth, strict=True)]
    np.testing.assert_allclose(scores[same], exact_scores[same], atol=1e-5)


def test_fp16_storage_and_pq_tokens(colbert):
    docs, queries, ids = colbert
    _, truth = MultiVectorIndex.build(docs, ids).search(queries, k=10)
    half = MultiVectorIndex.build(docs, ids, "exact,fp16")
    assert half.vectors.dtype == np.float16 and half.info["storage"] == "fp16"
    assert recall(half.search(queries, k=10)[1], truth) >= 0.95
    pq = MultiVectorIndex.build(docs, ids, "IVF64,PQ16x4fs,fp16")
    assert recall(pq.search(queries, k=10)[1], truth) >= 0.9


def test_multi_vector_search_parameters(ivf, colbert):
    docs, _, ids = colbert
    with pytest.raises(LirError, match=r"^'warp=9' are not search parameters of a 'IVF256,Flat' token index"):
        ivf.set_search_parameters("warp=9")
    with pytest.raises(LirError, match="token_k must be a positive integer"):
        ivf.set_search_parameters("token_k=0")
    with pytest.raises(LirError, match="not a search parameter"):
        ivf.set_search_parameters("nprobe")
    with pytest.raises(LirError, match="exact multi-vector index has no search parameters"):
        MultiVectorIndex.build(docs, ids).set_search_parameters("nprobe=4")
    MultiVectorIndex.build(docs, ids).set_search_parameters("")
    assert ivf.search_parameters == {"token_k": 1024, "candidates": 1024, "nprobe": 16}


def test_multi_vector_refuses_bad_input(colbert):
    docs, queries, ids = colbert
    with pytest.raises(LirError, match="1499 doc ids for 1500 documents"):
        MultiVectorIndex.build(docs, ids[:-1])
    with pytest.raises(LirError, match="repeats doc id"):
        MultiVectorIndex.build(docs, ids[:-1] + ids[:1])
    with pytest.raises(LirError, match=r"must be a \[T, D\] array"):
        MultiVectorIndex.build(MultiVectors(docs.vectors[:, 0], docs.offsets), ids)
    with pytest.raises(LirError, match="offsets must rise from 0"):
        MultiVectorIndex.build(MultiVectors(docs.vectors[:-1], docs.offsets), ids)
    nan = docs.vectors.copy()
    nan[5, 3] = np.nan
    with pytest.raises(LirError, match="NaN"):
        MultiVectorIndex.build(MultiVectors(nan, docs.offsets), ids)
    with pytest.raises(LirError, match="unknown aggregation"):
        MultiVectorIndex.build(docs, ids, aggregation="min")
    with pytest.raises(LirError, match="^'IVF16,Flat': token search finds MaxSim candidates.*'sum': use the exact"):
        MultiVectorIndex.build(docs, ids, "IVF16,Flat", doc_aggregation="sum")
    with pytest.raises(LirError, match="neither exact nor a Faiss index factory string"):
        MultiVectorIndex.build(docs, ids, "NoSuchIndex")
    with pytest.raises(LirError, match="cannot train"):
        MultiVectorIndex.build(MultiVectors(docs.vectors[:100], np.array([0, 50, 90, 100])), ids[:3], "IVF256,Flat")
    index = MultiVectorIndex.build(docs, ids)
    with pytest.raises(LirError, match=r"^query token vectors of shape \(32, 8\) do not fit an index of dim 64$"):
        index.search(MultiVectors(np.zeros((32, 8), np.float32), np.array([0, 32])), k=3)
    scores, found = index.search(MultiVectors(np.zeros((0, 64), np.float32), np.zeros(1, np.int64)), k=3)
    assert scores.shape == (0, 3) and found == []


def test_multi_vector_round_trip(tmp_path, colbert, ivf):
    docs, queries, ids = colbert
    before = ivf.search(queries, k=10)
    ivf.save(tmp_path / "mv")
    assert sorted(p.name for p in (tmp_path / "mv").iterdir()) == [
        "doc_ids.json",
        "index.json",
        "offsets.npy",
        "tokens.faiss",
        "vectors.npy",
    ]
    loaded = MultiVectorIndex.load(tmp_path / "mv")
    assert isinstance(loaded.vectors, np.memmap) and isinstance(loaded.offsets, np.memmap)
    assert loaded.info == ivf.info and loaded.info["model"] == {"model": "colbert"}
    assert loaded.search_parameters == ivf.search_parameters
    after = loaded.search(queries, k=10)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]
    assert isinstance(open_index(tmp_path / "mv", verify=False), MultiVectorIndex)
    exact = MultiVectorIndex.build(docs, ids, aggregation="mean")
    exact.save(tmp_path / "exact")
    assert not (tmp_path / "exact/tokens.faiss").exists()
    np.testing.assert_array_equal(
        MultiVectorIndex.load(tmp_path / "exact").search(queries, 5)[0], exact.search(queries, 5)[0]
    )


def test_multi_vector_corruption_and_atomic_writes(tmp_path, colbert, ivf, monkeypatch):
    docs, _, ids = colbert
    ivf.save(tmp_path / "mv")
    with open(tmp_path / "mv/vectors.npy", "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(LirError, match=r"vectors.npy does not match its checksum: the index is corrupted$"):
        MultiVectorIndex.load(tmp_path / "mv")
    with pytest.raises(LirError, match="does not match its checksum"):
        open_index(tmp_path / "mv")
    with pytest.raises(LirError, match="already exists"):
        ivf.save(tmp_path / "mv")
    before = (tmp_path / "mv/index.json").read_text()

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", fail)
    with pytest.raises(OSError, match="disk full"):
        ivf.save(tmp_path / "mv", overwrite=True)
    assert (tmp_path / "mv/index.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mv"]
    (tmp_path / "mv/tokens.faiss").unlink()
    with pytest.raises(LirError, match="tokens.faiss is missing"):
        MultiVectorIndex.load(tmp_path / "mv")
    with pytest.raises(LirError, match="holds a 'lir-multi-vector-index' index, expected 'lir-sparse-index'"):
        SparseIndex.load(tmp_path / "mv", verify=False)


# ------------------------------------------------------------------------------------------ sparse


@pytest.fixture(scope="module")
def splade():
    docs = random_sparse(2000, 3000, 60)
    queries = random_sparse(30, 3000, 12, seed=1)
    return docs, queries, [f"s{i}" for i in range(len(docs))]


def test_sparse_float32_equals_dot_product(splade):
    docs, queries, ids = splade
    index = SparseIndex.build(docs, ids)
    scores, found = index.search(queries, k=20)
    assert scores.shape == (30, 20)
    dense = docs.to_dense()
    for q in range(len(queries)):
        reference = sparse_dot(queries.row(q), docs)
        np.testing.assert_allclose(reference, dense @ queries.take([q]).to_dense()[0], rtol=1e-5, atol=1e-6)
        top = np.argsort(-reference, kind="stable")[:20]
        assert found[q] == [ids[i] for i in top]
        np.testing.assert_array_equal(scores[q], reference[top])
    # a query reaching few documents: the rest score 0, in index order; the empty document too
    one = SparseVectors(np.array([2999], np.int32), np.array([1.5], np.float32), np.array([0, 1]), 3000)
    scores, found = index.search(one, k=2000)
    reference = sparse_dot(one.row(0), docs)
    assert found[0] == [ids[i] for i in np.argsort(-reference, kind="stable")]


@pytest.mark.parametrize("spec, tolerance", [("float16", 2e-3), ("uint8", 2e-2)])
def test_sparse_quantized_is_close(splade, spec, tolerance):
    docs, queries, ids = splade
    _, truth = SparseIndex.build(docs, ids).search(queries, k=10)
    index = SparseIndex.build(docs, ids, spec)
    assert index.postings_impacts.dtype == np.dtype(spec)
    scores, found = index.search(queries, k=10)
    assert recall(found, truth) >= 0.9
    for q in range(len(queries)):
        reference = sparse_dot(queries.row(q), docs)[[int(d[1:]) for d in found[q]]]
        np.testing.assert_allclose(scores[q], reference, rtol=tolerance, atol=tolerance * reference.max())
    if spec == "uint8":
        assert index.info["scale"] == pytest.approx(float(docs.weights.max()) / 255)


def test_sparse_build_in_chunks_is_the_same(splade, monkeypatch):
    docs, _, ids = splade
    whole = SparseIndex.build(docs, ids)
    monkeypatch.setattr(sparse_module, "BUILD_CHUNK", 1000)
    chunked = SparseIndex.build(docs, ids, progress=True)
    for name in ("term_offsets", "postings_docs", "postings_impacts"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    offsets = whole.term_offsets
    for t in (0, 1, 57, 2999):  # documents ascending in each posting list
        assert np.all(np.diff(whole.postings_docs[offsets[t] : offsets[t + 1]]) > 0)


def test_sparse_round_trip_and_corruption(tmp_path, splade):
    docs, queries, ids = splade
    index = SparseIndex.build(docs, ids, "uint8", model={"model": "splade"})
    index.save(tmp_path / "sp")
    loaded = open_index(tmp_path / "sp")
    assert isinstance(loaded, SparseIndex) and isinstance(loaded.postings_docs, np.memmap)
    assert loaded.info == index.info
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], index.search(queries, 10)[0])
    with pytest.raises(LirError, match="sparse index has no search parameters"):
        loaded.set_search_parameters("nprobe=3")
    with open(tmp_path / "sp/postings_impacts.npy", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff")
    with pytest.raises(LirError, match="postings_impacts.npy does not match its checksum"):
        SparseIndex.load(tmp_path / "sp")
    with pytest.raises(LirError, match="already exists"):
        index.save(tmp_path / "sp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sp"]


def test_sparse_refuses_bad_input(splade):
    docs, queries, ids = splade
    with pytest.raises(LirError, match="repeats doc id"):
        SparseIndex.build(docs, ids[:-1] + ids[:1])
    with pytest.raises(LirError, match="1999 doc ids for 2000 documents"):
        SparseIndex.build(docs, ids[:-1])
    with pytest.raises(LirError, match="not a sparse index spec"):
        SparseIndex.build(docs, ids, "int4")
    with pytest.raises(LirError, match=r"term ids must lie in \[0, 100\)"):
        SparseIndex.build(SparseVectors(docs.term_ids, docs.weights, docs.offsets, 100), ids)
    negative = SparseVectors(docs.term_ids, -docs.weights, docs.offsets, docs.dim)
    with pytest.raises(LirError, match="uint8 impacts need nonnegative weights"):
        SparseIndex.build(negative, ids, "uint8")
    assert SparseIndex.build(negative, ids).search(queries, 3)[0].max() <= 0
    index = SparseIndex.build(docs, ids)
    with pytest.raises(LirError, match="^sparse queries over 30522 terms do not fit an index of 3000 terms$"):
        index.search(SparseVectors(queries.term_ids, queries.weights, queries.offsets, 30522), 3)
    scores, found = index.search(SparseVectors.concat([], 3000), k=5)
    assert scores.shape == (0, 5) and found == []


# ------------------------------------------------------------------------------------------ all


def test_open_index_dispatches(tmp_path, splade):
    docs, _, ids = splade
    DenseIndex.build(np.eye(8, dtype=np.float32), [str(i) for i in range(8)]).save(tmp_path / "dense")
    SparseIndex.build(docs, ids).save(tmp_path / "sparse")
    assert isinstance(open_index(tmp_path / "dense"), DenseIndex)
    assert isinstance(open_index(tmp_path / "sparse"), SparseIndex)
    (tmp_path / "other").mkdir()
    other = {"format": "lir-graph-index"}
    (tmp_path / "other/index.json").write_text(json.dumps(other | {"checksum": json_checksum(other)}))
    with pytest.raises(LirError, match="unknown format 'lir-graph-index'"):
        open_index(tmp_path / "other")
    with pytest.raises(LirError, match="is not a lir index: no index.json"):
        open_index(tmp_path / "nowhere")
