"""Hub ids that download: a local HTTP server in the hub's URL layout stands in for huggingface.co.

Every check runs in a subprocess with `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_CACHE` set, as a user's shell
would (huggingface_hub reads them at import time). Resolving alone loads `train/hub.py` by its file, so
that those subprocesses skip the torch import; the one export goes through `lir-export` itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from safetensors.torch import save

from lir.manifest import load_manifest
from tests import builders

HUB_FILE = Path(__file__).resolve().parents[1] / "train" / "hub.py"
SHA_MAIN, SHA_V1 = "a" * 40, "b" * 40
TOKEN = "hf_test_token_123"
RESOLVE = (
    "import importlib.util, sys\n"
    f"spec = importlib.util.spec_from_file_location('hub', {str(HUB_FILE)!r})\n"
    "hub = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(hub)\n"
    "from lir.errors import run_command\n"
    "sys.exit(run_command('lir-export', lambda: print(hub.resolve_model_path(sys.argv[1], sys.argv[2] or None))))\n"
)


@dataclass
class Repo:
    refs: dict[str, str]  # branch or tag → commit
    commits: dict[str, dict[str, bytes]]  # commit → {path in the repo: content}
    token: str | None = None  # when set, requests without `Authorization: Bearer <token>` get a 401
    gated: bool = False  # every request gets a 403 GatedRepo


@dataclass
class FakeHub:
    """The routes `snapshot_download` uses: the model-info API and `resolve` (HEAD for metadata, GET)."""

    repos: dict[str, Repo]
    url: str = ""
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlsplit(handler.path).path
        self.requests.append((handler.command, unquote(path), {k.lower(): v for k, v in handler.headers.items()}))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo_id, revision = "/".join(parts[2:4]), unquote("/".join(parts[5:])) if len(parts) > 5 else "main"
            filename = None
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, filename = "/".join(parts[:2]), unquote(parts[3]), unquote("/".join(parts[4:]))
        else:
            return _reply(handler, 404, {}, b"", body)
        repo = self.repos.get(repo_id)
        if repo is None:
            return _reply(handler, 404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found", body)
        if repo.gated:
            return _reply(handler, 403, {"X-Error-Code": "GatedRepo"}, b"gated", body)
        if repo.token and handler.headers.get("Authorization") != f"Bearer {repo.token}":
            return _reply(handler, 401, {}, b"Unauthorized", body)
        sha = repo.refs.get(revision, revision)
        if sha not in repo.commits:
            return _reply(handler, 404, {"X-Error-Code": "RevisionNotFound"}, b"Invalid rev id", body)
        files = repo.commits[sha]
        if filename is None:
            info = {
                "id": repo_id,
                "sha": sha,
                "private": bool(repo.token),
                "siblings": [{"rfilename": n} for n in files],
            }
            return _reply(handler, 200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
        if filename not in files:
            return _reply(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, b"", body)
        content = files[filename]
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        _reply(handler, 200, {"X-Repo-Commit": sha, "ETag": etag}, content, body)

    def resolved(self) -> list[str]:
        """Repository files the server was asked for (HEAD or GET on `resolve`)."""
        return [path.split("/", 5)[5] for _, path, _ in self.requests if "/resolve/" in path]


def _reply(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], content: bytes, body: bool) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(content)))
    handler.end_headers()
    if body:
        handler.wfile.write(content)


def _serve(hub: FakeHub) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            hub.answer(self, body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            hub.answer(self, body=False)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, bytes]:
    """A tiny sentence-transformers checkpoint (BERT, MiniLM's tokenizer, Pooling, Dense)."""
    return _files(builders.sentence_transformers_dir(tmp_path_factory.mktemp("hub-src") / "tiny"))


@pytest.fixture(scope="module")
def hub(tiny) -> FakeHub:
    torch.manual_seed(7)  # revision v1: other Dense weights
    v1 = tiny | {
        "2_Dense/model.safetensors": save({"linear.weight": torch.randn(16, 32), "linear.bias": torch.randn(16)})
    }
    # files a hub repo often has beside the ones lir reads: none of them may be fetched
    extra = {
        "pytorch_model.bin": b"pickle",
        "2_Dense/pytorch_model.bin": b"pickle",
        "onnx/model.onnx": b"onnx",
        "README.md": b"# tiny",
        "checkpoint-10/model.safetensors": b"trainer state",
    }
    pickled = {"config.json": tiny["config.json"], "pytorch_model.bin": b"pickle", "vocab.txt": tiny["vocab.txt"]}
    fake = FakeHub(
        {
            "org/tiny": Repo({"main": SHA_MAIN, "v1": SHA_V1}, {SHA_MAIN: tiny | extra, SHA_V1: v1 | extra}),
            "org/private": Repo({"main": SHA_MAIN}, {SHA_MAIN: tiny}, token=TOKEN),
            "org/gated": Repo({"main": SHA_MAIN}, {SHA_MAIN: tiny}, gated=True),
            "org/pickled": Repo({"main": SHA_MAIN}, {SHA_MAIN: pickled}),
        }
    )
    server = _serve(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def _env(home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
    return env | {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_ENDPOINT": endpoint} | extra


def _resolve(spec: str, env: dict[str, str], revision: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RESOLVE, spec, revision], env=env, capture_output=True, text=True)


def _one_line_error(done: subprocess.CompletedProcess, *words: str, progress: tuple[str, ...] = ()) -> str:
    """The error line of a failed run, after nothing but the `progress` lines; it holds every one of `words`."""
    assert done.returncode == 1, done.stderr
    *before, line = done.stderr.strip().splitlines()
    assert tuple(before) == progress, done.stderr
    assert line.startswith("lir-export: error:")
    for word in words:
        assert word in line, line
    return line


@pytest.fixture(scope="module")
def exported(hub, tmp_path_factory, scifact) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`lir-export --model org/tiny --revision main` through the fake hub: (HF_HOME, export, the run)."""
    home, out = tmp_path_factory.mktemp("hf-home"), tmp_path_factory.mktemp("repo")
    command = [sys.executable, "-m", "lir.export.cli", "--model", "org/tiny", "--revision", "main"]
    command += ["--output", str(out), "--name", "tiny", "--parity-data", str(scifact), "--no-optimize"]
    done = subprocess.run(command, env=_env(home, hub.url), capture_output=True, text=True)
    return home, out / "tiny", done


def test_download_then_export(exported, hub):
    home, export, done = exported
    assert done.returncode == 0, done.stderr
    manifest = load_manifest(export)  # validates the export
    assert manifest.provenance["source"] == "org/tiny" and manifest.embedding_dim == 16
    assert "downloading" in done.stderr and "org/tiny" in done.stderr
    fetched = set(hub.resolved())
    assert {"config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"} <= fetched
    assert "2_Dense/model.safetensors" in fetched
    assert not [f for f in fetched if f.endswith((".bin", ".onnx", ".md")) or f.startswith("checkpoint-")]
    assert not [h for _, _, h in hub.requests if "authorization" in h], "no token was set, none may be sent"
    snapshot = home / "hub" / "models--org--tiny" / "snapshots" / SHA_MAIN
    assert (snapshot / "2_Dense" / "model.safetensors").is_file() and not (snapshot / "pytorch_model.bin").exists()
    assert (home / "hub" / "models--org--tiny" / "refs" / "main").read_text() == SHA_MAIN


def test_second_run_uses_the_cache_without_the_hub(exported, hub):
    home, _, done = exported
    assert done.returncode == 0, done.stderr
    before = len(hub.requests)
    dead = f"http://127.0.0.1:{_closed_port()}"
    for extra in ({"HF_HUB_OFFLINE": "1"}, {}):  # offline, or online with the endpoint down: the cache first
        found = _resolve("org/tiny", _env(home, dead, **extra), "main")
        assert found.returncode == 0, found.stderr
        assert Path(found.stdout.strip()).name == SHA_MAIN
    assert len(hub.requests) == before


def test_an_interrupted_download_resumes(exported, hub, tmp_path):
    home, _, done = exported
    assert done.returncode == 0, done.stderr
    shutil.copytree(home / "hub", tmp_path / "hub", symlinks=True)
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / SHA_MAIN
    (snapshot / "model.safetensors").unlink()  # as when Ctrl-C stops the download before the weights
    start = len(hub.resolved())
    found = _resolve("org/tiny", _env(tmp_path, hub.url))
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == snapshot and (snapshot / "model.safetensors").is_file()
    assert set(hub.resolved()[start:]) == {"model.safetensors"}, "only the missing file is fetched"


def test_revision_pins_the_snapshot(hub, tiny, tmp_path):
    env = _env(tmp_path, hub.url)
    pinned = _resolve("org/tiny", env, "v1")
    assert pinned.returncode == 0, pinned.stderr
    folder = Path(pinned.stdout.strip())
    assert folder.name == SHA_V1
    dense = (folder / "2_Dense" / "model.safetensors").read_bytes()
    assert (
        dense == hub.repos["org/tiny"].commits[SHA_V1]["2_Dense/model.safetensors"] != tiny["2_Dense/model.safetensors"]
    )
    assert (tmp_path / "hub" / "models--org--tiny" / "refs" / "v1").read_text() == SHA_V1
    by_commit = _resolve("org/tiny", env, SHA_MAIN)
    assert by_commit.returncode == 0, by_commit.stderr
    assert Path(by_commit.stdout.strip()).name == SHA_MAIN
    assert (Path(by_commit.stdout.strip()) / "2_Dense" / "model.safetensors").read_bytes() == tiny[
        "2_Dense/model.safetensors"
    ]
    _one_line_error(_resolve("org/tiny", env, "v9"), "org/tiny", "no revision v9", hub.url)


def test_hf_token_is_sent_and_a_401_is_one_line(hub, tmp_path):
    denied = _resolve("org/private", _env(tmp_path, hub.url))
    _one_line_error(denied, "org/private", "401", "HF_TOKEN", hub.url)
    start = len(hub.requests)
    allowed = _resolve("org/private", _env(tmp_path, hub.url, HF_TOKEN=TOKEN))
    assert allowed.returncode == 0, allowed.stderr
    sent = hub.requests[start:]
    assert sent and all(headers.get("authorization") == f"Bearer {TOKEN}" for _, _, headers in sent)
    assert (Path(allowed.stdout.strip()) / "model.safetensors").is_file()


def test_unreachable_endpoint_is_one_quick_line(tmp_path):
    dead = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    done = _resolve("org/tiny", _env(tmp_path, dead))
    assert time.monotonic() - start < 5
    _one_line_error(done, "org/tiny", "cannot reach", dead, "Connection refused")
    command = [sys.executable, "-m", "lir.export.cli", "--model", "org/tiny", "--output", str(tmp_path / "repo")]
    done = subprocess.run(command, env=_env(tmp_path, dead), capture_output=True, text=True)
    _one_line_error(done, "org/tiny", "cannot reach", dead, progress=("loading org/tiny",))
    assert not (tmp_path / "repo").exists()


def test_a_hub_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # the kernel accepts connections into the backlog; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        done = _resolve("org/tiny", _env(tmp_path, endpoint, HF_HUB_ETAG_TIMEOUT="1"))
        assert time.monotonic() - start < 5
    _one_line_error(done, "org/tiny", "cannot reach", endpoint, "no answer in time")


def test_offline_and_not_cached_is_one_line(hub, tmp_path):
    done = _resolve("org/tiny", _env(tmp_path, hub.url, HF_HUB_OFFLINE="1"))
    _one_line_error(done, "org/tiny", "HF_HUB_OFFLINE is set", "nor in the Hugging Face cache")


@pytest.mark.parametrize(
    ("repo", "words"),
    [
        ("org/nowhere", ("org/nowhere", "neither a local directory nor a repository", "404")),
        ("org/gated", ("org/gated", "gated", "HF_TOKEN")),
        ("org/pickled", ("org/pickled", "no safetensors weights", "pytorch_model.bin")),
    ],
)
def test_hub_refusals_are_one_line(hub, tmp_path, repo, words):
    start = len(hub.requests)
    _one_line_error(_resolve(repo, _env(tmp_path, hub.url)), hub.url, *words)
    assert not [path for _, path, _ in hub.requests[start:] if "/resolve/" in path], "nothing is downloaded"


def test_a_path_like_spec_never_reaches_the_hub(hub, tmp_path):
    start = len(hub.requests)
    for spec in ("./org/tiny", "a/b/c", str(tmp_path / "missing")):
        _one_line_error(_resolve(spec, _env(tmp_path, hub.url)), "does not exist")
    assert len(hub.requests) == start
    pinned_directory = _resolve(str(tmp_path), _env(tmp_path, hub.url), "main")
    _one_line_error(pinned_directory, "is a local directory", "hub ids only")
