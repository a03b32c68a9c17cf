"""Multi-vector (ColBERT, MVR) and sparse models through a real Triton server: every route equals the embedded
engine."""

from __future__ import annotations

import json
import shutil
import urllib.request

import numpy as np
import pytest

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, build_index
from lir.clients.triton_engine import TritonEngine
from lir.serving.server import TritonServer
from lir.vectors import MultiVectors, SparseVectors, maxsim, padded_outputs
from tests.test_serving import _ports


@pytest.fixture(scope="module")
def repository(late_repository, reference_backbone, scifact, tmp_path_factory):
    """The late models plus a Lightning IR mvr (4 viewer tokens, markers), an inference-free Lightning IR
    SPLADE (static query weights: no query graph) and a Lightning IR coil, exported beside them."""
    from lir.export.bundle import export_model
    from tests.reference import build

    out = tmp_path_factory.mktemp("repo") / "late"
    shutil.copytree(late_repository, out, symlinks=True)
    checkpoint = tmp_path_factory.mktemp("ckpt") / "mvr"
    build(reference_backbone, checkpoint, "MvrConfig", {"num_viewer_tokens": 4, "add_marker_tokens": True})
    export_model(str(checkpoint), out, "mvr", parity_data=str(scifact), log=lambda _: None)
    checkpoint = tmp_path_factory.mktemp("ckpt") / "splade-if"
    build(reference_backbone, checkpoint, "SpladeConfig", {"query_weighting": "static", "query_expansion": False})
    export_model(str(checkpoint), out, "splade-if", parity_data=str(scifact), log=lambda _: None)
    checkpoint = tmp_path_factory.mktemp("ckpt") / "coil"
    build(reference_backbone, checkpoint, "CoilConfig", {"token_embedding_dim": 8, "cls_embedding_dim": 16})
    export_model(str(checkpoint), out, "coil", parity_data=str(scifact), log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def server(repository):
    triton = TritonServer(repository, **_ports()).start()
    yield triton
    triton.stop()


@pytest.fixture(scope="module")
def texts(scifact):
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:24]]
    return [f"{r['title']} {r['text']}" for r in records]


def _assert_same(got, expected) -> None:
    assert type(got) is type(expected)
    np.testing.assert_array_equal(got.offsets, expected.offsets)
    if isinstance(got, MultiVectors):
        np.testing.assert_allclose(got.vectors, expected.vectors, atol=1e-5)
    else:
        np.testing.assert_array_equal(got.term_ids, expected.term_ids)
        np.testing.assert_allclose(got.weights, expected.weights, atol=1e-5)


def test_every_graph_is_served(server):
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request) as reply:
        models = {m["name"]: m.get("state") for m in json.loads(reply.read())}
    assert models == {
        "colbert": "READY",
        "colbert.query_encoder": "READY",
        "colbert.doc_encoder": "READY",
        "colbert.scorer": "READY",
        "splade": "READY",
        "splade.encoder": "READY",
        "mvr": "READY",
        "mvr.query_encoder": "READY",
        "mvr.doc_encoder": "READY",
        "mvr.scorer": "READY",
        "splade-if": "READY",
        "splade-if.encoder": "READY",
        "coil": "READY",
        "coil.query_encoder": "READY",
        "coil.doc_encoder": "READY",
    }


@pytest.mark.parametrize("model", ["colbert", "splade"])
@pytest.mark.parametrize("route", [("grpc", "text"), ("http", "text"), ("grpc", "ids")])
def test_encodings_equal_the_embedded_engine(server, late_repository, texts, model, route):
    protocol, mode = route
    url = server.grpc_url if protocol == "grpc" else server.http_url
    embedded = OnnxEngine(late_repository / model)
    with TritonEngine(url, model, protocol, mode, model_dir=late_repository / model) as engine:
        assert (engine.family, engine.embedding_dim, engine.aggregation) == (
            embedded.family,
            embedded.embedding_dim,
            embedded.aggregation,
        )
        assert engine.fingerprint == embedded.fingerprint
        for role, batch in (("doc", texts), ("query", [t[:50] for t in texts[:9]])):
            _assert_same(engine.encode(batch, role, batch_size=5), embedded.encode(batch, role))


