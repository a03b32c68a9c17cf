"""Re-ranking: `Reranker` over every model family and engine, the `lir rerank` command, the retrieve → re-rank
pipeline; references are brute force with each family's rule and PyTorch's cross-encoder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lir.clients.dense_index import DenseIndex
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.reranker import Pipeline, Reranker, ranked
from lir.clients.retriever import Retriever
from lir.clients.triton_engine import TritonEngine
from lir.errors import LirError
from lir.serving.server import TritonServer
from lir.trec import read_run, write_run
from lir.vectors import MultiVectors, SparseVectors
from tests.test_serving import _ports

CROSS_ENCODERS = ("mono", "setenc")
"""The tiny cross-encoders of the `cross_repository` fixture: pointwise and listwise (set-encoder)."""
QUERIES = {"q1": "cancer risk of smoking", "q2": "protein folding in cells", "q3": "vitamin D and bone density"}


@pytest.fixture(scope="module")
def corpus(scifact) -> dict[str, str]:
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:40]]
    return {r["_id"]: f"{r['title']} {r['text']}".strip() for r in records}


@pytest.fixture(scope="module")
def candidates(corpus) -> dict[str, list[tuple[str, str]]]:
    """Overlapping candidate lists of different lengths (texts shared between queries are encoded once)."""
    items = list(corpus.items())
    return {"q1": items[:12], "q2": items[6:20], "q3": items[15:18]}


def brute_force(engine, query: str, texts: list[str]) -> np.ndarray:
    """The family's rule on the query and the texts encoded on their own, written out in numpy."""
    encoded_query, docs = engine.encode_queries([query]), engine.encode_docs(texts, batch_size=1)
    if isinstance(docs, MultiVectors):
        maxima = [(encoded_query[0] @ docs[i].T).max(axis=1) for i in range(len(texts))]
        return np.array([m.mean() if engine.aggregation == "mean" else m.sum() for m in maxima])
    if isinstance(docs, SparseVectors):
        return docs.to_dense() @ encoded_query.to_dense()[0]
    return docs @ encoded_query[0]


@pytest.fixture(scope="module", params=["single-vector", "multi-vector", "sparse"])
def bi_encoder(request) -> OnnxEngine:
    if request.param == "single-vector":
        return OnnxEngine(request.getfixturevalue("tiny_export"))
    late = request.getfixturevalue("late_repository")
    return OnnxEngine(late / ("colbert" if request.param == "multi-vector" else "splade"))


def test_bi_encoders_rerank_by_their_family_rule(bi_encoder, candidates):
    run = Reranker(bi_encoder, batch_size=4).rerank_run(QUERIES, candidates)
    assert list(run) == list(candidates)
    for qid, found in candidates.items():
        assert list(run[qid]) == [did for did, _ in found]
        expected = brute_force(bi_encoder, QUERIES[qid], [text for _, text in found])
        np.testing.assert_allclose(list(run[qid].values()), expected, rtol=1e-5, atol=1e-5)
    single = Reranker(bi_encoder).rerank(QUERIES["q2"], [text for _, text in candidates["q2"]])
    np.testing.assert_allclose(single, list(run["q2"].values()), rtol=1e-5, atol=1e-5)


def test_depth_keeps_the_first_candidates(tiny_export, candidates):
    reranker = Reranker(OnnxEngine(tiny_export))
    full = reranker.rerank_run(QUERIES, candidates)
    shallow = reranker.rerank_run(QUERIES, candidates, depth=5)
    assert {qid: list(scores) for qid, scores in shallow.items()} == {
        qid: [did for did, _ in found[:5]] for qid, found in candidates.items()
    }
    for qid, scores in shallow.items():
        np.testing.assert_allclose(list(scores.values()), [full[qid][did] for did in scores], atol=1e-6)
    assert reranker.rerank("a query", []).shape == (0,)
    assert reranker.rerank_run(QUERIES, {}) == {}
    with pytest.raises(LirError, match="2 queries of the candidates have no text"):
        reranker.rerank_run({"q1": "x"}, candidates)


def test_pipeline_reranks_the_retrieved_candidates(tiny_export, late_repository, corpus):
    first = OnnxEngine(tiny_export)
    index = DenseIndex.build(first.encode_docs(list(corpus.values())), list(corpus), model=first.fingerprint)
    retriever = Retriever(first, index)
    reranker = Reranker(OnnxEngine(late_repository / "colbert"))
    run = Pipeline(retriever, reranker, corpus).search(QUERIES, k=5, depth=15)
    retrieved = retriever.search(QUERIES, k=15)
    for qid, query in QUERIES.items():
        scores = reranker.rerank(query, [corpus[did] for did in retrieved[qid]])
        expected = ranked(dict(zip(retrieved[qid], scores.tolist(), strict=True)))[:5]
        assert list(run[qid]) == expected
    with pytest.raises(LirError, match="has no text"):
        Pipeline(retriever, reranker, {}).search(QUERIES, k=5, depth=15)


