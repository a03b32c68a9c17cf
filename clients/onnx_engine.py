"""The embedded engine: onnxruntime in this process, reading an exported model directory (the encoder
graphs of a bi-encoder, the scorer graph of a cross-encoder)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lir.clients.engine import Engine
from lir.errors import LirError
from lir.manifest import load_manifest, verified_file

DEVICES = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


class OnnxEngine(Engine):
    """Runs the manifest's graphs with onnxruntime (CPU by default; `device="cuda"` needs onnxruntime-gpu)."""

    def __init__(
        self, directory: str | Path, variant: str = "fp32", device: str = "cpu", threads: int | None = None
    ) -> None:
        super().__init__(directory, load_manifest(directory))
        if device not in DEVICES:
            raise LirError(f"unknown device {device!r} (cpu or cuda)")
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise LirError("device cuda needs onnxruntime-gpu and a GPU (pip install 'lir[gpu]')")
        self.variant = variant
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions: dict[str, ort.InferenceSession] = {}
        if self.manifest.is_cross_encoder:
            self._graph_of = {"scorer": self.manifest.scorer}
        else:
            self._graph_of = {role: name for role, name in self.manifest.encoders.items()}
        for name in dict.fromkeys(self._graph_of.values()):
            graph = self.manifest.graphs[name]
            if variant not in graph.variants:
                raise LirError(
                    f"{directory}: graph {name!r} has no {variant} variant (exported: {', '.join(graph.variants)})"
                )
            path = verified_file(self.directory, graph.variants[variant])
            self._sessions[name] = ort.InferenceSession(str(path), options, providers=DEVICES[device])
        self._outputs = {name: [o.name for o in session.get_outputs()] for name, session in self._sessions.items()}

    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        name = self._graph_of[role]
        found = self._sessions[name].run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return dict(zip(self._outputs[name], found, strict=True))

    def run_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.require(cross_encoder=True)
        return self._sessions[self._graph_of["scorer"]].run(["scores"], feeds)[0]

    def close(self) -> None:
        self._sessions.clear()
