"""Untrusted requests against a real Triton server: a bad request fails alone with INVALID_ARGUMENT, a batch
that fails anyway is run request by request, oversized requests are refused before tokenizing, and a
bounded load test mixes malformed requests into valid ones from several clients."""

from __future__ import annotations

import json
import queue
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from lir.clients.onnx_engine import OnnxEngine
from lir.manifest import load_manifest
from lir.serving.server import TritonServer, users_of
from lir.tokenization import TextEncoder
from tests.test_serving import _ports

INVALID = "StatusCode.INVALID_ARGUMENT"
MAX_TEXTS = 16  # the `max_texts` config parameter of this repository's text endpoint
REQUEST_BYTES = 256 * 1024  # LIR_TRITON_MAX_REQUEST_BYTES of this server
POISON, SLOW = 1000, 1001  # token ids (texts: POISON_TEXT, SLOW_TEXT) that make the fault-injected models
POISON_TEXT, SLOW_TEXT = "POISON", "SLOW"  # fail on any batch that holds them, or take 0.3 s longer
GRAPH_FAULT = f'''import time

from lir.serving.triton_models import GraphModel


class TritonPythonModel(GraphModel):
    """The graph model with a graph that fails on every batch holding token id {POISON} and is slow on {SLOW}."""

    def initialize(self, args):
        super().initialize(args)
        run = self.session.run

        def run_or_fail(outputs, feeds, *rest):
            if (feeds["input_ids"] == {POISON}).any():
                raise RuntimeError("poisoned batch")
            if (feeds["input_ids"] == {SLOW}).any():
                time.sleep(0.3)
            return run(outputs, feeds, *rest)

        self.session.run = run_or_fail
'''
TEXT_FAULT = f'''import time

from lir.serving.triton_models import TextEncoderModel


class TritonPythonModel(TextEncoderModel):
    """The text endpoint with an engine that fails on every batch holding the text {POISON_TEXT!r} and is
    slow on {SLOW_TEXT!r}."""

    def initialize(self, args):
        super().initialize(args)
        encode = self.engine.encode

        def encode_or_fail(texts, role, **options):
            if {POISON_TEXT!r} in texts:
                raise RuntimeError("poisoned batch")
            if {SLOW_TEXT!r} in texts:
                time.sleep(0.3)
            return encode(texts, role, **options)

        self.engine.encode = encode_or_fail
'''


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tiny_export) -> Path:
    """`tiny` (at most MAX_TEXTS texts per request) and `tiny.encoder`, and fault-injected copies of both,
    `flaky` and `flaky.encoder`."""
    repo = tmp_path_factory.mktemp("trust")
    for name in ("tiny", "tiny.encoder"):
        shutil.copytree(tiny_export.parent / name, repo / name, symlinks=True)
    config = repo / "tiny" / "config.pbtxt"
    config.write_text(
        config.read_text() + f'parameters {{ key: "max_texts" value: {{ string_value: "{MAX_TEXTS}" }} }}\n'
    )
    shutil.copytree(repo / "tiny", repo / "flaky", symlinks=True)
    shutil.copytree(repo / "tiny.encoder", repo / "flaky.encoder", symlinks=True)
    (repo / "flaky" / "1" / "model.py").write_text(TEXT_FAULT)
    (repo / "flaky.encoder" / "1" / "model.py").write_text(GRAPH_FAULT)
    return repo


@pytest.fixture(scope="module")
def server(repository):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LIR_TRITON_MAX_REQUEST_BYTES", str(REQUEST_BYTES))
        triton = TritonServer(repository, **_ports()).start()
    workdir = triton._workdir
    yield triton
    triton.stop()
    assert users_of(workdir) == [] and not workdir.exists()


@pytest.fixture(scope="module")
def pool(scifact, tiny_export) -> list[str]:
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:48]]
    return [f"{r['title']} {r['text']}" for r in records]


@pytest.fixture(scope="module")
def expected(tiny_export, pool) -> dict[str, np.ndarray]:
    """The embedded engine's embeddings of the pool texts per role."""
    engine = OnnxEngine(tiny_export)
    return {role: engine.encode(pool, role) for role in ("query", "doc")}


@pytest.fixture(scope="module")
def encoders(tiny_export) -> dict[str, TextEncoder]:
    manifest = load_manifest(tiny_export)
    return {role: TextEncoder.from_manifest(tiny_export, manifest, role) for role in ("query", "doc")}


def _tensor(name: str, array: np.ndarray, dtype: str | None = None) -> grpcclient.InferInput:
    kind = dtype or {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}.get(array.dtype, "BYTES")
    tensor = grpcclient.InferInput(name, list(array.shape), kind)
    tensor.set_data_from_numpy(array)
    return tensor


