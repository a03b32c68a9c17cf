"""Run Triton: the `tritonserver` binary of the nvidia-pytriton wheel (CPU, python backend), or Docker.

The python backend needs its stub for this interpreter's version beside `libtriton_python.so`; a private
work folder (`lir-triton-*` in the temporary directory) holds that backend folder and the log, and names
its owner (pid and start time). The stub runs with this environment's `bin` first on PATH, so the models
import lir, onnxruntime and tokenizers from here.

Nothing outlives its owner: `stop()` ends the whole process group (SIGINT, SIGKILL after a grace period,
also when tritonserver already died and left its stubs behind), then removes the python backend's shared
memory regions and the work folder. A watchdog process (`lir.serving.watchdog`) does the same when the
owner itself dies (kill -9), and every start first removes what crashed servers left: work folders whose
owner is gone, with the processes that still run from them, and regions that no process maps.

Search models (`searches`, `lir-serve --index`) are written into the work folder and served as a second
model repository: they go with it.
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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lir.errors import LirError

if TYPE_CHECKING:
    from lir.serving.searches import SearchSpec

SEARCH_FOLDER = "search-models"
"""The work folder's model repository of the search models."""
SHM_DIR = "/dev/shm"
SHM_PREFIX = "triton_python_backend_shm_region_"
SHM_GLOB = f"{SHM_DIR}/{SHM_PREFIX}*"
WORKDIR_PREFIX = "lir-triton-"
OWNER_FILE = "owner.json"
STOP_GRACE_S = 30.0
"""How long tritonserver may take to unload its models on SIGINT before its group is killed."""
ORPHAN_AGE_S = 10.0
"""How old a region no process maps, or a work folder without owner file, must be to count as left over
(younger ones may belong to a server that is starting right now)."""


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
    """A local Triton process on a model repository (and the search models of `searches`), bound to `host`,
    stopped cleanly."""

    def __init__(
        self,
        repository: str | Path,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_file: str | Path | None = None,
        searches: Sequence[SearchSpec] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        self.searches = list(searches)
        self.host = host
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.log_file = Path(log_file) if log_file else None
        self._process: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._workdir: Path | None = None

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
        from lir.serving.searches import plan_search_models, write_search_models  # not for the watchdog: Faiss

        planned = plan_search_models(self.searches, self.repository)
        remove_leftovers()
        for name, port in self.ports.items():
            if not port_is_free(self.host, port):
                raise LirError(f"{name} port {port} on {self.host} is taken")
        binary, root, libs = triton_install()
        self._workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        try:
            (self._workdir / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": _started(os.getpid())}))
            if planned:
                write_search_models(planned, self._workdir / SEARCH_FOLDER)
            self._launch(binary, root, libs)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        _record_regions(self._workdir)
        return self

    def _launch(self, binary: Path, root: Path, libs: Path) -> None:
        """Assemble the backend folder in the work folder, start tritonserver (its own process group) and
        its watchdog."""
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
        searches = [f"--model-repository={self._workdir / SEARCH_FOLDER}"] if self.searches else []
        command = [
            str(binary),
            f"--model-repository={self.repository}",
            *searches,
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
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "lir.serving.watchdog", str(self._workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,  # it must not hold the owner's output open after the owner is gone
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on the terminal must not stop it
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise LirError(self.load_failure() or f"tritonserver exited with code {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise LirError(f"Triton was not ready within {timeout:.0f} s{self._kept_log()}")

    def load_failure(self) -> str | None:
        """The first model load failure in the server log, as one line."""
        if self.log_file is None or not self.log_file.is_file():
            return None
        text = self.log_file.read_text(errors="replace")
        found = re.search(r"failed to load '([^']+)' version \d+: (.+?)\"?$", text, re.MULTILINE)
        if found:
            message = found.group(2).split("\\n")[0].strip()  # line breaks escaped: a python traceback follows
            return f"model '{found.group(1)}' failed to load: {message}"
        return None

    def failure(self) -> str | None:
        """None while tritonserver runs (or before it started); once it has exited, why, in one line."""
        if self._process is None or self._process.poll() is None:
            return None
        code = self._process.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"tritonserver stopped unexpectedly ({how}){self._kept_log()}"

    def _kept_log(self) -> str:
        """'; log: <file>' when the log is a file of the caller's (the default one goes with the work folder)."""
        kept = self.log_file is not None and self._workdir is not None and self.log_file.parent != self._workdir
        return f"; log: {self.log_file}" if kept else ""

    def stop(self) -> None:
        """SIGINT to the process group, SIGKILL to what is left of it after a grace period (at once when
        tritonserver has already exited); reap it, then remove its shared memory and the work folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE_S)
        if self._workdir is not None:
            clean_up(self._workdir, process.pid if process is not None else None)
            if self.log_file and self.log_file.parent == self._workdir:
                self.log_file = None
            self._workdir = None
        if process is not None:
            process.wait()
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog.stdin.close()
            self._watchdog = None

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


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...), None if no such pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started(pid: int) -> str | None:
    """When `pid` started (clock ticks after boot): with the pid, it names a process for good."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it holds no memory, ports or files)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _pids() -> Iterator[int]:
    return (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def users_of(workdir: Path) -> list[int]:
    """Live processes that run from `workdir`: its tritonserver (`--backend-directory`) and the stubs."""
    inside = f"{workdir}{os.sep}"
    return [pid for pid in _pids() if pid != os.getpid() and any(inside in a for a in _cmdline(pid)) and _alive(pid)]


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _kill(pids: Iterable[int], group: int | None = None, timeout: float = 10.0) -> None:
    """SIGKILL `pids` and the process group `group`; wait until they are gone."""
    doomed = set(pids)
    if group is not None:
        _signal_group(group, signal.SIGKILL)
        doomed |= {pid for pid in _pids() if (fields := _stat(pid)) and fields[2] == str(group)}
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in doomed) and time.monotonic() < deadline:
        time.sleep(0.05)


def _named_regions(pids: Iterable[int]) -> set[str]:
    """The shared memory regions that these processes (python backend stubs) name on their command line."""
    return {f"{SHM_DIR}/{arg}" for pid in pids for arg in _cmdline(pid) if arg.startswith(SHM_PREFIX)}


def _record_regions(workdir: Path) -> None:
    """Write the regions of the server that runs from `workdir` there, for whoever cleans up after it."""
    regions = sorted(_named_regions(users_of(workdir)))
    (workdir / "regions.json").write_text(json.dumps(regions))


def _recorded_regions(workdir: Path) -> set[str]:
    try:
        return set(json.loads((workdir / "regions.json").read_text()))
    except (OSError, ValueError):
        return set()


def _orphan_regions() -> set[str]:
    """Regions of the python backend that no process maps any more (older than `ORPHAN_AGE_S`)."""
    mapped: set[str] = set()
    for pid in _pids():
        with contextlib.suppress(OSError):
            mapped.update(re.findall(rf"{SHM_DIR}/{SHM_PREFIX}\S+", Path(f"/proc/{pid}/maps").read_text()))
    found = set()
    for region in set(glob.glob(SHM_GLOB)) - mapped:
        with contextlib.suppress(OSError):
            if time.time() - os.stat(region).st_ctime > ORPHAN_AGE_S:
                found.add(region)
    return found


def clean_up(workdir: Path, group: int | None = None) -> None:
    """Kill what runs from `workdir` (tritonserver and its stubs) and the process group `group` (only its
    owner, who has not reaped its leader yet, knows the group for sure), remove the shared memory regions
    those processes used and the regions no process maps, then the folder."""
    users = users_of(workdir)
    regions = _named_regions(users) | _recorded_regions(workdir)
    _kill(users, group)
    for region in regions | _orphan_regions():
        with contextlib.suppress(OSError):
            os.unlink(region)
    shutil.rmtree(workdir, ignore_errors=True)


def _owner_gone(workdir: Path) -> bool:
    """Whether the process that made `workdir` has exited (a folder without owner file: if no process runs
    from it and it is older than `ORPHAN_AGE_S`)."""
    try:
        owner = json.loads((workdir / OWNER_FILE).read_text())
        pid = int(owner["pid"])
        return not (_alive(pid) and _started(pid) == owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return time.time() - workdir.stat().st_mtime > ORPHAN_AGE_S and not users_of(workdir)
        except OSError:  # removed meanwhile
            return False


def remove_leftovers() -> None:
    """Clean up after servers whose owner died: their work folders, what still runs from them (it holds
    the ports), and shared memory regions that no process maps."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        if workdir.is_dir() and _owner_gone(workdir):
            clean_up(workdir)
    for region in _orphan_regions():
        with contextlib.suppress(OSError):
            os.unlink(region)
