"""Bulk encoding on Ray: `lir index --ray [ADDRESS]` (and `ray_index`) encodes the blocks of a streaming
`lir index` run (lir.clients.streaming_index) on a pool of Ray actors, each an engine of its own.

The driver reads the corpus, checks and checksums it, and sends each missing block of `block_docs` texts to
the least busy actor (at most `IN_FLIGHT` blocks per actor are out at once, so memory stays bounded by the
block size); every actor encodes its block with the same `batch_size` batching as a single-process run (int8
graphs quantize per batch), and the driver writes each returned block through the same block writer, in the
same work folder. So `--resume`, the checksums and the index built from the blocks are those of `lir index`:
the index equals the single-process one, whichever blocks Ray encoded.

An actor is the embedded onnxruntime engine (the model folder at the same path on every node; `cpus`
onnxruntime threads, or on a GPU with `gpus` > 0 and onnxruntime-gpu on the workers), or a Triton client
(`triton://HOST:PORT/MODEL`) pointed at a serving cluster. Ray itself is imported only here, only when used:
`pip install 'lir[ray]'`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lir.clients.engine import Engine
from lir.clients.engines import TRITON_SCHEMES, open_engine
from lir.clients.indexes import check_index_output
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.streaming_index import DEFAULT_BLOCK_DOCS, block_arrays, stream_index
from lir.collections import iter_docs
from lir.errors import LirError
from lir.manifest import load_manifest

IN_FLIGHT = 2
"""Blocks out at once per actor: one it encodes, one waiting in its queue (no idle round trip)."""
LOCAL_OBJECT_STORE = 256 * 1024**2
"""The object store of a local cluster (bytes): a few blocks; Ray spills to disk past it."""
START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RayCluster:
    """Where and how wide the encoding runs: `address` None starts a local cluster on this machine (`auto`:
    the one `ray start` runs here; `ray://HOST:10001`: a remote one through Ray Client); `workers` actors
    (default: as many as the cluster's CPUs, or GPUs, hold), each with `cpus` CPUs and `gpus` GPUs."""

    address: str | None = None
    workers: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0


def import_ray() -> Any:
    """The ray module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise LirError("--ray needs Ray: pip install 'lir[ray]'") from None
    return ray


@contextlib.contextmanager
def connected(cluster: RayCluster) -> Iterator[Any]:
    """Ray, connected: the caller's if it already called `ray.init`, else a cluster joined (or started
    locally) here and shut down on leaving."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cluster.address is None:
            cpus = (cluster.workers or 0) * cluster.cpus or os.cpu_count() or 1
            ray.init(
                address="local",
                num_cpus=max(1, math.ceil(cpus)),
                object_store_memory=LOCAL_OBJECT_STORE,
                include_dashboard=False,
                **quiet,
            )
        else:
            ray.init(address=cluster.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = cluster.address or "a local cluster"
        raise LirError(f"Ray: cannot connect to {where}: {str(error).splitlines()[0]}") from None
    if threading.current_thread() is threading.main_thread():  # Ray's handlers exit without cleaning up
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
    try:
        yield ray
    finally:
        ray.shutdown()


def model_folder(url: str) -> str | None:
    """The model folder an embedded engine URL names (`onnx:DIR` or `DIR`); None for a Triton URL."""
    scheme, sep, rest = url.partition(":")
    if sep and scheme in TRITON_SCHEMES:
        return None
    return rest if sep and scheme == "onnx" else url


def worker_engine(url: str, variant: str, device: str, threads: int) -> Engine:
    """The engine of one actor: `url` as `open_engine` reads it, onnxruntime with `threads` threads."""
    folder = model_folder(url)
    if folder is None:
        return open_engine(url, variant, device)
    return OnnxEngine(folder, variant=variant, device=device, threads=threads)


class ManifestEngine(Engine):
    """What the driver needs of an exported model (its card, fingerprint, doc graph checksum) without loading
    its graphs: the actors run them."""

    def __init__(self, directory: str | Path, variant: str) -> None:
        super().__init__(directory, load_manifest(directory))
        self.variant = variant

    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        raise LirError("the Ray driver encodes nothing: its actors do")

    def run_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise LirError("the Ray driver scores nothing: its actors do")


def driver_engine(url: str, variant: str) -> Engine:
    """The driver's engine: a Triton client, or the manifest of a local model folder."""
    folder = model_folder(url)
    return open_engine(url, variant) if folder is None else ManifestEngine(folder, variant)


class BlockEncoder:
    """A Ray actor (made remote by `EncoderPool`): one engine, encoding blocks of documents."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def start(self, url: str, variant: str, device: str, threads: int) -> dict[str, Any]:
        """Open the engine; what identifies its model, for the driver to check."""
        self.engine = worker_engine(url, variant, device, threads)
        return identity(self.engine)

    def encode(self, number: int, texts: list[str], batch_size: int) -> tuple[int, dict[str, np.ndarray]]:
        """Block `number`'s arrays (`block_arrays`)."""
        return number, block_arrays(self.engine.encode_docs(texts, batch_size=batch_size))


def identity(engine: Engine) -> dict[str, Any]:
    """What must be the same in every actor as in the driver for the blocks to be this run's."""
    return {"fingerprint": engine.fingerprint, "doc_graph_sha256": engine.doc_graph_sha256, "family": engine.family}


def engine_url(url: str) -> str:
    """`url` with a local model folder made absolute (actors need not start in this folder)."""
    folder = model_folder(url)
    return f"onnx:{Path(folder).resolve()}" if folder is not None and Path(folder).is_dir() else url


class EncoderPool:
    """The actors of a run, started and checked against the driver's engine."""

    def __init__(self, ray: Any, url: str, variant: str, device: str, cluster: RayCluster, engine: Engine) -> None:
        self.ray = ray
        if device == "cuda" and not cluster.gpus:
            raise LirError("--device cuda on Ray needs --ray-gpus (each worker's share of a GPU)")
        resources = ray.cluster_resources()
        if cluster.gpus and not resources.get("GPU"):
            raise LirError(f"--ray-gpus {cluster.gpus:g}: the Ray cluster has no GPU")
        fits = resources.get("CPU", 1) / cluster.cpus
        if cluster.gpus:
            fits = min(fits, resources["GPU"] / cluster.gpus)
        workers = cluster.workers or max(1, int(fits))
        remote = ray.remote(num_cpus=cluster.cpus, num_gpus=cluster.gpus)(BlockEncoder)
        self.actors = [remote.remote() for _ in range(workers)]
        device, threads = "cuda" if cluster.gpus else device, max(1, int(cluster.cpus))
        started = [actor.start.remote(url, variant, device, threads) for actor in self.actors]
        try:
            ready, _ = ray.wait(started, num_returns=len(started), timeout=START_TIMEOUT_S)
            if len(ready) < len(started):
                raise LirError(
                    f"{len(started) - len(ready)} of {workers} Ray encoders did not start in {START_TIMEOUT_S:.0f} "
                    f"s: the cluster lacks {cluster.cpus:g} CPUs and {cluster.gpus:g} GPUs for each"
                )
            if any(found != identity(engine) for found in self.get(started)):
                raise LirError(
                    f"the Ray workers' engine {url} is not the driver's model (or variant): "
                    "the model folder must be the same on every node"
                )
        except BaseException:
            self.close()
            raise

    def get(self, refs: Any) -> Any:
        """`ray.get`, an actor's error as a one-line LirError (its own where it raised one)."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as error:
            if not isinstance(error.cause, Exception):
                raise
            raise error.cause from (None if isinstance(error.cause, LirError) else error)
        except self.ray.exceptions.RayActorError as error:
            raise LirError(f"a Ray encoder died ({str(error).splitlines()[0]}): run again with --resume") from None

    def encode(
        self, blocks: Iterable[tuple[int, list[str]]], batch_size: int
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """The arrays of each (number, texts) block, in the order the actors finish them."""
        blocks = iter(blocks)
        out: dict[Any, int] = {}  # object ref → the actor that encodes it
        load = [0] * len(self.actors)
        exhausted = False
        while True:
            while not exhausted and len(out) < IN_FLIGHT * len(self.actors):
                block = next(blocks, None)
                if block is None:
                    exhausted = True
                    break
                least = load.index(min(load))
                out[self.actors[least].encode.remote(block[0], block[1], batch_size)] = least
                load[least] += 1
            if not out:
                return
            (done,), _ = self.ray.wait(list(out), num_returns=1)
            load[out.pop(done)] -= 1
            yield self.get(done)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def ray_index(
    engine: str,
    corpus: str | Callable[[], Iterable[tuple[str, str]]],
    output: str | Path,
    variant: str = "fp32",
    device: str = "cpu",
    spec: str | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
    block_docs: int = DEFAULT_BLOCK_DOCS,
    resume: bool = False,
    progress: bool = True,
    cluster: RayCluster | None = None,
) -> str:
    """`lir index --ray`: the index of `corpus` (a corpus spec as `lir index --corpus` reads it, or a callable
    giving a fresh iterator of (doc_id, text) at each call) written to `output` as `stream_index` writes it,
    its blocks encoded by Ray actors running `engine` (an engine URL, as `lir index --engine`); returns the
    summary line."""
    cluster = cluster or RayCluster()
    check_index_output(output, overwrite, [corpus] if isinstance(corpus, str) else [])
    docs = (lambda: iter_docs(corpus)) if isinstance(corpus, str) else corpus
    with driver_engine(engine, variant) as model, connected(cluster) as ray:
        pool = EncoderPool(ray, engine_url(engine), variant, device, cluster, model)
        try:
            directory = str(model.directory.resolve()) if model.directory else None
            built_by = {"url": engine, "directory": directory, "variant": variant}
            line = stream_index(
                model, docs, output, built_by, spec, overwrite, batch_size, block_docs, resume, progress, pool.encode
            )
            workers = len(pool.actors)
            return f"{line} [Ray: {workers} encoder{'s' if workers > 1 else ''}]"
        finally:
            pool.close()