def _texts(values: list) -> list[grpcclient.InferInput]:
    array = np.empty((len(values), 1), dtype=object)
    array[:, 0] = [v.encode() if isinstance(v, str) else v for v in values]
    return [_tensor("TEXT", array)]


def _ids(input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> list[grpcclient.InferInput]:
    mask = np.ones(input_ids.shape, np.int64) if attention_mask is None else attention_mask
    return [_tensor("input_ids", input_ids), _tensor("attention_mask", mask)]


def _tokens(encoders, texts: list[str], role: str = "doc") -> list[grpcclient.InferInput]:
    return _ids(*encoders[role].batch(encoders[role].encode(texts)))


def _concurrently(client, requests: list[tuple[str, list, dict]]) -> list[tuple[object, object]]:
    """Send every (model, inputs, parameters) at once, so that Triton batches them; (result, error) each."""
    answers: queue.Queue = queue.Queue()
    for number, (model, inputs, parameters) in enumerate(requests):
        client.async_infer(
            model,
            inputs,
            parameters=parameters,
            callback=lambda result, error, n=number: answers.put((n, result, error)),
        )
    found = {n: (r, e) for n, r, e in (answers.get(timeout=60) for _ in requests)}
    return [found[n] for n in range(len(requests))]


def _batched_rounds(server, model: str, requests: list, check, executions: int | None = None) -> None:
    """Send `requests` together (the first, a large one, keeps the model busy while the others queue up)
    until Triton ran them in at most `executions` batches (default: fewer than requests); `check` the
    answers of every round."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for _ in range(20):
        before = server.statistics(model)["model_stats"][0]["execution_count"]
        check(_concurrently(client, requests))
        if server.statistics(model)["model_stats"][0]["execution_count"] - before <= (executions or len(requests) - 1):
            return
    pytest.fail(f"the requests to {model} were never batched together")


def _embeddings(result, name: str = "embeddings") -> np.ndarray:
    return result.as_numpy(name)


def test_bad_token_ids_fail_alone_with_invalid_argument(server, encoders, pool, expected):
    """Out-of-vocabulary and negative ids, masks other than 0/1, mismatched shapes and over-long sequences
    are refused each on its own; the valid requests batched with them (Triton batches requests of one
    shape) are served."""
    ids, mask = encoders["doc"].batch(encoders["doc"].encode(pool[:3]))
    bad = {
        "out of vocabulary": _ids(np.where(ids == 102, 10**6, ids)),
        "negative id": _ids(-ids),
        "mask of 2": _ids(ids, mask * 2),
        "shapes differ": _ids(ids, mask[:, :-1]),
        "too long": _ids(np.full((1, 65), 1037, np.int64)),
    }
    blocker = ("tiny.encoder", _tokens(encoders, pool), {})  # keeps the model busy while the others queue up
    requests = [blocker]
    for inputs in bad.values():
        requests += [("tiny.encoder", _ids(ids, mask), {}), ("tiny.encoder", inputs, {})]

    def check(answers) -> None:
        assert answers[0][1] is None, answers[0][1]
        np.testing.assert_allclose(_embeddings(answers[0][0]), expected["doc"], atol=1e-5)
        for reason, (result, error), (wrong, refused) in zip(bad, answers[1::2], answers[2::2], strict=True):
            assert error is None, error
            np.testing.assert_allclose(_embeddings(result), expected["doc"][:3], atol=1e-5)
            assert wrong is None and refused is not None and refused.status() == INVALID, (reason, refused)

    _batched_rounds(server, "tiny.encoder", requests, check)


def test_a_batch_that_fails_anyway_is_run_request_by_request(server, tiny_export):
    """A fault the checks cannot see (the graph fails on a valid token id) fails only its own request, also
    when it shares a batch with the others (8 requests of one shape queued behind a slow one: one batch of
    the preferred size 8)."""
    rows = [np.array([[101, POISON if n == 3 else 1037 + n, 102]], np.int64) for n in range(8)]
    requests = [("flaky.encoder", _ids(np.array([[101, SLOW, 102]], np.int64)), {})]
    requests += [("flaky.encoder", _ids(ids), {}) for ids in rows]
    embedded = OnnxEngine(tiny_export)

    def check(answers) -> None:
        for number, (ids, (result, error)) in enumerate(zip(rows, answers[1:], strict=True)):
            if number == 3:
                assert error is not None and error.status() == "StatusCode.INTERNAL"
                assert "RuntimeError: poisoned batch" in error.message()
            else:
                assert error is None, error
                want = embedded.run_batch("doc", ids, np.ones_like(ids))["embeddings"]
                np.testing.assert_allclose(_embeddings(result), want, atol=1e-5)

    _batched_rounds(server, "flaky.encoder", requests, check, executions=2)


def test_any_exception_of_a_text_batch_falls_back_to_each_request(server, pool, expected):
    """The text endpoint likewise, for any exception (not only LirError)."""
    requests = [("flaky", _texts([SLOW_TEXT]), {"role": "doc"})]
    requests += [("flaky", _texts([POISON_TEXT] if n == 2 else pool[n : n + 1]), {"role": "doc"}) for n in range(8)]

    def check(answers) -> None:
        for number, (result, error) in enumerate(answers[1:]):
            if number == 2:
                assert error is not None and error.status() == "StatusCode.INTERNAL"
            else:
                assert error is None, error
                got = _embeddings(result, "EMBEDDINGS")
                np.testing.assert_allclose(got, expected["doc"][number : number + 1], atol=1e-5)

    _batched_rounds(server, "flaky", requests, check, executions=2)


def test_bad_texts_fail_alone_with_invalid_argument(server, pool, expected):
    bad = {
        "not UTF-8": _texts(["fine", b"\xff\xfe broken"]),
        "not strings": [_tensor("TEXT", np.ones((2, 1), np.int64))],
        "text too large": _texts(["x" * (64 * 1024 + 1)]),
        "request too large": _texts(["y" * 60_000] * 5),
        "too many texts": _texts(pool[: MAX_TEXTS + 1]),
        "empty query": _texts(["fine", "   "]),
    }
    requests = [("tiny", _texts(pool[:MAX_TEXTS]), {"role": "doc"})]
    for inputs in bad.values():
        requests += [("tiny", _texts(pool[4:7]), {"role": "query"}), ("tiny", inputs, {"role": "query"})]

    def check(answers) -> None:
        for number, (result, error) in enumerate(answers):
            if number == 0:
                assert error is None, error
                np.testing.assert_allclose(_embeddings(result, "EMBEDDINGS"), expected["doc"][:MAX_TEXTS], atol=1e-5)
            elif number % 2:
                assert error is None, error
                np.testing.assert_allclose(_embeddings(result, "EMBEDDINGS"), expected["query"][4:7], atol=1e-5)
            else:
                assert error is not None and error.status() == INVALID, (list(bad)[number // 2 - 1], error)

    _batched_rounds(server, "tiny", requests, check)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for reason, message in (
        ("not UTF-8", "TEXT #1 is not valid UTF-8 text"),
        ("too many texts", f"{MAX_TEXTS + 1} texts in TEXT, over the limit of {MAX_TEXTS} per request"),
        ("request too large", f"the request holds 300000 bytes of text, over the limit of {REQUEST_BYTES}"),
    ):
        with pytest.raises(InferenceServerException, match=message):
            client.infer("tiny", bad[reason])


def test_an_oversized_text_is_refused_before_tokenizing(server, pool):
    """A 16 MB text is refused at once (it was tokenized for 30 s), and a normal request sent once it has
    reached the server is not held up behind it."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    answers: queue.Queue = queue.Queue()

    def send(name: str, inputs: list) -> None:
        start = time.monotonic()
        client.async_infer(
            "tiny", inputs, callback=lambda result, error: answers.put((name, error, time.monotonic() - start))
        )

    send("huge", _texts(["word " * (16 * 1024 * 1024 // 5)]))
    time.sleep(0.5)  # the 16 MB take about 0.2 s to arrive
    send("normal", _texts(pool[:2]))
    found = {name: (error, elapsed) for name, error, elapsed in (answers.get(timeout=60) for _ in "ab")}
    error, elapsed = found["huge"]
    assert error is not None and error.status() == INVALID and "over the limit of 65536 per text" in error.message()
    assert elapsed < 3, f"the oversized request took {elapsed:.1f} s to refuse"
    error, elapsed = found["normal"]
    assert error is None and elapsed < 2, f"the normal request took {elapsed:.1f} s"


MALFORMED = (
    "oov ids",
    "negative ids",
    "int32 ids",
    "mask of 2",
    "shapes differ",
    "rank 3",
    "too long",
    "huge text",
    "not UTF-8",
    "not strings",
    "too many texts",
    "empty batch",
    "empty query",
)


def _fixed(encoders, texts: list[str], role: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask of `texts` padded to the longest sequence the model takes (one shape for every
    request, so that Triton batches them together)."""
    ids, mask = encoders[role].batch(encoders[role].encode(texts))
    width = [(0, 0), (0, encoders[role].rules.max_length - ids.shape[1])]
    return np.pad(ids, width), np.pad(mask, width)


def _malformed(kind: str, encoders, pool: list[str]) -> tuple[str, list, dict]:
    """One malformed request of `kind`: (model, inputs, parameters)."""
    ids, mask = _fixed(encoders, pool[:2], "doc")
    graph = {
        "oov ids": lambda: _ids(ids + 40_000),
        "negative ids": lambda: _ids(ids - 200),
        "int32 ids": lambda: [_tensor("input_ids", ids.astype(np.int32)), _tensor("attention_mask", mask)],
        "mask of 2": lambda: _ids(ids, mask + 1),
        "shapes differ": lambda: _ids(ids[:1], mask[:1, :-1]),
        "rank 3": lambda: _ids(ids[:, :, None], mask[:, :, None]),
        "too long": lambda: _ids(np.full((2, 80), 1037, np.int64)),
    }
    if kind in graph:
        return "tiny.encoder", graph[kind](), {}
    texts = {
        "huge text": lambda: _texts(["z" * 100_000]),
        "not UTF-8": lambda: _texts([pool[0], b"\xc3\x28"]),
        "not strings": lambda: [_tensor("TEXT", np.zeros((1, 1), np.int64))],
        "too many texts": lambda: _texts(pool[: MAX_TEXTS + 3]),
        "empty batch": lambda: _texts([]),
        "empty query": lambda: _texts([" "]),
    }
    return "tiny", texts[kind](), {"role": "query"}


def _valid(rng: random.Random, encoders, pool: list[str]) -> tuple[str, list, dict, tuple[str, list[int]]]:
    """A valid request of 1 to 4 pool texts, by text or by token ids: (model, inputs, parameters, expected)."""
    role = rng.choice(["query", "doc"])
    rows = rng.sample(range(len(pool)), rng.randint(1, 4))
    texts = [pool[i] for i in rows]
    if rng.random() < 0.5:
        return "tiny", _texts(texts), {"role": role}, (role, rows)
    return "tiny.encoder", _ids(*_fixed(encoders, texts, role)), {}, (role, rows)


def test_load_with_malformed_requests_mixed_in(server, encoders, pool, expected):
    """3000 requests from 6 clients, one in ten malformed: every valid one equals the embedded engine, every
    malformed one is answered INVALID_ARGUMENT."""
    rng = random.Random(7)
    plan = []
    for number in range(3000):
        if number % 10 == 5:
            plan.append((*_malformed(MALFORMED[(number // 10) % len(MALFORMED)], encoders, pool), None))
        else:
            plan.append(_valid(rng, encoders, pool))
    failures: list[str] = []
    lock = threading.Lock()

    def work(share: list) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for model, inputs, parameters, want in share:
            try:
                result = client.infer(model, inputs, parameters=parameters)
                error = None
            except InferenceServerException as exc:
                result, error = None, exc
            problem = _problem(model, result, error, want, expected)
            if problem:
                with lock:
                    failures.append(problem)
        client.close()

    before = {model: _counts(server, model) for model in ("tiny", "tiny.encoder")}
    start = time.monotonic()
    with ThreadPoolExecutor(6) as pool_of_clients:
        list(pool_of_clients.map(work, [plan[i::6] for i in range(6)]))
    elapsed = time.monotonic() - start
    assert failures == [], f"{len(failures)} of 3000 went wrong, e.g. {failures[:3]}"
    assert elapsed < 60, f"3000 requests took {elapsed:.0f} s"
    for model, (requests, executions) in before.items():
        requests_now, executions_now = _counts(server, model)
        assert executions_now - executions < requests_now - requests, f"{model} never batched requests together"


def _counts(server, model: str) -> tuple[int, int]:
    """How many requests reached `model` (successes and failures) and how many batches it ran."""
    stats = server.statistics(model)["model_stats"][0]
    inference = stats["inference_stats"]
    return inference["success"]["count"] + inference["fail"]["count"], stats["execution_count"]


def _problem(model: str, result, error, want, expected) -> str | None:
    """What is wrong with one answer of the load test, or None."""
    if want is None:
        return None if error is not None and error.status() == INVALID else f"malformed request answered {error}"
    if error is not None:
        return f"valid request failed: {error}"
    role, rows = want
    got = _embeddings(result, "EMBEDDINGS" if model == "tiny" else "embeddings")
    if got.shape != (len(rows), 16) or not np.allclose(got, expected[role][rows], atol=1e-5):
        return f"valid request to {model} answered other embeddings"
    return None
