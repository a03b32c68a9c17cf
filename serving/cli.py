"""`lir-serve`: start Triton on a model repository and keep it running until SIGINT/SIGTERM.

`--index PATH[=NAME][,option=value...]` (repeatable) serves an index as the search model `NAME.search`
beside the repository (`lir.serving.searches`).

Triton ends with lir-serve, however lir-serve ends (a watchdog ends it after a kill -9), and lir-serve
ends with Triton: when tritonserver dies, lir-serve removes what it left and exits 1 with one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import click

from lir.cli.common import CONTEXT, PositiveNumber, run_click
from lir.errors import LirError, run_command

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the version of the local binary
COMPOSE_FILE = Path(__file__).resolve().parent / "docker-compose.yml"
PORT = click.IntRange(1, 65535)


@click.command(
    "lir-serve",
    context_settings=CONTEXT,
    help="Serve a model repository written by lir-export with Triton: the local tritonserver binary (CPU, python "
    "backend) by default, or the official GPU image with --docker.",
    epilog="Exit codes: 0 stopped cleanly, 1 could not start (port taken, binary missing, model failed to load) "
    "or tritonserver stopped unexpectedly.",
)
@click.option("--repository", default="model_repository", help="model repository")
@click.option("--host", default="127.0.0.1", help="address to bind")
@click.option("--http-port", type=PORT, default=8000, help="HTTP endpoint")
@click.option("--grpc-port", type=PORT, default=8001, help="gRPC endpoint")
@click.option("--metrics-port", type=PORT, default=8002, help="Prometheus metrics")
@click.option("--log", help="write Triton's log to this file")
@click.option("--timeout", type=PositiveNumber(), default=180, help="readiness wait, s")
@click.option(
    "--index",
    "indexes",
    multiple=True,
    metavar="PATH[=NAME][,OPTION=VALUE...]",
    help="also serve this index as the search model NAME.search (default NAME: the folder's), queries encoded by "
    "the repository's export of the model that built it; options rerank=MODEL,docs=CORPUS[,depth=100], max_k=1000, "
    "export=MODEL, or search parameters (nprobe=16); repeatable, local server only",
)
@click.option(
    "--docker",
    is_flag=True,
    help=f"run {TRITON_IMAGE} with GPUs and the onnxruntime backend (serving/docker-compose.yml)",
)
def lir_serve(docker: bool, **options: Any) -> int:
    """The `lir-serve` command: Triton run until stopped, with one-line errors."""
    return run_command("lir-serve", lambda: _docker(**options) if docker else _local(**options))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `lir-serve`: its exit code (0 stopped cleanly, 1 failed, 2 usage, 130 interrupted)."""
    return run_click(lir_serve, argv, "lir-serve")


def _local(
    repository: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    log: str | None,
    timeout: float,
    indexes: tuple[str, ...],
) -> int:
    from lir.serving.searches import SearchSpec
    from lir.serving.server import TritonServer

    searches = [SearchSpec.parse(spec) for spec in indexes]
    server = TritonServer(repository, host, http_port, grpc_port, metrics_port, log, searches)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start(timeout=timeout)
    try:
        served = f", search models {', '.join(spec.model for spec in searches)}" if searches else ""
        print(
            f"lir-serve: ready: gRPC {server.grpc_url}, HTTP {server.http_url}, "
            f"metrics {host}:{metrics_port}{served} (Ctrl-C stops)",
            flush=True,
        )
        while not stop.wait(0.5):
            failure = server.failure()
            if failure:
                raise LirError(failure)
    finally:
        server.stop()
    print("lir-serve: stopped", flush=True)
    return 0


def _docker(
    repository: str, http_port: int, grpc_port: int, metrics_port: int, indexes: tuple[str, ...], **_: Any
) -> int:
    """The compose file's Triton on these ports (host, log and readiness wait are the compose file's)."""
    if indexes:
        raise LirError("--index serves search models on the local server only (the image sees no index folders)")
    docker = shutil.which("docker")
    if docker is None:
        raise LirError("docker is not installed here: run the local server (no --docker) or deploy the compose file")
    env = {
        "LIR_REPOSITORY": str(Path(repository).resolve()),
        "LIR_HTTP_PORT": str(http_port),
        "LIR_GRPC_PORT": str(grpc_port),
        "LIR_METRICS_PORT": str(metrics_port),
    }
    return subprocess.call([docker, "compose", "-f", str(COMPOSE_FILE), "up"], env=os.environ | env)


if __name__ == "__main__":
    sys.exit(main())
