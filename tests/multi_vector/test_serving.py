"""Multi-vector models (ColBERT, MVR) through a real Triton server: every route equals the embedded engine."""

from __future__ import annotations

import numpy as np
import pytest

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, build_index
from lir.clients.triton_engine import TritonEngine
from lir.vectors import MultiVectors, maxsim, padded_outputs
from tests.late_serving import (
    assert_all_served,
    assert_ranks_like_embedded,
    assert_same,
    assert_served_like_embedded,
    repository_of,
    serving_fixtures,
)


@pytest.fixture(scope="module")
def repository(late_repository, reference_backbone, scifact, tmp_path_factory):
    """The late ColBERT plus a Lightning IR mvr (4 viewer tokens, markers) exported beside it."""
    from lir.export.bundle import export_model
    from tests.reference import build

    out = repository_of(late_repository, ("colbert",), tmp_path_factory.mktemp("repo") / "late")
    checkpoint = tmp_path_factory.mktemp("ckpt") / "mvr"
    build(reference_backbone, checkpoint, "MvrConfig", {"num_viewer_tokens": 4, "add_marker_tokens": True})
    export_model(str(checkpoint), out, "mvr", parity_data=str(scifact), log=lambda _: None)
    return out


server, texts = serving_fixtures()


def test_every_graph_is_served(server):
    graphs = ("query_encoder", "doc_encoder", "scorer")
    assert_all_served(server, {"colbert": graphs, "mvr": graphs})


@pytest.mark.parametrize("model", ["colbert"])
@pytest.mark.parametrize("route", [("grpc", "text"), ("http", "text"), ("grpc", "ids")])
def test_encodings_equal_the_embedded_engine(server, late_repository, texts, model, route):
    assert_served_like_embedded(server, late_repository, texts, model, route)


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


@pytest.mark.parametrize("model", ["colbert"])
def test_retriever_over_triton_ranks_like_embedded(server, late_repository, texts, model):
    assert_ranks_like_embedded(server, late_repository, texts, model)


def test_mvr_over_triton_equals_embedded(server, repository, texts):
    """The server inserts the viewer tokens as the manifest says: one query vector, 4 views per document."""
    embedded = OnnxEngine(repository / "mvr")
    queries = {"1": "protein folding", "2": "cancer risk"}
    with TritonEngine(server.grpc_url, "mvr", "grpc", "text") as triton:
        docs = triton.encode(texts, "doc", batch_size=5)
        assert_same(docs, embedded.encode(texts, "doc"))
        assert_same(triton.encode(list(queries.values()), "query"), embedded.encode(list(queries.values()), "query"))
        index = build_index(embedded, docs, [f"d{i}" for i in range(len(texts))])
        got, expected = Retriever(triton, index).search(queries, k=5), Retriever(embedded, index).search(queries, k=5)
    assert set(docs.lengths) == {4}
    for qid in queries:
        assert list(got[qid]) == list(expected[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(expected[qid].values()), atol=1e-4)
