"""The commands as a user runs them: help, the index → search → evaluate path, exit codes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lir.cli import main
from lir.trec import read_run


def lir(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "command",
    [
        ["lir.cli"],
        ["lir.cli", "index"],
        ["lir.cli", "search"],
        ["lir.cli", "evaluate"],
        ["lir.export.cli"],
        ["lir.serving.cli"],
    ],
)
def test_every_command_has_help(command):
    done = subprocess.run([sys.executable, "-m", *command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage:" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "--corpus", "x", "--output", "y"], "Missing option '--engine'"),
        (["search", "--index", "i", "--queries", "q", "--output", "r", "-k", "0"], "0 is not in the range x>=1"),
        (["re-rank", "--engine", "e", "--output", "r"], "Missing option '--run' or '--candidates'"),
        (["rerank", "--engine", "e", "--run", "r", "--candidates", "c", "--output", "o"], "--run excludes"),
        (["evaluate", "--run", "r", "--qrels", "q", "--metrics"], "'--metrics' requires an argument"),
        (["frob"], "No such command 'frob'"),
    ],
)
def test_usage_errors_exit_2_with_clicks_message(args, message, capsys):
    assert main(args) == 2  # main returns the code, never raises SystemExit
    error = capsys.readouterr().err
    assert "Error: " in error and message in error, error


def test_help_lists_fit_and_the_torch_path(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit " in out and "lir fit --config train.yaml" in out and "re-rank" in out
    assert main(["index", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[default: fp32]" in out and "With --config X.yaml, lir index runs a PyTorch model" in out
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("lir ")


def test_shell_completion_is_clicks():
    env = os.environ | {"_LIR_COMPLETE": "bash_complete", "COMP_WORDS": "lir rerank --cand", "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-m", "lir.cli"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.split() == ["plain,--candidates"]


def test_index_search_evaluate(tiny_export, scifact, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = (scifact / "corpus.jsonl").read_text().splitlines()[:150]
    corpus.write_text("\n".join(lines) + "\n")
    ids = [json.loads(line)["_id"] for line in lines]
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tcancer and smoking\nq2\tprotein folding\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(f"q1 0 {ids[0]} 1\nq2 0 {ids[1]} 1\n")
    index = tmp_path / "index"
    done = lir("index", "--engine", f"onnx:{tiny_export}", "--corpus", str(corpus), "--output", str(index))
    assert done.returncode == 0, done.stderr
    assert "indexed 150 documents" in done.stdout and "docs/s" in done.stdout
    run = tmp_path / "run.trec"
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(run), "-k", "20")
    assert done.returncode == 0, done.stderr
    assert {qid: len(docs) for qid, docs in read_run(run).items()} == {"q1": 20, "q2": 20}
    done = lir("evaluate", "--run", str(run), "--qrels", str(qrels), "--metrics", "nDCG@10", "R@100", "--json")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"nDCG@10", "R@100"}
    again = lir("index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(index))
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "--engine", "nowhere", "--corpus", "x", "--output", "y"], "model directory nowhere does not exist"),
        (["search", "--index", "nowhere", "--queries", "x", "--output", "y"], "not a lir index"),
        (["evaluate", "--run", "missing.trec", "--qrels", "x"], "does not exist"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize(
    "model, factory, params",
    [
        ("colbert", None, None),
        ("colbert", "IVF16,Flat", "nprobe=16"),
        ("colbert", "plaid,nbits=4", "ncells=8"),
        ("splade", None, None),
        ("splade", "uint8", None),
        ("splade", "seismic,n_postings=100", "query_cut=20,heap_factor=0.9"),
    ],
)
def test_index_and_search_every_family(late_repository, scifact, tmp_path, model, factory, params):
    from lir.clients.indexes import open_index
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.retriever import Retriever

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join((scifact / "corpus.jsonl").read_text().splitlines()[:60]) + "\n")
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tcancer and smoking\nq2\tprotein folding\n")
    index, run = tmp_path / "index", tmp_path / "run.trec"
    extra = ["--factory", factory] if factory else []
    done = lir(
        "index", "--engine", str(late_repository / model), "--corpus", str(corpus), "--output", str(index), *extra
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("indexed ") and done.stdout.count("\n") == 1, done.stdout  # nothing else
    extra = ["--search-params", params] if params else []
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(run), "-k", "10", *extra)
    assert done.returncode == 0, done.stderr
    got = read_run(run)
    assert {qid: len(docs) for qid, docs in got.items()} == {"q1": 10, "q2": 10}
    engine = OnnxEngine(late_repository / model)  # the run is what the Python API finds
    expected = Retriever(engine, open_index(index)).search({"q1": "cancer and smoking"}, k=10)
    assert list(got["q1"]) == list(expected["q1"])
