"""Search models on a real Triton server (`lir-serve --index`): a dense, a sparse and a re-ranking index
answer like the in-process `Retriever` and `Pipeline`, with stage timings; a bad request fails alone with
INVALID_ARGUMENT; a corrupted index fails its model's load in one line naming the file."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from lir.clients.indexes import open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.reranker import Pipeline, Reranker
from lir.clients.retriever import Retriever, build_index
from lir.clients.triton_retriever import TritonRetriever
from lir.collections import read_queries
from lir.errors import LirError
from lir.serving.searches import SearchSpec
from lir.serving.server import TritonServer, users_of
from tests.test_serving import _ports, _serve, _tritons_of
from tests.test_serving_trust import INVALID, _batched_rounds

MAX_K = 20  # the dense model's max_k
DEPTH = 15  # the re-ranking depth
DOCS = 60


@pytest.fixture(scope="module")
def corpus(scifact, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The first SciFact documents: a corpus file and doc_id → text."""
    lines = (scifact / "corpus.jsonl").read_text().splitlines()[:DOCS]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records = [json.loads(line) for line in lines]
    return path, {r["_id"]: f"{r['title']} {r['text']}".strip() for r in records}


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tiny_export, late_repository, cross_repository) -> Path:
    """The exports `tiny` (dense), `splade` (sparse) and `mono` (a cross-encoder), without graph models."""
    repo = tmp_path_factory.mktemp("search-repo")
    for export in (tiny_export, late_repository / "splade", cross_repository / "mono"):
        shutil.copytree(export, repo / export.name, symlinks=True)
    return repo


@pytest.fixture(scope="module")
def indexes(repository, corpus, tmp_path_factory) -> dict[str, Path]:
    """A dense index (tiny) and a sparse one (splade) of the corpus."""
    root = tmp_path_factory.mktemp("indexes")
    _, texts = corpus
    for name, export in (("dense", "tiny"), ("sparse", "splade")):
        engine = OnnxEngine(repository / export)
        build_index(engine, engine.encode_docs(list(texts.values())), list(texts)).save(root / name)
    return {"dense": root / "dense", "sparse": root / "sparse"}


@pytest.fixture(scope="module")
def server(repository, indexes, corpus):
    """Triton with `dense.search` (max_k MAX_K), `sparse.search` and `reranked.search` (dense, mono re-ranks)."""
    searches = [
        SearchSpec.parse(f"{indexes['dense']}=dense,max_k={MAX_K}"),
        SearchSpec.parse(f"{indexes['sparse']}=sparse"),
        SearchSpec.parse(f"{indexes['dense']}=reranked,rerank=mono,docs={corpus[0]},depth={DEPTH}"),
    ]
    triton = TritonServer(repository, **_ports(), searches=searches).start()
    workdir = triton._workdir
    yield triton
    triton.stop()
    assert users_of(workdir) == [] and not workdir.exists()


@pytest.fixture(scope="module")
def queries(scifact) -> dict[str, str]:
    return dict(list(read_queries(str(scifact), "test").items())[:8])


