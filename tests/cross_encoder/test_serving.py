"""Cross-encoders through a real Triton server beside a bi-encoder: text endpoint and scorer graphs equal
onnxruntime, listwise requests batched together stay apart, a bad request fails alone."""

from __future__ import annotations

import json
import queue
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from lir.clients.onnx_engine import OnnxEngine
from lir.manifest import load_manifest
from lir.serving.server import TritonServer
from lir.tokenization import PairEncoder
from tests.test_serving import _ports

QUERIES = ["what causes fever in children?", "vitamin d deficiency", "how do cells divide?", "aspirin"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory, cross_repository, tiny_export) -> Path:
    """The tiny cross-encoders (`mono`, `setenc`) and the tiny bi-encoder (`tiny`) in one repository."""
    mixed = tmp_path_factory.mktemp("mixed")
    for source in [*cross_repository.iterdir(), tiny_export, tiny_export.parent / "tiny.encoder"]:
        shutil.copytree(source, mixed / source.name, symlinks=True)
    return mixed


@pytest.fixture(scope="module")
def server(repository):
    triton = TritonServer(repository, **_ports()).start()
    yield triton
    triton.stop()


@pytest.fixture(scope="module")
def docs(scifact) -> list[str]:
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:7]]
    return [f"{r['title']} {r['text']}" for r in records]


def _strings(name: str, values: list[str]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(values), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[v.encode()] for v in values], dtype=object))
    return tensor


def _text_inputs(query: str, docs: list[str]) -> list[grpcclient.InferInput]:
    return [_strings("QUERY", [query] * len(docs)), _strings("DOC", docs)]


def _ids_inputs(
    directory: Path, query: str, docs: list[str], change: Callable[[str, np.ndarray], np.ndarray] | None = None
) -> list[grpcclient.InferInput]:
    """The scorer graph's inputs for one query's candidates (one group), each `change(name, array)`d."""
    pairs = PairEncoder.from_manifest(directory, load_manifest(directory))
    feeds = pairs.batch(pairs.encode([query] * len(docs), docs))
    if pairs.pair.listwise:
        feeds["groups"] = np.zeros((len(docs), 1), np.int64)  # [batch] is configured as [1] reshaped to []
    inputs = []
    for name, array in feeds.items():
        array = change(name, array) if change else array
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _concurrently(client: grpcclient.InferenceServerClient, model: str, requests: list[list]) -> list:
    """Send every request at once (so that Triton batches them); the results or errors in request order."""
    answers: queue.Queue = queue.Queue()
    for number, inputs in enumerate(requests):
        client.async_infer(model, inputs, callback=lambda result, error, n=number: answers.put((n, result, error)))
    found = dict((n, (result, error)) for n, result, error in (answers.get(timeout=60) for _ in requests))
    return [found[n] for n in range(len(requests))]


def test_bi_and_cross_encoders_are_served_together(server):
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request) as reply:
        models = {m["name"]: m.get("state") for m in json.loads(reply.read())}
    assert models == dict.fromkeys(["mono", "mono.scorer", "setenc", "setenc.scorer", "tiny", "tiny.encoder"], "READY")
    assert server.load_failure() is None


@pytest.mark.parametrize("model", ["mono", "setenc"])
@pytest.mark.parametrize("mode", ["text", "ids"])
def test_batched_requests_equal_onnxruntime_and_stay_apart(server, repository, docs, model, mode):
    """Requests of several queries at once, each one group: every score equals the query scored alone."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    name = model if mode == "text" else f"{model}.scorer"
    blocker = (QUERIES[0], (docs * 40)[:200])  # keeps the model busy while the others queue up (and are batched)
    groups = [blocker] + [(q, docs[: len(docs) - i]) for _ in range(4) for i, q in enumerate(QUERIES)]
    requests = [
        _text_inputs(q, texts) if mode == "text" else _ids_inputs(repository / model, q, texts) for q, texts in groups
    ]
    engine = OnnxEngine(repository / model)
    expected = [engine.score_pairs([query] * len(texts), texts) for query, texts in groups]
    for _ in range(10):  # until Triton batched some of them (timing: the tiny models are fast)
        before = server.statistics(name)["model_stats"][0]["execution_count"]
        for want, (result, error) in zip(expected, _concurrently(client, name, requests), strict=True):
            assert error is None, error
            got = result.as_numpy("SCORES" if mode == "text" else "scores").reshape(-1)
            np.testing.assert_allclose(got, want, atol=1e-5)
        if server.statistics(name)["model_stats"][0]["execution_count"] - before < len(requests):
            return
    pytest.fail("the requests were never batched together")


def test_parameters_name_the_family(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for model, listwise in (("mono", "false"), ("setenc", "true")):
        parameters = client.get_model_config(model, as_json=True)["config"]["parameters"]
        assert parameters["family"]["string_value"] == "cross-encoder"
        assert parameters["listwise"]["string_value"] == listwise
        assert (
            parameters["doc_encoder_sha256"]["string_value"]
            == OnnxEngine(server.repository / model).fingerprint["doc_encoder_sha256"]
        )


def test_a_bad_request_fails_alone(server, docs):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    requests = [_text_inputs(QUERIES[0], docs[:3]), _text_inputs("  ", docs[:2]), _text_inputs(QUERIES[1], docs[:4])]
    results = _concurrently(client, "mono", requests)
    assert results[1][0] is None and "query #0 is empty" in str(results[1][1])
    assert results[1][1].status() == "StatusCode.INVALID_ARGUMENT"
    assert results[0][1] is None and results[2][1] is None
    assert results[2][0].as_numpy("SCORES").reshape(-1).shape == (4,)


@pytest.mark.parametrize("model", ["mono", "setenc"])
def test_bad_pairs_are_invalid_arguments(server, repository, docs, model):
    """Malformed pairs by text or by token ids are refused each alone with INVALID_ARGUMENT; the valid
    requests sent with them are scored as if alone."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    valid = _ids_inputs(repository / model, QUERIES[2], docs[:3])
    bad_ids = [
        _ids_inputs(repository / model, QUERIES[2], docs[:3], lambda n, a: a + 10**6 if n == "input_ids" else a),
        _ids_inputs(
            repository / model,
            QUERIES[2],
            docs[:3],
            lambda n, a: a if n == "groups" else np.pad(a, [(0, 0), (0, 4000)]),
        ),
    ]
    bad_texts = [
        [_strings("QUERY", [QUERIES[0]]), _strings("DOC", ["a", "b"])],
        [_strings("QUERY", [QUERIES[0]]), _strings("DOC", ["x" * 70_000])],
    ]
    expected = OnnxEngine(repository / model).score_pairs([QUERIES[2]] * 3, docs[:3])
    for name, bad in ((model, bad_texts), (f"{model}.scorer", bad_ids)):
        good = _text_inputs(QUERIES[2], docs[:3]) if name == model else valid
        results = _concurrently(client, name, [good, *bad, good])
        for result, error in (results[0], results[-1]):
            assert error is None, error
            got = result.as_numpy("SCORES" if name == model else "scores").reshape(-1)
            np.testing.assert_allclose(got, expected, atol=1e-5)
        for result, error in results[1:-1]:
            assert result is None and error.status() == "StatusCode.INVALID_ARGUMENT", error
