"""The Qdrant index (a real Qdrant Edge store; qdrant-client's local mode standing in for a server) against
exact search for the three bi-encoder families: results, files, collections, bad input, the CLI path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lir.clients.dense_index import DenseIndex
from lir.clients.indexes import open_index
from lir.clients.multi_vector_index import MultiVectorIndex
from lir.clients.qdrant_index import QdrantIndex, target_spec
from lir.clients.sparse_index import SparseIndex
from lir.coil import CoilVectors
from lir.errors import LirError
from lir.trec import read_run
from lir.vectors import MultiVectors, SparseVectors
from tests.test_cli import lir
from tests.test_indexes import random_sparse, recall

DIM, N_DOCS = 32, 2000
MODEL = {"model": "m", "doc_encoder_sha256": "0" * 64}
FORCE_HNSW = "indexing_threshold=1,full_scan_threshold=1"  # a graph even for a small segment


def dense_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:30] + 0.3 * rng.standard_normal((30, DIM)).astype(np.float32)
    return docs, queries, [f"d{i}" for i in range(N_DOCS)]


def token_data(n_docs: int = 300) -> tuple[MultiVectors, MultiVectors, list[str]]:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 12, n_docs)
    docs = MultiVectors.from_list([rng.standard_normal((n, DIM)).astype(np.float32) for n in lengths], DIM)
    queries = MultiVectors.from_list([rng.standard_normal((n, DIM)).astype(np.float32) for n in (4, 1, 7)], DIM)
    return docs, queries, [f"d{i}" for i in range(n_docs)]


@pytest.fixture(scope="module")
def dense() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return dense_data()


@pytest.mark.parametrize(
    "spec", ["qdrant", f"qdrant,hnsw_m=16,ef_construct=64,{FORCE_HNSW}", f"qdrant,int8,{FORCE_HNSW}"]
)
def test_dense_ranks_as_exact_search(dense, spec):
    docs, queries, ids = dense
    exact_scores, truth = DenseIndex.build(docs, ids).search(queries, 10)
    index = QdrantIndex.build(docs, ids, spec, MODEL)
    scores, found = index.search(queries, 10)
    assert recall(found, truth) >= 0.95
    hnsw = "indexing_threshold=1" in spec
    assert (index.store.shard.info().indexed_vectors_count == N_DOCS) == hnsw  # the graph is there when asked
    for q in range(len(queries)):  # every score is the document's dot product (int8: re-scored on float32)
        np.testing.assert_allclose(scores[q], queries[q] @ docs[[int(d[1:]) for d in found[q]]].T, atol=1e-4)
    if not hnsw:  # no graph: Qdrant scans, exactly
        assert found == truth
        np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    index.set_search_parameters("exact=true")
    assert index.search(queries, 10)[1] == truth


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_multi_vector_is_maxsim(aggregation):
    docs, queries, ids = token_data()
    exact_scores, truth = MultiVectorIndex.build(docs, ids, "exact", aggregation=aggregation).search(queries, 10)
    scores, found = QdrantIndex.build(docs, ids, "qdrant", MODEL, aggregation).search(queries, 10)
    assert found == truth
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)
    hnsw = QdrantIndex.build(docs, ids, f"qdrant,hnsw_m=16,{FORCE_HNSW}", MODEL, aggregation)
    assert recall(hnsw.search(queries, 10)[1], truth) >= 0.95


def test_sparse_is_the_exact_inverted_index():
    docs = random_sparse(1500, 800, 30)
    queries = random_sparse(25, 800, 8, seed=1)
    ids = [f"d{i}" for i in range(1500)]
    exact_scores, truth = SparseIndex.build(docs, ids).search(queries, 10)
    scores, found = QdrantIndex.build(docs, ids, "qdrant", MODEL).search(queries, 10)
    assert found[0] == [] and np.isneginf(scores[0]).all()  # an empty query finds nothing
    for q in range(1, len(queries)):  # the documents that share a term, with their scores
        expected = {d: s for d, s in zip(truth[q], exact_scores[q], strict=True) if s > 0}
        assert dict(zip(found[q], scores[q], strict=False)) == pytest.approx(expected, abs=1e-5)
    # unsorted rows and a repeated term: its weights summed, as the exact index adds its postings
    odd = SparseVectors(np.array([5, 2, 5, 7], np.int32), np.array([1, 2, 3, -1], np.float32), np.array([0, 3, 4]), 10)
    query = SparseVectors(np.array([5, 2], np.int32), np.array([1, 1], np.float32), np.array([0, 2]), 10)
    scores, found = QdrantIndex.build(odd, ["a", "b"], "qdrant", MODEL).search(query, 5)
    assert found == [["a"]] and scores[0, 0] == pytest.approx(6.0) and scores[0, 1] == -np.inf


def test_round_trip_and_corruption_refused(tmp_path, dense):
    docs, queries, ids = dense
    built = QdrantIndex.build(docs, ids, f"qdrant,int8,{FORCE_HNSW}", MODEL)
    expected = built.search(queries, 10)
    built.save(tmp_path / "index")
    info = json.loads((tmp_path / "index" / "index.json").read_text())
    assert info["format"] == "lir-qdrant-index" and info["model"] == MODEL and info["family"] == "single-vector"
    assert "qdrant/edge_config.json" not in info["sha256"] and any("matrix.dat" in f for f in info["sha256"])
    for _ in range(2):  # loading rewrites edge_config.json, nothing that is checksummed
        loaded = open_index(tmp_path / "index")
        assert isinstance(loaded, QdrantIndex)
        scores, found = loaded.search(queries, 10)
        assert found == expected[1]
        np.testing.assert_array_equal(scores, expected[0])
        loaded.store.close()
    with pytest.raises(LirError, match="already exists"):
        built.save(tmp_path / "index")
    with pytest.raises(LirError, match="cannot be saved again"):
        loaded.save(tmp_path / "again")
    matrix = next((tmp_path / "index").glob("qdrant/segments/*/vector_storage-dense/matrix.dat"))
    data = bytearray(matrix.read_bytes())
    data[100] ^= 1
    matrix.write_bytes(bytes(data))
    with pytest.raises(LirError, match="does not match its checksum: the index is corrupted"):
        open_index(tmp_path / "index")
    matrix.unlink()
    with pytest.raises(LirError, match="matrix.dat is missing"):
        open_index(tmp_path / "index")
    text = (tmp_path / "index" / "index.json").read_text()
    (tmp_path / "index" / "index.json").write_text(text.replace('"count": 2000', '"count": 1999'))
    with pytest.raises(LirError, match="index.json does not match its checksum"):
        open_index(tmp_path / "index")


def test_every_family_in_a_collection_in_local_mode(tmp_path, dense):
    """qdrant-client's local mode (no server here): the collection code a cluster gets, and the results of
    the embedded store. Local mode writes each point to SQLite: small collections."""
    docs, queries, ids = dense
    tokens, token_queries, token_ids = token_data(60)
    sparse = random_sparse(100, 300, 20)
    sparse_queries = random_sparse(5, 300, 6, seed=1)
    url = f"qdrant+local://{tmp_path}/store"
    for name, (vectors, asked, names) in {
        "dense": (docs[:100], queries, ids[:100]),
        "tokens": (tokens, token_queries, token_ids),
        "sparse": (sparse, sparse_queries, [f"s{i}" for i in range(100)]),
    }.items():
        built = QdrantIndex.build(vectors, names, "qdrant", MODEL)
        expected = built.search(asked, 10)
        built.save(f"{url}/{name}")
        remote = open_index(f"{url}/{name}")
        scores, found = remote.search(asked, 10)
        assert found == expected[1] and remote.info["model"] == MODEL
        np.testing.assert_allclose(scores, expected[0], atol=1e-5)
        remote.store.close()
    built = QdrantIndex.build(docs[:10], ids[:10], "qdrant", MODEL)
    with pytest.raises(LirError, match="collection dense already exists"):
        built.save(f"{url}/dense")
    built.save(f"{url}/dense", overwrite=True)  # the alias moves to a new collection, the old one goes
    remote = open_index(f"{url}/dense")
    client = remote.store.client
    assert remote.info["count"] == 10
    assert sum(c.name.startswith("dense-lir-") for c in client.get_collections().collections) == 1
    client.create_collection("other")
    collection = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["dense"]
    client.update_collection(collection, metadata={"lir": {**remote.info, "count": 11}})
    client.close()
    with pytest.raises(LirError, match="other is a collection, not an alias lir wrote"):
        built.save(f"{url}/other", overwrite=True)
    with pytest.raises(LirError, match="no such collection"):
        open_index(f"{url}/missing")
    with pytest.raises(LirError, match="not a collection written by lir"):
        open_index(f"{url}/other")
    with pytest.raises(LirError, match="does not match its checksum"):
        open_index(f"{url}/dense")


def test_bad_input_is_refused_in_one_line(dense):
    docs, queries, ids = dense
    tokens, _, token_ids = token_data(20)
    sparse = random_sparse(20, 50, 5)
    cases = [
        (lambda: QdrantIndex.build(docs, ids, "qdrant,hnsw=3"), "'hnsw' is not a Qdrant build parameter"),
        (lambda: QdrantIndex.build(docs, ids, "qdrant,hnsw_m=-1"), "must be a nonnegative integer"),
        (lambda: QdrantIndex.build(docs, ids, "qdrant,ef_construct=2"), "at least 4"),
        (lambda: QdrantIndex.build(docs, ids, "qdrnt"), "not a Qdrant index spec"),
        (lambda: QdrantIndex.build(sparse, ids[:20], "qdrant,int8"), "sparse index has no build parameters"),
        (lambda: QdrantIndex.build(docs, ids[:5]), "5 doc ids for 2000 documents"),
        (lambda: QdrantIndex.build(docs * np.nan, ids), "NaN or infinite"),
        (lambda: QdrantIndex.build(tokens, token_ids, doc_aggregation="mean"), "Qdrant scores by MaxSim"),
        (lambda: QdrantIndex.build(CoilVectors.__new__(CoilVectors), ids), "cannot index CoilVectors"),
        (lambda: target_spec("qdrant://h:6333/c", "HNSW32"), "holds a qdrant index spec, not 'HNSW32'"),
    ]
    for action, message in cases:
        with pytest.raises(LirError, match=message):
            action()
    index = QdrantIndex.build(docs[:50], ids[:50], "qdrant")
    for spec, message in [
        ("nprobe=3", "'nprobe' is not a Qdrant search parameter"),
        ("hnsw_ef=0", "must be a positive integer"),
        ("exact=maybe", "must be true or false"),
        ("oversampling=0.5", "at least 1"),
    ]:
        with pytest.raises(LirError, match=message):
            index.set_search_parameters(spec)
    with pytest.raises(LirError, match="do not fit an index of dim 32"):
        index.search(queries[:, :8], 10)
    with pytest.raises(LirError, match="searched with sparse queries"):
        QdrantIndex.build(sparse, ids[:20]).search(queries, 10)
    with pytest.raises(LirError, match="not a Qdrant collection"):
        open_index("qdrant://nowhere")


def test_edge_cases(dense):
    docs, queries, ids = dense
    index = QdrantIndex.build(docs[:5], ids[:5], "qdrant")
    scores, found = index.search(queries[:2], 100)  # k above the count
    assert scores.shape == (2, 5) and all(len(f) == 5 for f in found)
    assert index.search(queries[:0], 10)[0].shape == (0, 5)
    tokens = MultiVectors(np.ones((3, 4), np.float32), np.array([0, 0, 3]))  # a document without tokens
    queries = MultiVectors(np.ones((2, 4), np.float32), np.array([0, 0, 2]))  # and a query without
    scores, found = QdrantIndex.build(tokens, ["empty", "full"], "qdrant").search(queries, 2)
    assert found == [[], ["full"]] and scores[1, 0] == pytest.approx(8.0) and np.isneginf(scores[0]).all()


@pytest.mark.parametrize("model", ["single", "colbert", "splade"])
def test_lir_index_and_search_every_family(tiny_export, late_repository, scifact, tmp_path, model):
    """`lir index --factory qdrant` and `lir search` on a real export, as the family's exact index ranks; the
    same model check and Retriever; `lir search` of a collection (local mode)."""
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.retriever import Retriever, build_index
    from lir.collections import iter_docs

    export = tiny_export if model == "single" else late_repository / model
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join((scifact / "corpus.jsonl").read_text().splitlines()[:60]) + "\n")
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tcancer and smoking\nq2\tprotein folding\n")
    index, run = tmp_path / "index", tmp_path / "run.trec"
    done = lir("index", "--engine", str(export), "--corpus", str(corpus), "--output", str(index), "--factory", "qdrant")
    assert done.returncode == 0, done.stderr
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(run), "-k", "10")
    assert done.returncode == 0, done.stderr
    got = read_run(run)
    engine = OnnxEngine(export)
    exact_index = open_index(index)
    assert isinstance(exact_index, QdrantIndex)
    texts = {"q1": "cancer and smoking", "q2": "protein folding"}
    doc_ids, doc_texts = zip(*iter_docs(str(corpus)), strict=True)
    encoded = engine.encode_docs(list(doc_texts))
    reference = Retriever(engine, build_index(engine, encoded, list(doc_ids))).search(texts, k=10)
    for qid in texts:  # the exact index's documents, and scores (ties may come in another order)
        assert got[qid] == pytest.approx(reference[qid], abs=1e-4)
    url = f"qdrant+local://{tmp_path}/store/scifact"
    built = build_index(engine, encoded, list(doc_ids), "qdrant")
    built.info["engine"] = {"url": str(export), "directory": str(export), "variant": "fp32"}
    built.save(url)
    done = lir(
        "search", "--index", url, "--queries", str(queries), "--output", str(tmp_path / "remote.trec"), "-k", "10"
    )
    assert done.returncode == 0, done.stderr
    assert read_run(tmp_path / "remote.trec")["q1"] == pytest.approx(reference["q1"], abs=1e-4)
    other = OnnxEngine(tiny_export if model != "single" else late_repository / "colbert")
    with pytest.raises(LirError, match="the index was built with model"):
        Retriever(other, exact_index)


def test_without_the_extra_only_a_qdrant_index_is_refused():
    """The core install has no qdrant packages: lir imports, and a Qdrant index says what to install."""
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['qdrant_edge'] = sys.modules['qdrant_client'] = None\n"
        "import numpy as np\nimport lir.clients.commands\nfrom lir.clients.qdrant_index import QdrantIndex\n"
        "index = QdrantIndex.build(np.eye(2, dtype=np.float32), ['a', 'b'])\n"
        "try:\n    index.search(np.eye(2, dtype=np.float32), 1)\nexcept Exception as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "a Qdrant index needs qdrant-edge-py: pip install 'lir[qdrant]'"