def lir(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True, **options)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory, corpus, candidates):
    """A first-stage run (scores falling with the candidate order), its queries and docs, and the same as a
    candidates TSV."""
    folder = tmp_path_factory.mktemp("rerank")
    write_run(
        folder / "first.trec",
        {qid: {did: 100.0 - i for i, (did, _) in enumerate(found)} for qid, found in candidates.items()},
    )
    (folder / "queries.tsv").write_text("".join(f"{qid}\t{text}\n" for qid, text in QUERIES.items()))
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": did, "text": text}) + "\n" for did, text in corpus.items())
    )
    rows = [
        f"{qid}\t{QUERIES[qid]}\t{did}\t{rank}\t{100.0 - rank}\t{text}\n"
        for qid, found in candidates.items()
        for rank, (did, text) in enumerate(found, 1)
    ]
    (folder / "candidates.tsv").write_text("qid\tquery\tdocid\trank\tscore\tpassage\n" + "".join(rows))
    return folder


@pytest.mark.parametrize("source", ["run", "candidates"])
def test_lir_rerank_writes_the_rerankers_run(tiny_export, candidates, run_files, tmp_path, source):
    output = tmp_path / "reranked.trec"
    if source == "run":
        inputs = ["--run", str(run_files / "first.trec"), "--queries", str(run_files / "queries.tsv")]
        inputs += ["--docs", str(run_files / "corpus.jsonl")]
    else:
        inputs = ["--candidates", str(run_files / "candidates.tsv")]
    done = lir("rerank", "--engine", str(tiny_export), *inputs, "--depth", "10", "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert "re-ranked 23 candidates of 3 queries" in done.stdout and "pairs/s" in done.stdout, done.stdout
    expected = Reranker(OnnxEngine(tiny_export)).rerank_run(QUERIES, candidates, depth=10)
    got = read_run(output)
    for qid, scores in expected.items():
        assert list(got[qid]) == ranked(scores)
        np.testing.assert_allclose([got[qid][did] for did in scores], list(scores.values()), atol=2e-6)


def test_lir_rerank_reads_an_ir_datasets_corpus(tiny_export, scifact, run_files, tmp_path):
    home = tmp_path / "irds"
    layout = ["bash", str(scifact.parent / "make_ir_datasets_home.sh"), str(home)]
    subprocess.run(layout, check=True, capture_output=True)
    first = ["--run", str(run_files / "first.trec"), "--queries", str(run_files / "queries.tsv")]
    runs = {}
    for name, docs in (("ir_datasets", "beir/scifact"), ("folder", str(scifact))):
        output = str(tmp_path / f"{name}.trec")
        env = os.environ | {"IR_DATASETS_HOME": str(home)}
        done = lir("rerank", "--engine", str(tiny_export), *first, "--docs", docs, "--output", output, env=env)
        assert done.returncode == 0, done.stderr
        runs[name] = read_run(output)
    assert runs["ir_datasets"] == runs["folder"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "first.trec"], "--run needs --queries and --docs"),
        (
            ["--run", "first.trec", "--queries", "queries.tsv", "--docs", "empty.jsonl"],
            "20 documents of the run are not in",
        ),
        (
            ["--run", "first.trec", "--queries", "empty.jsonl", "--docs", "corpus.jsonl"],
            "3 queries of the run are not in",
        ),
        (["--candidates", "queries.tsv"], "names no qid column"),
        (["--candidates", "candidates.tsv", "--docs", "corpus.jsonl"], "drop --queries and --docs"),
        (["--candidates", "missing.tsv"], "does not exist"),
    ],
)
def test_rerank_errors_are_one_line(tiny_export, run_files, args, message, tmp_path):
    (run_files / "empty.jsonl").write_text("")
    done = lir("rerank", "--engine", str(tiny_export), *args, "--output", str(tmp_path / "out.trec"), cwd=run_files)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_rerank_depth_must_be_positive(tiny_export, run_files, tmp_path):
    args = ("--candidates", "candidates.tsv", "--depth", "0", "--output", str(tmp_path / "out.trec"))
    done = lir("rerank", "--engine", str(tiny_export), *args, cwd=run_files)
    assert done.returncode == 2 and "Invalid value for '--depth': 0 is not in the range x>=1" in done.stderr


