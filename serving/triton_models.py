"""Triton python-backend models (loaded by the `1/model.py` shims that lir-export writes).

`TextEncoderModel`: strings in, tokenized here by the manifest's rules, the graph run with onnxruntime,
the family's outputs out (upper-case names of `lir.manifest.OUTPUTS`: EMBEDDINGS; EMBEDDINGS and
SCORING_MASK with scored token vectors left-aligned; TERM_IDS and WEIGHTS); the role (`query` or `doc`)
is the request parameter `role` (default `query`).
`PairScorerModel`: the text endpoint of a cross-encoder: QUERY and DOC strings in (one pair per batch
item), tokenized here by the manifest's pair rules, SCORES out. Pointwise models score the pairs of all
requests of a batch together; listwise models score each request as one group of candidates.
`GraphModel`: any exported graph (encoders, scorers) with the inputs and outputs of its ONNX file, the
same file the onnxruntime backend serves in production. Requests of one batch are run together (a
listwise scorer's `groups` renumbered per request, so that requests never share a group).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by the Triton python backend stub

from lir.clients.onnx_engine import OnnxEngine
from lir.errors import LirError
from lir.manifest import check_role
from lir.vectors import padded_outputs


def _parameters(args: dict) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def _engine(args: dict) -> OnnxEngine:
    """The embedded engine of the exported model directory this Triton model is, with its config's variant."""
    parameters = _parameters(args)
    threads = int(os.environ.get("LIR_TRITON_THREADS", "0")) or None
    return OnnxEngine(
        Path(args["model_repository"]),
        variant=parameters.get("variant", "fp32"),
        device=parameters.get("device", "cpu"),
        threads=threads,
    )


def _strings(request, name: str) -> list:
    return list(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1))


class TextEncoderModel:
    """Text endpoint of an exported bi-encoder directory."""

    def initialize(self, args: dict) -> None:
        self.engine = _engine(args)

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
            texts = _strings(request, "TEXT")
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
                responses[position] = _response(padded_outputs(embeddings, start, start + len(texts)))
                start += len(texts)
        return responses

    def _single(self, texts: list, role: str):
        try:
            encoded = self.engine.encode(texts, role)
        except LirError as exc:
            return _error(str(exc))
        return _response(padded_outputs(encoded, 0, len(texts)))


class PairScorerModel:
    """Text endpoint of an exported cross-encoder directory."""

    def initialize(self, args: dict) -> None:
        self.engine = _engine(args)

    def execute(self, requests: list) -> list:
        """Score the pairs of all requests together (each request its own group), then answer each request
        with its scores; when that fails, each request is scored alone so that a bad one fails alone."""
        pairs = [(_strings(request, "QUERY"), _strings(request, "DOC")) for request in requests]
        queries = [q for texts, _ in pairs for q in texts]
        docs = [d for _, texts in pairs for d in texts]
        groups = [position for position, (texts, _) in enumerate(pairs) for _ in texts]
        try:
            scores = self.engine.score_pairs(queries, docs, groups)
        except LirError:
            return [self._single(queries, docs) for queries, docs in pairs]
        responses, start = [], 0
        for texts, _ in pairs:
            responses.append(_scores(scores[start : start + len(texts)]))
            start += len(texts)
        return responses

    def _single(self, queries: list, docs: list):
        try:
            return _scores(self.engine.score_pairs(queries, docs, [0] * len(queries)))
        except LirError as exc:
            return _error(str(exc))


def _scores(scores: np.ndarray):
    return pb_utils.InferenceResponse([pb_utils.Tensor("SCORES", scores.astype(np.float32))])


def _response(outputs: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse([pb_utils.Tensor(name.upper(), value) for name, value in outputs.items()])


class GraphModel:
    """Runs one exported graph with onnxruntime, for servers without the onnxruntime backend.

    The requests of a batch are stacked, each input padded with zeros along its sequence axis (zero
    means padding for token ids, masks and token vectors alike); outputs with a sequence axis are cut
    back to each request's own length.
    """

    def initialize(self, args: dict) -> None:
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = ort.SessionOptions()
        threads = int(os.environ.get("LIR_TRITON_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path.resolve()), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [(o.name, len(o.shape) > 1 and isinstance(o.shape[1], str)) for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for request in requests]
            for name in self.inputs
        }
        if "groups" in arrays:
            arrays["groups"] = separate_groups(arrays["groups"])
        found = self.session.run(None, {name: _stack(parts) for name, parts in arrays.items()})
        sizes = [len(part) for part in arrays[self.inputs[0]]]
        lengths = [part.shape[1] if part.ndim > 1 else 0 for part in arrays[self.inputs[0]]]
        responses, start = [], 0
        for size, length in zip(sizes, lengths, strict=True):
            rows = slice(start, start + size)
            tensors = [
                pb_utils.Tensor(name, value[rows, :length] if per_token else value[rows])
                for (name, per_token), value in zip(self.outputs, found, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
            start += size
        return responses


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate request tensors along the batch axis, zero-padding axis 1 to the longest."""
    if parts[0].ndim < 2 or len({p.shape[1] for p in parts}) == 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, [(0, 0), (0, width - p.shape[1])] + [(0, 0)] * (p.ndim - 2)) for p in parts])


def separate_groups(parts: list[np.ndarray]) -> list[np.ndarray]:
    """The group ids of each request renumbered 0, 1, … past those of the requests before it, so that the
    candidates of different requests never share a group."""
    found, offset = [], 0
    for part in parts:
        _, numbers = np.unique(part, return_inverse=True)
        found.append(numbers.reshape(part.shape).astype(np.int64) + offset)
        offset += int(numbers.max()) + 1 if part.size else 0
    return found