def test_scorer_graph_equals_maxsim(server, late_repository, texts):
    import tritonclient.grpc as grpcclient

    embedded = OnnxEngine(late_repository / "colbert")
    query = embedded.encode_queries(["how do cells divide?"])
    docs = embedded.encode_docs(texts[:6])
    expected = maxsim(query[0], docs, embedded.aggregation)
    q, d = (
        padded_outputs(MultiVectors.from_list([query[0]] * 6, query.vectors.shape[1]), 0, 6),
        padded_outputs(docs, 0, 6),
    )
    feeds = {
        "query_embeddings": q["embeddings"],
        "query_mask": q["scoring_mask"],
        "doc_embeddings": d["embeddings"],
        "doc_mask": d["scoring_mask"],
    }
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, array in feeds.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "BOOL" if array.dtype == bool else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    scores = client.infer("colbert.scorer", inputs).as_numpy("scores").reshape(-1)  # [batch, 1] as configured
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["colbert", "splade"])
def test_retriever_over_triton_ranks_like_embedded(server, late_repository, texts, model):
    embedded = OnnxEngine(late_repository / model)
    index = build_index(embedded, embedded.encode_docs(texts), [f"d{i}" for i in range(len(texts))])
    queries = {"1": "protein folding", "2": "cancer risk", "3": "vitamin D deficiency"}
    expected = Retriever(embedded, index).search(queries, k=10)
    with TritonEngine(server.grpc_url, model) as triton:
        got = Retriever(triton, index).search(queries, k=10)
    for qid in queries:
        assert list(got[qid]) == list(expected[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(expected[qid].values()), atol=1e-4)


def test_mvr_over_triton_equals_embedded(server, repository, texts):
    """The server inserts the viewer tokens as the manifest says: one query vector, 4 views per document."""
    embedded = OnnxEngine(repository / "mvr")
    queries = {"1": "protein folding", "2": "cancer risk"}
    with TritonEngine(server.grpc_url, "mvr", "grpc", "text") as triton:
        docs = triton.encode(texts, "doc", batch_size=5)
        _assert_same(docs, embedded.encode(texts, "doc"))
        _assert_same(triton.encode(list(queries.values()), "query"), embedded.encode(list(queries.values()), "query"))
        index = build_index(embedded, docs, [f"d{i}" for i in range(len(texts))])
        got, expected = Retriever(triton, index).search(queries, k=5), Retriever(embedded, index).search(queries, k=5)
    assert set(docs.lengths) == {4}
    for qid in queries:
        assert list(got[qid]) == list(expected[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(expected[qid].values()), atol=1e-4)


def test_sparse_outputs_are_compact(late_repository, texts):
    encoded = OnnxEngine(late_repository / "splade").encode_docs(texts)
    assert isinstance(encoded, SparseVectors)
    assert 0 < encoded.lengths.max() <= OnnxEngine(late_repository / "splade").manifest.top_k


@pytest.mark.parametrize("route", [("grpc", "text"), ("http", "text"), ("grpc", "ids")])
def test_inference_free_queries_over_triton_equal_embedded(server, repository, texts, route):
    """Queries of an inference-free SPLADE are encoded from its weight table (on the server in text mode, here
    in ids mode): the same terms and weights as the embedded engine, documents through the served graph."""
    protocol, mode = route
    url = server.grpc_url if protocol == "grpc" else server.http_url
    embedded = OnnxEngine(repository / "splade-if")
    queries = ["protein folding in cells", "does vitamin D lower cancer risk?"]
    with TritonEngine(url, "splade-if", protocol, mode, model_dir=repository / "splade-if") as triton:
        assert triton.fingerprint == embedded.fingerprint
        _assert_same(triton.encode(queries, "query"), embedded.encode(queries, "query"))
        _assert_same(triton.encode(texts[:8], "doc", batch_size=3), embedded.encode(texts[:8], "doc"))


@pytest.mark.parametrize("route", [("grpc", "text"), ("http", "text"), ("grpc", "ids")])
def test_coil_over_triton_equals_embedded(server, repository, texts, route):
    """COIL's cls vectors, scored token vectors and ids come back from every route as the embedded engine
    gives them; retrieval from its index and re-ranking over Triton rank alike."""
    from lir.clients.reranker import Reranker

    protocol, mode = route
    url = server.grpc_url if protocol == "grpc" else server.http_url
    embedded = OnnxEngine(repository / "coil")
    queries = {"1": "protein folding", "2": "cancer risk"}
    with TritonEngine(url, "coil", protocol, mode, model_dir=repository / "coil") as triton:
        assert (triton.aggregation, triton.doc_aggregation) == (embedded.aggregation, embedded.doc_aggregation)
        got, expected = triton.encode(texts, "doc", batch_size=5), embedded.encode(texts, "doc")
        np.testing.assert_array_equal(got.offsets, expected.offsets)
        np.testing.assert_array_equal(got.token_ids, expected.token_ids)
        np.testing.assert_allclose(got.vectors, expected.vectors, atol=1e-5)
        np.testing.assert_allclose(got.cls, expected.cls, atol=1e-5)
        index = build_index(embedded, expected, [f"d{i}" for i in range(len(texts))])
        found, wanted = Retriever(triton, index).search(queries, k=5), Retriever(embedded, index).search(queries, k=5)
        reranked = Reranker(triton).score_lists(list(queries.values()), [texts[:6]] * 2)
    for qid in queries:
        assert list(found[qid]) == list(wanted[qid])
        np.testing.assert_allclose(list(found[qid].values()), list(wanted[qid].values()), atol=1e-4)
    want = Reranker(embedded).score_lists(list(queries.values()), [texts[:6]] * 2)
    np.testing.assert_allclose(np.stack(reranked), np.stack(want), atol=1e-4)
