"""Run Triton: the `tritonserver` binary of the nvidia-pytriton wheel (CPU, python backend), or Docker.

The python backend needs its stub for this interpreter's version beside `libtriton_python.so`; a private
backend folder is assembled for each server and removed when it stops. The stub runs with this
environment's `bin` first on PATH, so the models import lir, onnxruntime and tokenizers from here.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lir.errors import LirError

SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"


def triton_install() -> tuple[Path, Path, Path]:
    """(tritonserver binary, python backend folder, bundled libraries folder) of the nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise LirError("the tritonserver binary is missing: pip install --no-deps nvidia-pytriton==0.7.0 (or --docker)")
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    binary = root / "bin" / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    if not binary.is_file() or not libs.is_dir():
        raise LirError(f"the tritonserver binary is missing under {root}: reinstall nvidia-pytriton")
    return binary, root, libs


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class TritonServer:
    """A local Triton process on a model repository, bound to `host`, stopped cleanly."""

    def __init__(
        self,
        repository: str | Path,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_file: str | Path | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.log_file = Path(log_file) if log_file else None
        self._process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self._shm_before: set[str] = set()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    def start(self, timeout: float = 180.0) -> TritonServer:
        """Start Triton and wait until every model is ready; one-line errors otherwise."""
        if not self.repository.is_dir():
            raise LirError(f"model repository {self.repository} does not exist")
        if not any((p / "config.pbtxt").is_file() for p in self.repository.iterdir()):
            raise LirError(f"{self.repository} holds no Triton model (no */config.pbtxt): run lir-export first")
        for name, port in self.ports.items():
            if not port_is_free(self.host, port):
                raise LirError(f"{name} port {port} on {self.host} is taken")
        binary, root, libs = triton_install()
        self._workdir = Path(tempfile.mkdtemp(prefix="lir-triton-"))
        backend = self._workdir / "backends" / "python"
        backend.mkdir(parents=True)
        for file in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy(root / "backends" / "python" / file, backend / file)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise LirError(f"nvidia-pytriton ships no python backend stub for Python {version}")
        shutil.copy(stub, backend / stub.name)
        log_path = self.log_file or self._workdir / "triton.log"
        self.log_file = log_path
        env = os.environ | {
            "LD_LIBRARY_PATH": os.pathsep.join(
                [str(libs), _python_libdir(), os.environ.get("LD_LIBRARY_PATH", "")]
            ).rstrip(os.pathsep),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        command = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend.parent}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.ports['http']}",
            f"--grpc-port={self.ports['grpc']}",
            f"--metrics-port={self.ports['metrics']}",
            "--exit-timeout-secs=10",
            "--log-verbose=0",
        ]
        self._shm_before = set(glob.glob(SHM_GLOB))
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                reason = self.load_failure() or f"tritonserver exited with code {self._process.returncode}"
                self.stop()
                raise LirError(reason)
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise LirError(f"Triton was not ready within {timeout:.0f} s (log: {self.log_file})")

    def load_failure(self) -> str | None:
        """The first model load failure in the server log, as one line."""
        if self.log_file is None or not self.log_file.is_file():
            return None
        text = self.log_file.read_text(errors="replace")
        found = re.search(r"failed to load '([^']+)' version \d+: (.+?)\"?$", text, re.MULTILINE)
        if found:
            return f"model '{found.group(1)}' failed to load: {found.group(2).strip()}"
        return None

    def stop(self) -> None:
        """SIGINT, then SIGKILL after a grace period; remove the backend folder and leftover shm regions."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for region in set(glob.glob(SHM_GLOB)) - self._shm_before:
            with contextlib.suppress(OSError):
                os.unlink(region)
        if self._workdir is not None:
            if self.log_file and self.log_file.parent == self._workdir:
                self.log_file = None
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def statistics(self, model: str) -> dict:
        """Triton's inference statistics of `model` (HTTP)."""
        with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{model}/stats", timeout=5) as reply:
            return json.loads(reply.read())

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _python_libdir() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("LIBDIR") or "")
