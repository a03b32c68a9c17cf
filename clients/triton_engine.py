"""`TritonEngine`: the engine interface over a Triton server, gRPC (default) or HTTP; `TritonConnection`: the
connection every client of lir's Triton models shares (`TritonEngine`, `TritonRetriever`).

Text mode sends strings to the model's text endpoint, which tokenizes on the server with the manifest's
rules (nothing local needed): TEXT (and the request parameter `role`) of a bi-encoder, QUERY and DOC of a
cross-encoder (SCORES back; a listwise cross-encoder gets one request per group). Ids mode tokenizes here
with a local copy of the exported model directory and calls the graph model `<model>.<graph>`. Requests
go out in batches with a bounded number in flight; inference is idempotent, so a request that finds the
server unavailable is retried.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.utils import np_to_triton_dtype

from lir.batching import group_members, pair_groups
from lir.clients.engine import PAIR_TOKENS, Engine
from lir.errors import LirError
from lir.manifest import OUTPUTS, check_role, load_manifest
from lir.model_card import ModelCard, served_manifest
from lir.tokenization import as_text
from lir.vectors import Collector, Encoded

PROTOCOLS = ("grpc", "http")
RETRIES = 2


class TritonConnection:
    """A Triton server at `url` over gRPC or HTTP, found ready on construction: one client per thread,
    requests with a timeout, retried only when the server is unavailable, at most `concurrency` in flight."""

    def __init__(self, url: str, protocol: str = "grpc", timeout: float = 60.0, concurrency: int = 4) -> None:
        if protocol not in PROTOCOLS:
            raise LirError(f"unknown protocol {protocol!r} (grpc or http)")
        self.url, self.protocol = url, protocol
        self.timeout, self.concurrency = timeout, max(1, concurrency)
        self._local = threading.local()
        self._clients: list = []
        try:
            ready = self._client().is_server_ready()
        except Exception:  # tritonclient raises several types for a refused connection
            ready = False
        if not ready:
            raise LirError(f"no Triton server ready at {url} ({protocol}): is lir-serve running?")

    def _client(self):
        """One client per thread (the HTTP client is not thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
            options = {"network_timeout": self.timeout} if self.protocol == "http" else {}
            client = module.InferenceServerClient(self.url, **options)
            self._local.client = client
            self._local.module = module
            self._clients.append(client)
        return client

    def parameters(self, model: str) -> dict[str, str]:
        """The config parameters of `model`; a LirError when it is not ready."""
        client = self._client()
        try:
            if self.protocol == "grpc":
                config = client.get_model_config(model, as_json=True)["config"]
            else:
                config = client.get_model_config(model)
        except Exception as exc:
            raise LirError(f"model {model!r} is not ready on {self.url}: {_first_line(exc)}") from None
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str], parameters: dict | None = None
    ) -> dict[str, np.ndarray]:
        """The `outputs` of one request to `model`; a LirError with the server's message when it fails."""
        client = self._client()
        module = self._local.module
        tensors = []
        for name, array in inputs.items():
            tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [module.InferRequestedOutput(name) for name in outputs]
        options = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        for attempt in range(RETRIES + 1):
            try:
                result = client.infer(model, tensors, outputs=wanted, parameters=parameters, **options)
                return {name: result.as_numpy(name) for name in outputs}
            except Exception as exc:
                message = _first_line(exc)
                retry = "unavailable" in message.lower() or "connection" in message.lower()
                if not retry or attempt == RETRIES:
                    raise LirError(f"Triton {model!r}: {message}") from None
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def parallel(self, send: Callable[[Any], dict[str, np.ndarray]], chunks: list) -> list:
        """`send` of each chunk with at most `concurrency` requests in flight, results in order."""
        if len(chunks) <= 1:  # one request: no thread hop
            return [send(chunk) for chunk in chunks]
        with ThreadPoolExecutor(min(self.concurrency, len(chunks))) as pool:
            return list(pool.map(send, chunks))

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._local = threading.local()


