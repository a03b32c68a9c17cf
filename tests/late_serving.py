"""What the family Triton tests share: a model repository of some of the late exports (and others exported beside
them), a real Triton server over it (`serving_fixtures`), scifact texts and the checks that the served models are
the embedded ones."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from lir.serving.server import TritonServer
from lir.vectors import MultiVectors
from tests.test_serving import _ports


def repository_of(late_repository: Path, models: tuple[str, ...], target: Path) -> Path:
    """A copy of the late repository with only `models` (their endpoints and graphs)."""

    def others(folder: str, names: list[str]) -> list[str]:
        if Path(folder) != late_repository:
            return []
        return [n for n in names if n.split(".")[0] not in models]

    shutil.copytree(late_repository, target, symlinks=True, ignore=others)
    return target


@contextmanager
def serving(repository: Path) -> Iterator[TritonServer]:
    """A Triton server over `repository`, stopped afterwards."""
    triton = TritonServer(repository, **_ports()).start()
    try:
        yield triton
    finally:
        triton.stop()


def serving_fixtures() -> tuple[Callable, Callable]:
    """The module fixtures `server` (a Triton server over the module's `repository` fixture) and `texts`
    (`scifact_texts`): `server, texts = serving_fixtures()` in a test module."""

    @pytest.fixture(scope="module")
    def server(repository: Path) -> Iterator[TritonServer]:
        with serving(repository) as triton:
            yield triton

    @pytest.fixture(scope="module")
    def texts(scifact: Path) -> list[str]:
        return scifact_texts(scifact)

    return server, texts


def served_models(server: TritonServer) -> dict[str, str | None]:
    """Each model of the server's repository index and its state."""
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request) as reply:
        return {m["name"]: m.get("state") for m in json.loads(reply.read())}


def assert_all_served(server: TritonServer, graphs: dict[str, tuple[str, ...]]) -> None:
    """The server serves each model (key) and its graphs (`model.graph`), all ready, and nothing else."""
    ready = {name: "READY" for model, parts in graphs.items() for name in (model, *(f"{model}.{p}" for p in parts))}
    assert served_models(server) == ready


def scifact_texts(scifact: Path) -> list[str]:
    """The first 24 scifact documents (title and text)."""
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:24]]
    return [f"{r['title']} {r['text']}" for r in records]


def assert_served_like_embedded(server: TritonServer, repository: Path, texts: list[str], model: str, route) -> None:
    """`model` through Triton (`route`: protocol and text/ids mode) has the embedded engine's card and encodings."""
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.triton_engine import TritonEngine

    protocol, mode = route
    url = server.grpc_url if protocol == "grpc" else server.http_url
    embedded = OnnxEngine(repository / model)
    with TritonEngine(url, model, protocol, mode, model_dir=repository / model) as engine:
        card = ("family", "embedding_dim", "aggregation", "fingerprint")
        assert [getattr(engine, a) for a in card] == [getattr(embedded, a) for a in card]
        for role, batch in (("doc", texts), ("query", [t[:50] for t in texts[:9]])):
            assert_same(engine.encode(batch, role, batch_size=5), embedded.encode(batch, role))


def assert_ranks_like_embedded(server: TritonServer, repository: Path, texts: list[str], model: str) -> None:
    """A retriever whose queries `model` encodes through Triton ranks `texts` as the embedded engine's does."""
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.retriever import Retriever, build_index
    from lir.clients.triton_engine import TritonEngine

    embedded = OnnxEngine(repository / model)
    index = build_index(embedded, embedded.encode_docs(texts), [f"d{i}" for i in range(len(texts))])
    queries = {"1": "protein folding", "2": "cancer risk", "3": "vitamin D deficiency"}
    expected = Retriever(embedded, index).search(queries, k=10)
    with TritonEngine(server.grpc_url, model) as triton:
        got = Retriever(triton, index).search(queries, k=10)
    for qid in queries:
        assert list(got[qid]) == list(expected[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(expected[qid].values()), atol=1e-4)


def assert_same(got, expected) -> None:
    """Two encodings of one family are the same (vectors to 1e-5)."""
    assert type(got) is type(expected)
    np.testing.assert_array_equal(got.offsets, expected.offsets)
    if isinstance(got, MultiVectors):
        np.testing.assert_allclose(got.vectors, expected.vectors, atol=1e-5)
    else:
        np.testing.assert_array_equal(got.term_ids, expected.term_ids)
        np.testing.assert_allclose(got.weights, expected.weights, atol=1e-5)
