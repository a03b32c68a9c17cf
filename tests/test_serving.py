"""A real Triton server (the tritonserver binary of nvidia-pytriton, python backend, CPU)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lir.clients.dense_index import DenseIndex
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever
from lir.clients.triton_engine import TritonEngine
from lir.errors import LirError
from lir.serving.server import SHM_DIR, SHM_GLOB, SHM_PREFIX, TritonServer, free_port, port_is_free, users_of


def _ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


def _tritons_of(repository: Path) -> list[int]:
    """Pids of tritonserver processes serving `repository`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "tritonserver" in cmdline and str(repository) in cmdline:
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def server(tiny_export):
    import glob

    before = set(glob.glob(SHM_GLOB))
    triton = TritonServer(tiny_export.parent, **_ports()).start()
    yield triton
    triton.stop()
    assert _tritons_of(tiny_export.parent.resolve()) == []
    assert set(glob.glob(SHM_GLOB)) - before == set()


@pytest.fixture(scope="module")
def texts(scifact):
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:40]]
    return [f"{r['title']} {r['text']}" for r in records]


def test_ready_and_every_model_loaded(server, tiny_export):
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as reply:
        assert reply.status == 200
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request) as reply:
        models = {m["name"]: m.get("state") for m in json.loads(reply.read())}
    assert models == {"tiny": "READY", "tiny.encoder": "READY"}
    assert server.load_failure() is None


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("mode", ["text", "ids"])
def test_embeddings_equal_the_embedded_engine(server, tiny_export, texts, protocol, mode):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    embedded = OnnxEngine(tiny_export)
    with TritonEngine(url, "tiny", protocol, mode, model_dir=tiny_export) as engine:
        assert engine.fingerprint == embedded.fingerprint
        for role, batch in (("doc", texts), ("query", [t[:60] for t in texts[:10]])):
            got = engine.encode(batch, role, batch_size=8)
            np.testing.assert_allclose(got, embedded.encode(batch, role), atol=1e-5)