class TritonEngine(Engine):
    """Encodings from a Triton server that serves an export of lir (any model family)."""

    def __init__(
        self,
        url: str,
        model: str,
        protocol: str = "grpc",
        mode: str = "text",
        model_dir: str | Path | None = None,
        timeout: float = 60.0,
        concurrency: int = 4,
    ) -> None:
        if mode not in ("text", "ids"):
            raise LirError(f"unknown mode {mode!r} (text or ids)")
        if mode == "ids" and model_dir is None:
            raise LirError("ids mode tokenizes locally: pass the exported model directory (model_dir)")
        self.connection = TritonConnection(url, protocol, timeout, concurrency)
        self.url, self.model, self.protocol, self.mode = url, model, protocol, mode
        parameters = self.connection.parameters(model)
        served = served_manifest(parameters, model)  # the card and fingerprint: no family is guessed here
        self._fingerprint = served.fingerprint
        self.variant = "fp32" if mode == "ids" else parameters.get("variant")  # graph models serve the fp32 file
        if mode == "ids":
            super().__init__(model_dir, load_manifest(model_dir))
            if self.manifest.fingerprint != self._fingerprint:
                raise LirError(
                    f"{model_dir} holds model {self.manifest.name!r}, not the one the server serves as {model!r} "
                    f"({self._fingerprint['model']!r}, another doc encoder?)"
                )
        else:
            self.directory, self.manifest, self.card = None, None, ModelCard.of(served)

    @property
    def fingerprint(self) -> dict[str, str]:
        return self._fingerprint

    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        graph = f"{self.model}.{self.manifest.encoders[role]}"
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.connection.infer(graph, feeds, OUTPUTS[self.family])

    def run_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.require(cross_encoder=True)
        # a [batch] input (groups) is configured as [1] reshaped to []: it is sent as [batch, 1]
        inputs = {name: array.reshape(-1, 1) if array.ndim == 1 else array for name, array in feeds.items()}
        return self.connection.infer(f"{self.model}.{self.manifest.scorer}", inputs, ["scores"])["scores"].reshape(-1)

    def encode(
        self,
        texts: Sequence[str],
        role: str,
        batch_size: int = 32,
        max_tokens: int | None = 2048,
        progress: bool = False,
    ) -> Encoded:
        if self.mode == "ids":
            return super().encode(texts, role, batch_size, max_tokens, progress)
        self.require(cross_encoder=False)
        check_role(role)
        clean = [as_text(t, i, role).encode("utf-8") for i, t in enumerate(texts)]
        starts = range(0, len(clean), batch_size)
        names = OUTPUTS[self.family]

        def send(start: int) -> dict[str, np.ndarray]:
            array = np.array(clean[start : start + batch_size], dtype=object).reshape(-1, 1)
            found = self.connection.infer(self.model, {"TEXT": array}, [n.upper() for n in names], {"role": role})
            return {name: found[name.upper()] for name in names}

        parts = self.connection.parallel(send, list(starts))
        collector = Collector(self.family, len(clean), self.embedding_dim)
        for start, outputs in zip(starts, parts, strict=True):
            collector.add(np.arange(start, min(start + batch_size, len(clean))), outputs)
        return collector.result()

    def score_pairs(
        self,
        queries: Sequence[str],
        docs: Sequence[str],
        groups: Sequence[Hashable] | None = None,
        batch_size: int = 32,
        max_tokens: int | None = PAIR_TOKENS,
        progress: bool = False,
    ) -> np.ndarray:
        if self.mode == "ids":
            return super().score_pairs(queries, docs, groups, batch_size, max_tokens, progress)
        self.require(cross_encoder=True)
        if len(queries) != len(docs):
            raise LirError(f"{len(queries)} queries for {len(docs)} documents: pairs need one of each")
        texts = {
            "QUERY": np.array([as_text(t, i, "query").encode("utf-8") for i, t in enumerate(queries)], dtype=object),
            "DOC": np.array([as_text(t, i, "doc").encode("utf-8") for i, t in enumerate(docs)], dtype=object),
        }
        if self.listwise:  # one request per group: the server scores a request's pairs jointly
            chunks = group_members(pair_groups(queries, groups))
        else:
            count = len(queries)
            chunks = [np.arange(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]

        def send(rows: np.ndarray) -> dict[str, np.ndarray]:
            inputs = {name: array[rows].reshape(-1, 1) for name, array in texts.items()}
            return self.connection.infer(self.model, inputs, ["SCORES"])

        scores = np.empty(len(queries), np.float32)
        for rows, found in zip(chunks, self.connection.parallel(send, chunks), strict=True):
            scores[rows] = found["SCORES"].reshape(-1)
        return scores

    def close(self) -> None:
        self.connection.close()


def _first_line(exc: Exception) -> str:
    """The message of a tritonclient error without its status-code prefix, on one line."""
    text = str(exc).strip() or type(exc).__name__
    return re.sub(r"^\[StatusCode\.\w+\]\s*", "", text.splitlines()[0])
