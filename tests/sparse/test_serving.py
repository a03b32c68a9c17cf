"""Sparse models (SPLADE, inference-free SPLADE) through a real Triton server: every route equals the embedded
engine."""

from __future__ import annotations

import pytest

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.triton_engine import TritonEngine
from lir.vectors import SparseVectors
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
    """The late SPLADE plus an inference-free Lightning IR SPLADE (static query weights: no query graph)
    exported beside it."""
    from lir.export.bundle import export_model
    from tests.reference import build

    out = repository_of(late_repository, ("splade",), tmp_path_factory.mktemp("repo") / "late")
    checkpoint = tmp_path_factory.mktemp("ckpt") / "splade-if"
    build(reference_backbone, checkpoint, "SpladeConfig", {"query_weighting": "static", "query_expansion": False})
    export_model(str(checkpoint), out, "splade-if", parity_data=str(scifact), log=lambda _: None)
    return out


server, texts = serving_fixtures()


def test_every_graph_is_served(server):
    assert_all_served(server, {"splade": ("encoder",), "splade-if": ("encoder",)})


@pytest.mark.parametrize("model", ["splade"])
@pytest.mark.parametrize("route", [("grpc", "text"), ("http", "text"), ("grpc", "ids")])
def test_encodings_equal_the_embedded_engine(server, late_repository, texts, model, route):
    assert_served_like_embedded(server, late_repository, texts, model, route)


@pytest.mark.parametrize("model", ["splade"])
def test_retriever_over_triton_ranks_like_embedded(server, late_repository, texts, model):
    assert_ranks_like_embedded(server, late_repository, texts, model)


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
        assert_same(triton.encode(queries, "query"), embedded.encode(queries, "query"))
        assert_same(triton.encode(texts[:8], "doc", batch_size=3), embedded.encode(texts[:8], "doc"))
