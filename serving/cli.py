"""`lir-serve`: start Triton on a model repository and keep it running until SIGINT/SIGTERM.

Triton ends with lir-serve, however lir-serve ends (a watchdog ends it after a kill -9), and lir-serve
ends with Triton: when tritonserver dies, lir-serve removes what it left and exits 1 with one line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from lir.errors import LirError, run_command

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the version of the local binary
COMPOSE_FILE = Path(__file__).resolve().parent / "docker-compose.yml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lir-serve",
        description="Serve a model repository written by lir-export with Triton: the local tritonserver "
        "binary (CPU, python backend) by default, or the official GPU image with --docker.",
        epilog="exit codes: 0 stopped cleanly, 1 could not start (port taken, binary missing, model failed to load) "
        "or tritonserver stopped unexpectedly",
    )
    parser.add_argument("--repository", default="model_repository", help="model repository (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--http-port", type=_port, default=8000, help="default: %(default)s")
    parser.add_argument("--grpc-port", type=_port, default=8001, help="default: %(default)s")
    parser.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics (default: %(default)s)")
    parser.add_argument("--log", help="write Triton's log to this file")
    parser.add_argument("--timeout", type=_seconds, default=180, help="readiness wait, s (default: %(default)s)")
    parser.add_argument(
        "--docker",
        action="store_true",
        help=f"run {TRITON_IMAGE} with GPUs and the onnxruntime backend (serving/docker-compose.yml)",
    )
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("lir-serve", lambda: _docker(args) if args.docker else _local(args))


def _local(args: argparse.Namespace) -> int:
    from lir.serving.server import TritonServer

    server = TritonServer(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port, args.log)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start(timeout=args.timeout)
    try:
        print(
            f"lir-serve: ready: gRPC {server.grpc_url}, HTTP {server.http_url}, "
            f"metrics {args.host}:{args.metrics_port} (Ctrl-C stops)",
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


def _docker(args: argparse.Namespace) -> int:
    docker = shutil.which("docker")
    if docker is None:
        raise LirError("docker is not installed here: run the local server (no --docker) or deploy the compose file")
    env = {
        "LIR_REPOSITORY": str(Path(args.repository).resolve()),
        "LIR_HTTP_PORT": str(args.http_port),
        "LIR_GRPC_PORT": str(args.grpc_port),
        "LIR_METRICS_PORT": str(args.metrics_port),
    }
    return subprocess.call([docker, "compose", "-f", str(COMPOSE_FILE), "up"], env=os.environ | env)


if __name__ == "__main__":
    sys.exit(main())
