"""Bulk encoding on Ray (lir.clients.ray_index): on a local two-worker cluster, `lir index --ray` writes the
index a single-process run writes (same doc ids, vectors within 1e-6), actors as clients of a real Triton
server give the embedded index, Ray resumes a single-process run's blocks, errors are one line, and a killed
`lir index --ray` leaves no Ray process behind and resumes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from lir.cli import main
from lir.clients.indexes import open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.ray_index import RayCluster, ray_index
from lir.clients.streaming_index import WORK_SUFFIX, stream_index
from lir.collections import iter_docs
from lir.errors import LirError
from lir.serving.server import TritonServer, free_port
from tests.test_streaming_index import BUILT_BY, assert_same_index, blocks, built, corpus_file, interrupted

TWO = RayCluster(workers=2)


def processes() -> dict[int, tuple[int, int, str]]:
    """Every process: pid → (parent pid, session id, command line)."""
    found = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            command = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z":  # zombies have exited
            found[int(name)] = (int(fields[1]), int(fields[3]), command)
    return found


def descendants(pid: int) -> set[int]:
    table, found, frontier = processes(), set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_gone(pids: set[int], seconds: float = 20.0) -> set[int]:
    """The pids still alive after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := pids & set(processes())) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local two-CPU Ray cluster for the module; shut down with every process it started."""
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    try:
        yield
    finally:
        started = descendants(os.getpid())
        ray.shutdown()
        assert not wait_gone(started), "Ray left processes running"


@pytest.mark.parametrize("model, variant", [("dense", "int8"), ("colbert", "fp32"), ("splade", "fp32")])
def test_two_workers_write_the_single_process_index(
    local_ray, tiny_export, late_repository, scifact, tmp_path, model, variant
):
    engine_dir = tiny_export if model == "dense" else late_repository / model
    corpus = corpus_file(scifact, tmp_path, 300)
    line = ray_index(
        str(engine_dir),
        str(corpus),
        tmp_path / "ray",
        variant,
        block_docs=20,
        batch_size=8,
        cluster=TWO,
        progress=False,
    )
    assert line.startswith("indexed 300 documents in ") and line.endswith("[Ray: 2 encoders]"), line
    single = OnnxEngine(engine_dir, variant=variant)
    stream_index(
        single,
        lambda: iter_docs(str(corpus)),
        tmp_path / "single",
        *built(tmp_path / "ray"),
        batch_size=8,
        block_docs=20,
    )
    assert_same_index(tmp_path / "ray", tmp_path / "single", engine_dir, tolerance=1e-6)


def test_ray_actors_as_clients_of_a_triton_server(local_ray, tiny_export, scifact, tmp_path):
    """Each actor a Triton client (text mode: the server tokenizes) of a real local server: the embedded index."""
    corpus = corpus_file(scifact, tmp_path, 100)
    with TritonServer(tiny_export.parent, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port()) as t:
        url = f"triton://{t.grpc_url}/{tiny_export.name}"
        line = ray_index(url, str(corpus), tmp_path / "ray", block_docs=20, cluster=TWO, progress=False)
    assert line.startswith("indexed 100 documents in ") and line.endswith("[Ray: 2 encoders]"), line
    stream_index(OnnxEngine(tiny_export), lambda: iter_docs(str(corpus)), tmp_path / "single", BUILT_BY, block_docs=20)
    got, expected = open_index(tmp_path / "ray"), open_index(tmp_path / "single")
    assert got.doc_ids == expected.doc_ids and got.info["engine"]["url"] == url
    vectors = [index.index.reconstruct_n(0, index.index.ntotal) for index in (got, expected)]
    np.testing.assert_allclose(*vectors, atol=1e-5)  # as tests/test_serving.py holds Triton to the embedded engine


def test_ray_resumes_a_single_process_run(local_ray, tiny_export, scifact, tmp_path):
    corpus, output = corpus_file(scifact, tmp_path, 200), tmp_path / "index"
    interrupted(OnnxEngine(tiny_export), corpus, output, block_docs=20, after=90)
    assert len(blocks(output)) == 4
    line = ray_index(str(tiny_export), str(corpus), output, block_docs=20, resume=True, cluster=TWO, progress=False)
    assert "80 resumed from finished blocks" in line and not Path(f"{output}{WORK_SUFFIX}").exists()
    whole = tmp_path / "whole"
    stream_index(OnnxEngine(tiny_export), lambda: iter_docs(str(corpus)), whole, *built(output), block_docs=20)
    assert_same_index(output, whole, tiny_export, tolerance=1e-6)


def test_a_gpu_worker_on_a_cluster_without_one_is_refused(local_ray, tiny_export, tmp_path):
    docs = lambda: iter([("a", "text")])  # noqa: E731
    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(LirError, match="--ray-gpus 1: the Ray cluster has no GPU"):
        ray_index(str(tiny_export), docs, tmp_path / "index", cluster=RayCluster(gpus=1))
    with pytest.raises(LirError, match="--device cuda on Ray needs --ray-gpus"):
        ray_index(str(tiny_export), docs, tmp_path / "index", device="cuda", cluster=TWO)
    assert not list(tmp_path.iterdir())


def test_an_actor_error_is_its_engine_s_own_line(local_ray, late_repository, tmp_path):
    with pytest.raises(LirError, match="has no fp16 variant"):
        ray_index(
            str(late_repository / "colbert"), lambda: iter([("a", "text")]), tmp_path / "index", "fp16", cluster=TWO
        )
    assert not list(tmp_path.iterdir())


def test_without_ray_installed_the_error_is_one_line(tiny_export, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(LirError, match=r"--ray needs Ray: pip install 'lir\[ray\]'"):
        ray_index(str(tiny_export), lambda: iter([("a", "text")]), tmp_path / "index", cluster=TWO)


def test_lir_index_ray_is_interrupted_and_resumed_leaving_no_process(tiny_export, scifact, tmp_path, capsys):
    """`lir index --ray` alone starts a local cluster and stops it with the command: killed (SIGTERM) it keeps
    its finished blocks and leaves no Ray process; `--resume --ray` ends the run."""
    corpus, output = corpus_file(scifact, tmp_path, 600), tmp_path / "ray"
    args = ["--engine", str(tiny_export), "--corpus", str(corpus), "--block-docs", "10", "--output", str(output)]
    command = [sys.executable, "-m", "lir.cli", "index", *args]

    def lir_ray(*more: str, stop: bool = False) -> tuple[int, str, str]:
        process = subprocess.Popen(
            [*command, "--ray", "--ray-workers", "2", *more],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # every process Ray starts for it is in its session
        )
        deadline = time.monotonic() + 120
        while stop and not blocks(output) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if stop:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
        left = wait_gone({pid for pid, (_, session, _) in processes().items() if session == process.pid})
        assert not left, f"Ray left processes running: {left}"
        return process.returncode, out, err

    code, _, err = lir_ray(stop=True)
    done = len(blocks(output))
    assert code == 130 and err.endswith("lir index: interrupted\n") and 1 <= done < 60, (code, done, err)
    code, out, err = lir_ray("--resume")
    assert code == 0 and out.count("\n") == 1, err
    assert f"{10 * done} resumed from finished blocks" in out and out.endswith("[Ray: 2 encoders]\n"), out
    single = tmp_path / "single"
    stream_index(OnnxEngine(tiny_export), lambda: iter_docs(str(corpus)), single, *built(output), block_docs=10)
    assert_same_index(output, single, tiny_export, tolerance=1e-6)
    capsys.readouterr()
    assert main(["index", *args, "--ray-gpus", "1"]) == 1
    assert capsys.readouterr().err == "lir index: error: --ray-gpus needs --ray\n"
