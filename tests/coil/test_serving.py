"""COIL through a real Triton server: every route equals the embedded engine."""

from __future__ import annotations

import numpy as np
import pytest

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, build_index
from lir.clients.triton_engine import TritonEngine
from tests.late_serving import assert_all_served, serving_fixtures


@pytest.fixture(scope="module")
def repository(reference_backbone, scifact, tmp_path_factory):
    """A Lightning IR coil (token vectors of 8, cls vectors of 16), exported."""
    from lir.export.bundle import export_model
    from tests.reference import build

    out = tmp_path_factory.mktemp("repo")
    checkpoint = tmp_path_factory.mktemp("ckpt") / "coil"
    build(reference_backbone, checkpoint, "CoilConfig", {"token_embedding_dim": 8, "cls_embedding_dim": 16})
    export_model(str(checkpoint), out, "coil", parity_data=str(scifact), log=lambda _: None)
    return out


server, texts = serving_fixtures()


def test_every_graph_is_served(server):
    assert_all_served(server, {"coil": ("query_encoder", "doc_encoder")})


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
