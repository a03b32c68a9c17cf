"""Embedded engine, tokenization rules, dense index and retriever on real data."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest

from lir.clients.dense_index import DenseIndex
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever
from lir.errors import LirError
from lir.manifest import load_manifest
from lir.tokenization import TextEncoder
from lir.train import BiEncoderModule


def _scifact_texts(scifact, n):
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:n]]
    return [f"{r['title']} {r['text']}".strip() for r in records], [r["_id"] for r in records]


def test_embedded_minilm_equals_pytorch(minilm_export, scifact):
    texts, _ = _scifact_texts(scifact, 24)
    reference = BiEncoderModule("sentence-transformers/all-MiniLM-L6-v2").encode(texts, "doc", batch_size=1)
    engine = OnnxEngine(minilm_export)
    np.testing.assert_allclose(engine.encode_docs(texts, batch_size=8), reference, atol=1e-5)
    np.testing.assert_allclose(engine.encode_docs(texts, batch_size=1), reference, atol=1e-5)


def test_tokenization_matches_transformers_and_truncates(minilm_export):
    from transformers import AutoTokenizer

    from tests.builders import minilm_dir

    manifest = load_manifest(minilm_export)
    encoder = TextEncoder.from_manifest(minilm_export, manifest, "doc")
    texts = ["Hello, World! Ünïcödé and 漢字.", "word " * 1000, ""]
    reference = AutoTokenizer.from_pretrained(str(minilm_dir()))(texts, truncation=True, max_length=256)
    assert encoder.encode(texts) == reference["input_ids"]
    assert len(encoder.encode(["word " * 1000])[0]) == manifest.doc.max_length == 256


def test_bad_text_input_is_one_clear_line(minilm_export):
    engine = OnnxEngine(minilm_export)
    with pytest.raises(LirError, match=r"^query #1 is empty$"):
        engine.encode_queries(["fine", "   "])
    with pytest.raises(LirError, match="not valid UTF-8"):
        engine.encode_queries([b"caf\xe9"])
    with pytest.raises(LirError, match="expected text"):
        engine.encode_queries([None])
    utf8 = engine.encode_queries(["café".encode()])
    np.testing.assert_allclose(utf8, engine.encode_queries(["café"]), atol=1e-6)


def test_dense_index_is_exact_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(300)]
    index = DenseIndex.build(vectors, ids, model={"model": "m", "doc_encoder_sha256": "x"})
    index.save(tmp_path / "idx")
    loaded = DenseIndex.load(tmp_path / "idx")
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    scores, found = loaded.search(queries, k=10)
    brute = queries @ vectors.T
    for row in range(5):
        top = np.argsort(-brute[row])[:10]
        assert found[row] == [ids[i] for i in top]
        np.testing.assert_allclose(scores[row], brute[row, top], rtol=1e-5)
    assert loaded.info["model"] == {"model": "m", "doc_encoder_sha256": "x"}


@pytest.mark.parametrize("factory, params", [("HNSW32", "efSearch=128"), ("IVF4,Flat", "nprobe=4")])
def test_factory_strings_and_search_parameters(factory, params):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # each vector is then its own best match
    index = DenseIndex.build(vectors, [str(i) for i in range(500)], factory)
    index.set_search_parameters(params)
    _, found = index.search(vectors[:50], k=1)
    assert sum(f[0] == str(i) for i, f in enumerate(found)) >= 48
    with pytest.raises(LirError, match="search parameters"):
        index.set_search_parameters("warp=9")


def test_bad_factory_and_untrainable_index():
    vectors = np.zeros((10, 8), np.float32)
    with pytest.raises(LirError, match="not a Faiss index factory string"):
        DenseIndex.build(vectors, [str(i) for i in range(10)], "NoSuchIndex")
    with pytest.raises(LirError, match="cannot train"):
        DenseIndex.build(vectors, [str(i) for i in range(10)], "IVF64,Flat")


def test_corrupted_index_is_detected(tmp_path):
    vectors = np.eye(8, dtype=np.float32)
    DenseIndex.build(vectors, [str(i) for i in range(8)]).save(tmp_path / "idx")
    with open(tmp_path / "idx/index.faiss", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xff")
    with pytest.raises(LirError, match="does not match its checksum"):
        DenseIndex.load(tmp_path / "idx")
    shutil.rmtree(tmp_path / "idx")
    with pytest.raises(LirError, match="not a lir index"):
        DenseIndex.load(tmp_path / "idx")


def test_index_write_is_atomic(tmp_path, monkeypatch):
    index = DenseIndex.build(np.eye(8, dtype=np.float32), [str(i) for i in range(8)])
    index.save(tmp_path / "idx")
    before = (tmp_path / "idx/index.json").read_text()

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", fail)
    with pytest.raises(OSError):
        index.save(tmp_path / "idx", overwrite=True)
    assert (tmp_path / "idx/index.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    with pytest.raises(LirError, match="already exists"):
        index.save(tmp_path / "idx")


def test_retriever_refuses_an_index_of_another_model(tiny_export):
    engine = OnnxEngine(tiny_export)
    index = DenseIndex.build(
        np.eye(16, dtype=np.float32),
        [str(i) for i in range(16)],
        model={"model": "other", "doc_encoder_sha256": "0" * 64},
    )
    with pytest.raises(LirError, match="built with model 'other'"):
        Retriever(engine, index)


def test_retriever_ranks_like_brute_force(minilm_export, scifact):
    texts, ids = _scifact_texts(scifact, 200)
    engine = OnnxEngine(minilm_export)
    docs = engine.encode_docs(texts)
    retriever = Retriever(engine, DenseIndex.build(docs, ids, model=engine.fingerprint))
    queries = {"a": "cancer risk of smoking", "b": "vitamin D deficiency"}
    run = retriever.search(queries, k=5)
    brute = engine.encode_queries(list(queries.values())) @ docs.T
    for row, qid in enumerate(queries):
        assert list(run[qid]) == [ids[i] for i in np.argsort(-brute[row])[:5]]
