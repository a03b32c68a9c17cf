"""Triton python-backend models (loaded by the `1/model.py` shims that lir-export writes).

`TextEncoderModel`: strings in, tokenized here by the manifest's rules, the graph run with onnxruntime,
embeddings out; the role (`query` or `doc`) is the request parameter `role` (default `query`).
`GraphModel`: token ids and attention mask in, embeddings out, the same graph file the onnxruntime
backend serves in production. Requests of one batch are run together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by the Triton python backend stub

from lir.clients.onnx_engine import OnnxEngine
from lir.errors import LirError
from lir.manifest import check_role
from lir.tokenization import pad_batch


def _parameters(args: dict) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


class TextEncoderModel:
    """Text endpoint of an exported model directory."""

    def initialize(self, args: dict) -> None:
        parameters = _parameters(args)
        threads = int(os.environ.get("LIR_TRITON_THREADS", "0")) or None
        self.engine = OnnxEngine(
            Path(args["model_repository"]),
            variant=parameters.get("variant", "fp32"),
            device=parameters.get("device", "cpu"),
            threads=threads,
        )

    def execute(self, requests: list) -> list:
        """Encode the texts of all requests of a role together, then answer each request with its rows."""
        responses: list = [None] * len(requests)
        by_role: dict[str, list[tuple[int, list]]] = {}
        for position, request in enumerate(requests):
            try:
                role = check_role(json.loads(request.parameters() or "{}").get("role", "query"))
            except LirError as exc:
                responses[position] = _error(str(exc))
                continue
            texts = list(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1))
            by_role.setdefault(role, []).append((position, texts))
        for role, members in by_role.items():
            try:
                embeddings = self.engine.encode([t for _, texts in members for t in texts], role)
            except LirError:  # answer each request on its own, so one bad text fails only its request
                for position, texts in members:
                    responses[position] = self._single(texts, role)
                continue
            start = 0
            for position, texts in members:
                rows = embeddings[start : start + len(texts)]
                responses[position] = pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDINGS", rows)])
                start += len(texts)
        return responses

    def _single(self, texts: list, role: str):
        try:
            return pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDINGS", self.engine.encode(texts, role))])
        except LirError as exc:
            return _error(str(exc))


class GraphModel:
    """Token ids → embeddings with onnxruntime, for servers without the onnxruntime backend."""

    def initialize(self, args: dict) -> None:
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = ort.SessionOptions()
        threads = int(os.environ.get("LIR_TRITON_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path.resolve()), options, providers=["CPUExecutionProvider"])
        self.output = self.session.get_outputs()[0].name

    def execute(self, requests: list) -> list:
        ids, sizes = [], []
        for request in requests:
            input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            ids.extend(list(row[m.astype(bool)]) for row, m in zip(input_ids, mask, strict=True))
            sizes.append(len(input_ids))
        input_ids, mask = pad_batch(ids, 0)
        out = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        responses, start = [], 0
        for size in sizes:
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, out[start : start + size])]))
            start += size
        return responses