def test_dynamic_batching_under_concurrent_requests(server, texts):
    before = server.statistics("tiny")["model_stats"][0]
    engine = TritonEngine(server.grpc_url, "tiny", concurrency=16)
    threads = [
        threading.Thread(target=engine.encode_docs, args=(texts[:16],), kwargs={"batch_size": 1}) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.close()
    after = server.statistics("tiny")["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 64
    assert executions < inferences, "requests were never batched together"


def test_retriever_over_triton_ranks_like_embedded(server, tiny_export, texts):
    embedded = OnnxEngine(tiny_export)
    index = DenseIndex.build(
        embedded.encode_docs(texts), [f"d{i}" for i in range(len(texts))], model=embedded.fingerprint
    )
    queries = {"1": "protein folding", "2": "cancer risk", "3": "vitamin D"}
    expected = Retriever(embedded, index).search(queries, k=10)
    with TritonEngine(server.grpc_url, "tiny") as triton:
        got = Retriever(triton, index).search(queries, k=10)
    for qid in queries:
        assert list(got[qid]) == list(expected[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(expected[qid].values()), atol=1e-5)


def test_bad_requests_are_clear(server):
    with TritonEngine(server.grpc_url, "tiny") as engine, pytest.raises(LirError, match=r"query #1 is empty$"):
        engine.encode_queries(["fine", "  "])
    with pytest.raises(LirError, match="model 'nope' is not ready"):
        TritonEngine(server.grpc_url, "nope")
    with pytest.raises(LirError, match="ids mode tokenizes locally"):
        TritonEngine(server.grpc_url, "tiny", mode="ids")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_clear_line(protocol):
    with pytest.raises(LirError, match="no Triton server ready at 127.0.0.1:.*is lir-serve running"):
        TritonEngine(f"127.0.0.1:{free_port()}", "tiny", protocol)


def _serve(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lir.serving.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_lir_serve_starts_and_stops_cleanly_on_sigterm(tiny_export, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(tiny_export.parent, repository, symlinks=True)
    ports = _ports()
    serve = _serve(
        "--repository",
        str(repository),
        "--http-port",
        str(ports["http_port"]),
        "--grpc-port",
        str(ports["grpc_port"]),
        "--metrics-port",
        str(ports["metrics_port"]),
    )
    try:
        line = serve.stdout.readline()
        assert "ready" in line, serve.stderr.read() if serve.poll() is not None else line
        assert _tritons_of(repository.resolve())
        engine = TritonEngine(f"127.0.0.1:{ports['grpc_port']}", "tiny")
        assert engine.encode_queries(["hello"]).shape == (1, 16)
        engine.close()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    assert _tritons_of(repository.resolve()) == []


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _workdir_of(repository: Path) -> Path:
    """The work folder of the tritonserver that serves `repository` (its --backend-directory's parent)."""
    (pid,) = _tritons_of(repository)
    (backends,) = [a.split("=", 1)[1] for a in _cmdline(pid) if a.startswith("--backend-directory=")]
    return Path(backends).parent


def _regions_of(workdir: Path) -> set[str]:
    """The shared memory regions of the python backend stubs that run from `workdir`."""
    return {f"{SHM_DIR}/{a}" for pid in users_of(workdir) for a in _cmdline(pid) if a.startswith(SHM_PREFIX)}


def _mentioning(workdir: Path) -> list[int]:
    """Live processes whose command line names `workdir` (tritonserver, stubs, the watchdog)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and any(str(workdir) in a for a in _cmdline(int(proc.name))):
            with contextlib.suppress(OSError):
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(proc.name))
    return found


def _left_behind(workdir: Path, regions: set[str], ports: dict[str, int], wait: float = 0.0) -> list[str]:
    """What is left of a stopped server (processes, its work folder, shared memory, ports taken), after
    waiting up to `wait` seconds for it to go."""
    deadline = time.monotonic() + wait
    while True:
        found = [f"process {pid}: {' '.join(_cmdline(pid))[:120]}" for pid in _mentioning(workdir)]
        found += [str(workdir)] if workdir.exists() else []
        found += sorted(region for region in regions if Path(region).exists())
        found += [f"port {port}" for port in ports.values() if not port_is_free("127.0.0.1", port)]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _serve_on(repository: Path, ports: dict[str, int]) -> subprocess.Popen:
    """lir-serve on `repository` and `ports`, once it said it is ready."""
    flags = [x for name, port in ports.items() for x in (f"--{name.replace('_', '-')}", str(port))]
    serve = _serve("--repository", str(repository), *flags)
    line = serve.stdout.readline()
    assert "ready" in line, serve.stderr.read() if serve.poll() is not None else line
    return serve


def _stop(serve: subprocess.Popen) -> int:
    serve.send_signal(signal.SIGTERM)
    return serve.wait(timeout=60)


def _serve_copy(tiny_export: Path, tmp_path: Path) -> tuple[Path, dict, subprocess.Popen, Path, list]:
    """lir-serve on a copy of the tiny export's repository: (repository, ports, process, work folder, regions)."""
    repository = tmp_path / "repo"
    shutil.copytree(tiny_export.parent, repository, symlinks=True)
    ports = _ports()
    serve = _serve_on(repository, ports)
    workdir = _workdir_of(repository)
    return repository, ports, serve, workdir, _regions_of(workdir)


def test_stop_after_tritonserver_died_kills_its_stubs(tiny_export):
    """kill -9 of tritonserver leaves its python backend stubs running: stop() kills its whole group."""
    server = TritonServer(tiny_export.parent, **_ports()).start()
    workdir = server._workdir
    regions = _regions_of(workdir)
    assert len(regions) == 2 and len(users_of(workdir)) == 3
    os.kill(server._process.pid, signal.SIGKILL)
    server._process.wait()
    server.stop()
    assert _left_behind(workdir, regions, {}) == []


def test_lir_serve_killed_leaves_nothing_and_restarts(tiny_export, tmp_path):
    """kill -9 of lir-serve: its watchdog ends tritonserver and the stubs, frees the ports, removes the work
    folder and shared memory; lir-serve starts again on the same ports."""
    repository, ports, first, workdir, regions = _serve_copy(tiny_export, tmp_path)
    first.kill()
    first.wait()
    assert _left_behind(workdir, regions, ports, wait=20) == []
    second = _serve_on(repository, ports)
    assert _stop(second) == 0


def test_a_start_removes_what_a_crashed_server_left(tiny_export, tmp_path):
    """lir-serve and its watchdog killed together leave tritonserver on the ports: the next start ends it
    (its owner is gone), removes its work folder and regions, and serves on the same ports."""
    repository, ports, first, workdir, regions = _serve_copy(tiny_export, tmp_path)
    (watchdog,) = [pid for pid in _mentioning(workdir) if "lir.serving.watchdog" in _cmdline(pid)]
    os.kill(watchdog, signal.SIGKILL)
    first.kill()
    first.wait()
    time.sleep(1)
    assert len(users_of(workdir)) == 3, "tritonserver and its stubs outlive lir-serve without the watchdog"
    second = _serve_on(repository, ports)
    assert _left_behind(workdir, regions, {}) == []
    assert _stop(second) == 0


def test_lir_serve_exits_when_tritonserver_dies(tiny_export, tmp_path):
    repository, ports, serve, workdir, regions = _serve_copy(tiny_export, tmp_path)
    os.kill(_tritons_of(repository.resolve())[0], signal.SIGKILL)
    assert serve.wait(timeout=60) == 1
    assert _left_behind(workdir, regions, ports) == []
    assert serve.stderr.read() == "lir-serve: error: tritonserver stopped unexpectedly (killed by signal 9)\n"


def test_lir_serve_errors(server, tmp_path):
    taken = _serve("--repository", str(server.repository), "--http-port", server.http_url.rsplit(":", 1)[1])
    assert taken.wait(timeout=60) == 1
    assert taken.stderr.read() == f"lir-serve: error: http port {server.ports['http']} on 127.0.0.1 is taken\n"
    missing = _serve("--repository", str(tmp_path / "none"))
    assert missing.wait(timeout=60) == 1 and "does not exist" in missing.stderr.read()


def test_a_model_that_fails_to_load_is_named(tmp_path):
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 1\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    (broken / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('weights gone')\n"
    )
    ports = {k.replace("_", "-"): str(v) for k, v in _ports().items()}
    serve = _serve(
        "--repository", str(tmp_path / "repo"), *[x for k, v in ports.items() for x in (f"--{k}", v)], env=os.environ
    )
    assert serve.wait(timeout=120) == 1
    error = serve.stderr.read()
    assert error.startswith("lir-serve: error: model 'broken' failed to load") and "weights gone" in error
    assert _tritons_of((tmp_path / "repo").resolve()) == []


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose (1.29) is not installed")
def test_compose_file_validates(tmp_path):
    compose = Path(__file__).resolve().parents[1] / "serving" / "docker-compose.yml"
    env = os.environ | {"LIR_REPOSITORY": str(tmp_path), "LIR_GRPC_PORT": "9001"}
    done = subprocess.run(["docker-compose", "-f", str(compose), "config"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path}:/models:ro" in done.stdout
    ports = [line.strip() for line in done.stdout.splitlines() if line.strip().endswith("/tcp")]
    assert ports == ["- 127.0.0.1:8000:8000/tcp", "- 127.0.0.1:9001:8001/tcp", "- 127.0.0.1:8002:8002/tcp"]
    assert "--model-config-name=onnxruntime" in done.stdout and "runtime: nvidia" in done.stdout


def test_a_missing_binary_is_one_clear_line(monkeypatch, tmp_path):
    import importlib.util

    from lir.serving import server as server_module

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LirError, match="tritonserver binary is missing: pip install --no-deps nvidia-pytriton"):
        server_module.triton_install()


def test_lir_search_through_triton_equals_embedded(server, tiny_export, scifact, tmp_path):
    from lir.trec import read_run

    def lir(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "lir.cli", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join((scifact / "corpus.jsonl").read_text().splitlines()[:120]) + "\n")
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tcancer and smoking\nq2\tprotein folding\nq3\tvitamin D and bones\n")
    lir("index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(tmp_path / "index"))
    runs = {}
    for name, url in (
        ("embedded", None),
        ("grpc", f"triton://{server.grpc_url}/tiny"),
        ("http", f"triton+http://{server.http_url}/tiny"),
        ("ids", f"triton://{server.grpc_url}/tiny?mode=ids&model_dir={tiny_export}"),
    ):
        engine = ["--engine", url] if url else []
        lir(
            "search",
            "--index",
            str(tmp_path / "index"),
            "--queries",
            str(queries),
            "-k",
            "20",
            "--output",
            str(tmp_path / f"{name}.trec"),
            *engine,
        )
        runs[name] = read_run(tmp_path / f"{name}.trec")
    for name in ("grpc", "http", "ids"):
        for qid, docs in runs["embedded"].items():
            assert list(runs[name][qid]) == list(docs), name
            np.testing.assert_allclose(list(runs[name][qid].values()), list(docs.values()), atol=2e-6)


def test_the_text_endpoint_exposes_its_manifest(tiny_export):
    """Engines read the model card from the manifest the served config carries (escaped in protobuf text)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from lir.manifest import load_manifest
    from lir.model_card import ModelCard, served_manifest

    config = text_format.Parse((tiny_export / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert served_manifest(parameters, "tiny") == load_manifest(tiny_export)
    assert ModelCard.of(served_manifest(parameters, "tiny")).family == "single-vector"
    for broken, message in (({}, "does not expose its manifest"), ({"manifest": "{"}, "not JSON")):
        with pytest.raises(LirError, match=message):
            served_manifest(broken, "tiny")