def test_rerank_has_help():
    done = lir("rerank", "--help")
    assert done.returncode == 0 and "--candidates" in done.stdout


def test_a_bi_encoder_has_no_pair_scorer(tiny_export):
    with pytest.raises(LirError, match="is a single-vector model: it encodes texts, not pairs"):
        OnnxEngine(tiny_export).score_pairs(["q"], ["d"])


@pytest.mark.parametrize("name", CROSS_ENCODERS)
def test_cross_encoders_rerank_like_pytorch(cross_repository, cross_checkpoints, candidates, name):
    from lir.train.cross_module import CrossEncoderModule

    module = CrossEncoderModule(str(cross_checkpoints[name]))
    engine = OnnxEngine(cross_repository / name)
    assert engine.listwise == (name == "setenc")
    run = Reranker(engine, batch_size=8).rerank_run(QUERIES, candidates)  # q1, q2: groups larger than a batch
    for qid, found in candidates.items():
        expected = module.score(QUERIES[qid], [text for _, text in found]).scores.numpy()
        np.testing.assert_allclose(list(run[qid].values()), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(LirError, match=f"^{name} is a cross-encoder: it scores .query, document. pairs"):
        engine.encode_queries(["a query"])


def test_listwise_scores_depend_on_the_set_not_its_order_or_batches(cross_repository, candidates):
    engine = OnnxEngine(cross_repository / "setenc")
    texts = [text for _, text in candidates["q2"]]
    forward = Reranker(engine).rerank(QUERIES["q2"], texts)
    np.testing.assert_allclose(Reranker(engine).rerank(QUERIES["q2"], texts[::-1])[::-1], forward, atol=1e-5)
    together = Reranker(engine, batch_size=64).rerank_run(QUERIES, candidates)  # all groups in one batch
    alone = Reranker(engine, batch_size=1).rerank_run(QUERIES, candidates)  # each group a batch of its own
    for qid, scores in together.items():
        np.testing.assert_allclose(list(alone[qid].values()), list(scores.values()), atol=1e-5)
    assert not np.allclose(Reranker(engine).rerank(QUERIES["q2"], texts[:3]), forward[:3], atol=1e-4)


@pytest.fixture(scope="module")
def server(tmp_path_factory, cross_repository, tiny_export):
    """Triton serving the tiny cross-encoders and the tiny bi-encoder from one repository."""
    mixed = tmp_path_factory.mktemp("mixed")
    for source in [*cross_repository.iterdir(), tiny_export, tiny_export.parent / "tiny.encoder"]:
        shutil.copytree(source, mixed / source.name, symlinks=True)
    triton = TritonServer(mixed, **_ports()).start()
    yield triton
    triton.stop()


def _directory(name: str, cross_repository: Path, tiny_export: Path) -> Path:
    return tiny_export if name == "tiny" else cross_repository / name


@pytest.mark.parametrize("name", [*CROSS_ENCODERS, "tiny"])
@pytest.mark.parametrize("protocol, mode", [("grpc", "text"), ("http", "text"), ("grpc", "ids")])
def test_reranking_through_triton_equals_embedded(
    server, cross_repository, tiny_export, candidates, name, protocol, mode
):
    directory = _directory(name, cross_repository, tiny_export)
    expected = Reranker(OnnxEngine(directory)).rerank_run(QUERIES, candidates)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with TritonEngine(url, name, protocol, mode, model_dir=directory) as engine:
        assert engine.listwise == (name == "setenc")
        got = Reranker(engine, batch_size=8).rerank_run(QUERIES, candidates)
    for qid, scores in expected.items():
        assert list(got[qid]) == list(scores)
        np.testing.assert_allclose(list(got[qid].values()), list(scores.values()), atol=1e-5)


@pytest.mark.parametrize("name", [*CROSS_ENCODERS, "tiny"])
def test_lir_rerank_through_triton_equals_embedded(server, cross_repository, tiny_export, run_files, tmp_path, name):
    runs = {}
    for route, engine in (
        ("embedded", str(_directory(name, cross_repository, tiny_export))),
        ("triton", f"triton://{server.grpc_url}/{name}"),
    ):
        output = tmp_path / f"{route}.trec"
        done = lir(
            "rerank", "--engine", engine, "--candidates", str(run_files / "candidates.tsv"), "--output", str(output)
        )
        assert done.returncode == 0, done.stderr
        runs[route] = read_run(output)
    for qid, scores in runs["embedded"].items():
        assert list(runs["triton"][qid]) == list(scores)
        np.testing.assert_allclose(list(runs["triton"][qid].values()), list(scores.values()), atol=2e-6)
