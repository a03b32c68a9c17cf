"""Streaming, resumable `lir index` (lir.clients.streaming_index): a run killed mid-way resumes from its
finished blocks to the index an uninterrupted run writes; corrupted blocks and another run's blocks are
refused; memory holds one block of documents at a time."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lir.clients.dense_index import DenseIndex
from lir.clients.indexes import open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, write_index
from lir.clients.streaming_index import WORK_SUFFIX, stream_index
from lir.collections import iter_docs
from lir.errors import LirError

QUERIES = {"q1": "cancer and smoking", "q2": "protein folding", "q3": "vitamin D deficiency"}
BUILT_BY = {"url": "test", "directory": None, "variant": "fp32"}


def lir(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True)


def corpus_file(scifact: Path, folder: Path, count: int) -> Path:
    corpus = folder / "corpus.jsonl"
    corpus.write_text("\n".join((scifact / "corpus.jsonl").read_text().splitlines()[:count]) + "\n")
    return corpus


def blocks(output: Path) -> list[Path]:
    return sorted(Path(f"{output}{WORK_SUFFIX}").glob("block-*"))


def interrupted(engine: OnnxEngine, corpus: Path, output: Path, block_docs: int, after: int, spec=None) -> None:
    """A run that stops (as a kill would) once `after` documents have been read for encoding."""

    class Stop(Exception):
        pass

    calls = []

    def docs() -> Iterator[tuple[str, str]]:
        calls.append(1)
        for position, doc in enumerate(iter_docs(str(corpus))):
            if len(calls) == 2 and position == after:
                raise Stop
            yield doc

    with pytest.raises(Stop):
        stream_index(engine, docs, output, BUILT_BY, spec, block_docs=block_docs, progress=False)


def assert_same_index(got: Path, expected: Path, model: Path, tolerance: float = 0.0) -> None:
    """Same doc ids, vectors within `tolerance`, same search results for a few queries."""
    a, b = open_index(got), open_index(expected)
    assert a.doc_ids == b.doc_ids and type(a) is type(b)
    if isinstance(a, DenseIndex):
        va, vb = a.index.reconstruct_n(0, a.index.ntotal), b.index.reconstruct_n(0, b.index.ntotal)
    elif hasattr(a, "vectors"):
        va, vb = np.asarray(a.vectors), np.asarray(b.vectors)
        assert np.array_equal(a.offsets, b.offsets)
    else:
        va, vb = np.asarray(a.postings_impacts), np.asarray(b.postings_impacts)
        assert np.array_equal(a.term_offsets, b.term_offsets) and np.array_equal(a.postings_docs, b.postings_docs)
    assert va.shape == vb.shape and np.abs(va.astype(np.float64) - vb).max(initial=0) <= tolerance
    info_a, info_b = (json.loads((p / "index.json").read_text()) for p in (got, expected))
    assert {k: v for k, v in info_a.items() if k not in ("sha256", "checksum")} == {
        k: v for k, v in info_b.items() if k not in ("sha256", "checksum")
    }
    engine = OnnxEngine(model)
    ra, rb = Retriever(engine, a).search(QUERIES, k=10), Retriever(engine, b).search(QUERIES, k=10)
    assert {q: list(r) for q, r in ra.items()} == {q: list(r) for q, r in rb.items()}


@pytest.mark.parametrize(
    "model, factory",
    [("dense", None), ("dense", "IVF8,Flat"), ("colbert", None), ("splade", None)],
)
def test_a_killed_run_resumes_to_the_uninterrupted_index(
    tiny_export, late_repository, scifact, tmp_path, model, factory
):
    engine_dir = tiny_export if model == "dense" else late_repository / model
    corpus = corpus_file(scifact, tmp_path, 800)
    extra = ["--factory", factory] if factory else []
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = ["--engine", str(engine_dir), "--corpus", str(corpus), "--block-docs", "25", *extra]
    process = subprocess.Popen(
        [sys.executable, "-m", "lir.cli", "index", *args, "--output", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while len(blocks(killed)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(blocks(killed))
    assert 3 <= done < 32 and not killed.exists(), f"the run was not killed mid-way ({done} of 32 blocks)"
    resumed = lir("index", *args, "--output", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("\n") == 1 and f"{25 * done} resumed from finished blocks" in resumed.stdout
    assert not Path(f"{killed}{WORK_SUFFIX}").exists()  # the work folder goes once the index is saved
    stream_index(OnnxEngine(engine_dir), lambda: iter_docs(str(corpus)), whole, *built(killed), block_docs=25)
    assert_same_index(killed, whole, engine_dir)


def built(index: Path) -> tuple[dict, str | None]:
    """What `lir index` recorded as having built `index`, and its spec: to build the same in-process."""
    info = json.loads((index / "index.json").read_text())
    return info["engine"] | {}, info.get("factory") if info["format"] == "lir-dense-index" else info.get("spec")


def test_streamed_index_equals_the_in_memory_one(tiny_export, scifact, tmp_path):
    corpus = corpus_file(scifact, tmp_path, 300)
    engine = OnnxEngine(tiny_export)
    docs = list(iter_docs(str(corpus)))
    write_index(engine, docs, tmp_path / "memory", BUILT_BY)
    line = stream_index(engine, lambda: iter(docs), tmp_path / "streamed", BUILT_BY, block_docs=7, progress=False)
    assert line.startswith("indexed 300 documents in ") and "docs/s, fp32) → " in line
    assert_same_index(tmp_path / "streamed", tmp_path / "memory", tiny_export, tolerance=1e-6)


def test_corrupted_block_is_refused(tiny_export, scifact, tmp_path):
    corpus, output = corpus_file(scifact, tmp_path, 200), tmp_path / "index"
    interrupted(OnnxEngine(tiny_export), corpus, output, block_docs=20, after=90)
    assert len(blocks(output)) == 4
    array = blocks(output)[1] / "embeddings.npy"
    data = bytearray(array.read_bytes())
    data[-3] ^= 0x40
    array.write_bytes(bytes(data))
    args = ["index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(output)]
    done = lir(*args, "--block-docs", "20", "--resume")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "block-000001/embeddings.npy does not match its checksum" in done.stderr and "delete" in done.stderr
    assert not output.exists() and len(blocks(output)) == 4  # nothing encoded, nothing removed
    array.unlink()  # a block that is not whole is refused too
    done = lir(*args, "--block-docs", "20", "--resume")
    assert done.returncode == 1 and "embeddings.npy is missing" in done.stderr
    for file in blocks(output)[1].iterdir():  # a block removed is encoded again
        file.unlink()
    blocks(output)[1].rmdir()
    done = lir(*args, "--block-docs", "20", "--resume")
    assert done.returncode == 0 and "60 resumed from finished blocks" in done.stdout, done.stderr
    whole = tmp_path / "whole"
    stream_index(OnnxEngine(tiny_export), lambda: iter_docs(str(corpus)), whole, *built(output), block_docs=20)
    assert_same_index(output, whole, tiny_export)


def test_resuming_another_run_is_refused(tiny_export, scifact, tmp_path):
    corpus, output = corpus_file(scifact, tmp_path, 100), tmp_path / "index"
    interrupted(OnnxEngine(tiny_export), corpus, output, block_docs=20, after=50)
    other = tmp_path / "other.jsonl"
    lines = corpus.read_text().splitlines()
    other.write_text("\n".join([json.dumps(json.loads(lines[0]) | {"text": "changed"}), *lines[1:]]) + "\n")
    base = ["index", "--engine", str(tiny_export), "--output", str(output), "--block-docs", "20"]
    for args, differ in [
        (["--corpus", str(other), "--resume"], "the corpus differ"),
        (["--corpus", str(corpus), "--resume", "--factory", "HNSW8"], "the index spec differ"),
        (["--corpus", str(corpus), "--resume", "--variant", "int8"], "the doc graph (variant) differ"),
        (["--corpus", str(corpus), "--resume", "--block-docs", "10"], "--block-docs differ"),
        (["--corpus", str(corpus), "--resume", "--batch-size", "8"], "--batch-size differ"),
        (["--corpus", str(corpus)], "holds the blocks of an interrupted run: pass --resume"),
    ]:
        done = lir(*base, *args)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and differ in done.stderr, done.stderr
    assert len(blocks(output)) == 2
    done = lir(*base, "--corpus", str(other), "--overwrite")  # starts again
    assert done.returncode == 0 and "resumed" not in done.stdout, done.stderr
    assert not Path(f"{output}{WORK_SUFFIX}").exists()


def test_memory_holds_one_block(tiny_export, scifact, tmp_path):
    """Documents are read as blocks are written: never more than one block ahead of the finished ones."""
    corpus, output = corpus_file(scifact, tmp_path, 300), tmp_path / "index"
    ahead = []

    def docs() -> Iterator[tuple[str, str]]:
        for position, doc in enumerate(iter_docs(str(corpus))):
            ahead.append(position - 30 * len(blocks(output)))
            yield doc

    stream_index(OnnxEngine(tiny_export), docs, output, BUILT_BY, block_docs=30, progress=False)
    encoding = ahead[300:]  # the second pass (the first only checks the ids and counts)
    assert len(encoding) == 300 and max(encoding) == 30 - 1  # the last document of a block, read before it's written


def test_peak_memory_is_bounded_by_the_block(tiny_export, tmp_path):
    """On a synthetic corpus, the Python heap peaks far lower in blocks than with every document at once."""
    words = np.random.default_rng(0).choice(["protein", "cell", "gene", "cancer", "study", "dose"], (3000, 60))
    texts = [(f"d{i}", " ".join(row)) for i, row in enumerate(words)]
    engine = OnnxEngine(tiny_export)
    peaks = {}
    for block_docs in (100, 3000):
        tracemalloc.start()
        stream_index(engine, lambda: iter(texts), tmp_path / str(block_docs), BUILT_BY, block_docs=block_docs)
        peaks[block_docs] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[100] < peaks[3000] / 3, peaks


def test_nothing_to_index_is_refused_before_any_encoding(tiny_export, tmp_path):
    engine = OnnxEngine(tiny_export)
    with pytest.raises(LirError, match="holds no documents"):
        stream_index(engine, lambda: iter([]), tmp_path / "a", BUILT_BY)
    with pytest.raises(LirError, match="repeats doc id 'x'"):
        stream_index(engine, lambda: iter([("x", "a"), ("x", "b")]), tmp_path / "a", BUILT_BY)
    with pytest.raises(LirError, match="is not a Faiss index factory string"):
        stream_index(engine, lambda: iter([("x", "a")]), tmp_path / "a", BUILT_BY, "Nonsense9")
    assert not list(tmp_path.iterdir())


def test_a_corpus_changing_mid_run_and_a_second_writer_are_refused(tiny_export, tmp_path):
    engine = OnnxEngine(tiny_export)
    calls = []

    def changing() -> Iterator[tuple[str, str]]:
        calls.append(1)
        yield from [("a", "first text"), ("b", "second text" if len(calls) == 1 else "edited")]

    with pytest.raises(LirError, match="the corpus changed while it was indexed"):
        stream_index(engine, changing, tmp_path / "index", BUILT_BY, progress=False)
    assert not (tmp_path / "index").exists() and Path(f"{tmp_path / 'index'}{WORK_SUFFIX}").is_dir()
    work = os.open(f"{tmp_path / 'index'}{WORK_SUFFIX}", os.O_RDONLY)
    try:
        fcntl.flock(work, fcntl.LOCK_EX)  # as a run in progress holds it
        with pytest.raises(LirError, match="another lir index is writing"):
            stream_index(engine, lambda: iter([("a", "x")]), tmp_path / "index", BUILT_BY, overwrite=True)
    finally:
        os.close(work)