def _assert_same(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for qid, docs in expected.items():
        assert list(got[qid]) == list(docs), qid
        np.testing.assert_allclose(list(got[qid].values()), list(docs.values()), atol=1e-5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["dense", "sparse"])
def test_results_equal_the_in_process_retriever(server, repository, indexes, queries, model, protocol):
    export = repository / ("tiny" if model == "dense" else "splade")
    expected = Retriever(OnnxEngine(export), open_index(indexes[model])).search(queries, k=10)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with TritonRetriever(url, f"{model}.search", protocol) as triton:
        _assert_same(triton.search(queries, k=10, batch_size=3), expected)
        assert set(triton.timings) == {"encode_ms", "search_ms", "total_ms"}
        assert min(triton.timings.values()) > 0


def test_rerank_equals_the_in_process_pipeline(server, repository, indexes, corpus, queries):
    retriever = Retriever(OnnxEngine(repository / "tiny"), open_index(indexes["dense"]))
    pipeline = Pipeline(retriever, Reranker(OnnxEngine(repository / "mono")), corpus[1])
    with TritonRetriever(server.grpc_url, "reranked.search") as triton:
        _assert_same(triton.search(queries, k=5), pipeline.search(queries, k=5, depth=DEPTH))
        assert set(triton.timings) == {"encode_ms", "search_ms", "rerank_ms", "total_ms"}
        assert min(triton.timings.values()) > 0
    with urllib.request.urlopen(f"http://{server.host}:{server.ports['metrics']}/metrics") as reply:
        metrics = reply.read().decode()
    for stage in ("encode", "search", "rerank"):
        count = re.search(rf'lir_search_stage_ms_count{{model="reranked.search",stage="{stage}"}} (\d+)', metrics)
        assert count and int(count.group(1)) > 0, stage


def _request(texts: list, k: int | None = None) -> list[grpcclient.InferInput]:
    array = np.empty((len(texts), 1), dtype=object)
    array[:, 0] = [t.encode() if isinstance(t, str) else t for t in texts]
    tensor = grpcclient.InferInput("QUERY", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    if k is None:
        return [tensor]
    ks = grpcclient.InferInput("K", [len(texts), 1], "INT32")
    ks.set_data_from_numpy(np.full((len(texts), 1), k, np.int32))
    return [tensor, ks]


def test_bad_requests_fail_alone_with_invalid_argument(server, repository, indexes, queries):
    """Non-UTF-8 bytes, a K of 0 or over max_k, an oversized or an empty query are refused each on its own;
    the valid requests batched with them are served (without K: the top 10)."""
    texts = list(queries.values())
    expected = Retriever(OnnxEngine(repository / "tiny"), open_index(indexes["dense"])).search(queries, k=10)
    bad = {
        "not UTF-8": _request([b"\xff\xfe broken"]),
        "K of 0": _request(["fine"], k=0),
        "K over max_k": _request(["fine"], k=MAX_K + 1),
        "oversized query": _request(["x" * (64 * 1024 + 1)]),
        "empty query": _request(["fine", "  "]),
    }
    requests = [("dense.search", _request(texts * 8, k=MAX_K), {})]  # keeps the model busy: the others queue up
    for inputs in bad.values():
        requests += [("dense.search", _request(texts[:3]), {}), ("dense.search", inputs, {})]

    def check(answers) -> None:
        assert answers[0][1] is None, answers[0][1]
        for reason, (result, error), (wrong, refused) in zip(bad, answers[1::2], answers[2::2], strict=True):
            assert error is None, error
            rows = [[d.decode() for d in row] for row in result.as_numpy("DOC_IDS")]
            assert rows == [list(expected[qid]) for qid in list(queries)[:3]]
            assert wrong is None and refused is not None and refused.status() == INVALID, (reason, refused)

    _batched_rounds(server, "dense.search", requests, check)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for reason, message in (
        ("not UTF-8", "QUERY #0 is not valid UTF-8 text"),
        ("K over max_k", f"K #0 is {MAX_K + 1}, outside 1 to {MAX_K} \\(max_k\\)"),
        ("oversized query", "QUERY #0 has 65537 bytes, over the limit of 65536 per text"),
        ("empty query", "QUERY #1 is empty"),
    ):
        with pytest.raises(InferenceServerException, match=message):
            client.infer("dense.search", bad[reason])
    with TritonRetriever(server.grpc_url, "dense.search") as triton, pytest.raises(LirError, match="outside 1 to"):
        triton.search(queries, k=MAX_K + 1)


def test_a_corrupted_index_fails_its_model_naming_the_file(repository, indexes, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(indexes["dense"], broken)
    with open(broken / "index.faiss", "r+b") as handle:
        handle.seek(100)
        handle.write(b"XXXX")
    served = tmp_path / "repo"
    shutil.copytree(repository / "tiny", served / "tiny", symlinks=True)
    ports = [x for name, port in _ports().items() for x in (f"--{name.replace('_', '-')}", str(port))]
    serve = _serve("--repository", str(served), "--index", f"{broken}=broken", *ports)
    assert serve.wait(timeout=120) == 1
    assert serve.stderr.read() == (
        f"lir-serve: error: model 'broken.search' failed to load: Internal: LirError: {broken / 'index.faiss'} "
        "does not match its checksum: the index is corrupted\n"
    )
    assert _tritons_of(served.resolve()) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{tmp}/none", "is not a lir index: no index.json"),
        ("{dense}=a.b", "may not contain '.'"),
        ("{dense},rerank=mono", "rerank=mono needs docs=CORPUS"),
        ("{dense},rerank=mono,docs=x,depth=5,max_k=6", "max_k=6 is over the re-ranking depth 5"),
        ("{dense},export=splade", "the index was built with model 'tiny'"),
        ("{dense},depth=zero", "docs= and depth= are options of rerank=MODEL"),
    ],
)
def test_index_specs_are_refused_before_triton_starts(repository, indexes, tmp_path, spec, message):
    text = spec.format(tmp=tmp_path, dense=indexes["dense"])
    with pytest.raises(LirError, match=re.escape(message)):
        TritonServer(repository, **_ports(), searches=[SearchSpec.parse(text)]).start()
