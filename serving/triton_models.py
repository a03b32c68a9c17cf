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

One bad request fails alone: each request is checked on its own before it joins a batch (text endpoints:
inputs present, strings of valid UTF-8, within the size limits below, checked before anything is
tokenized; graph models: every input present with the graph's type, rank and fixed sizes, axes of one
name equally long, sequences no longer than the manifest's `max_length` allows, token ids within the
tokenizer's vocabulary, attention masks and token types 0 or 1), and when a batch still fails, its
requests are run one by one. A refused request is answered INVALID_ARG (gRPC INVALID_ARGUMENT, HTTP 400)
with one line; a request that fails for another reason INTERNAL.

Size limits of a text endpoint request: a config parameter of that name, else the environment variable,
else the default (like `LIR_TRITON_THREADS`, the environment reaches the models from `lir-serve`):
`max_texts` / `LIR_TRITON_MAX_TEXTS` texts (pairs) per request (default: the config's `max_batch_size`),
`max_text_bytes` / `LIR_TRITON_MAX_TEXT_BYTES` bytes per text (64 KiB), `max_request_bytes` /
`LIR_TRITON_MAX_REQUEST_BYTES` bytes of text per request (1 MiB).
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by the Triton python backend stub
from tokenizers import Tokenizer

from lir.clients.onnx_engine import OnnxEngine
from lir.errors import LirError, one_line
from lir.manifest import DOC, QUERY, Manifest, TensorSpec, check_role, load_manifest
from lir.vectors import padded_outputs

TEXT_BYTES = 64 * 1024
REQUEST_BYTES = 1024 * 1024
BINARY_INPUTS = ("attention_mask", "token_type_ids")
"""Graph inputs whose values are 0 or 1."""


def model_config(args: dict) -> dict:
    """The config of the model Triton initializes, from its `initialize` arguments."""
    return json.loads(args["model_config"])


def config_parameters(config: dict) -> dict[str, str]:
    """The string parameters of a model config."""
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def error_response(exc: Exception):
    """The response to a request that failed: INVALID_ARG when lir refused it (LirError), else INTERNAL
    (with the traceback in Triton's log)."""
    if isinstance(exc, LirError):
        error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
    else:
        pb_utils.Logger.log_error("".join(traceback.format_exception(exc)))
        error = pb_utils.TritonError(f"{type(exc).__name__}: {one_line(str(exc))}", pb_utils.TritonError.INTERNAL)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def together_or_alone(members: Sequence, run: Callable[[Sequence], list]) -> list:
    """`run(members)`, one response per member; when that fails in any way, each member is run alone, so
    that only a member that fails on its own gets an error response."""
    if not members:
        return []
    try:
        return run(members)
    except Exception as exc:  # which member broke the batch is found by running each alone
        if len(members) == 1:
            return [error_response(exc)]
    responses = []
    for member in members:
        try:
            responses.extend(run([member]))
        except Exception as exc:  # this member's own failure: its error response, the others are served
            responses.append(error_response(exc))
    return responses


def answer_each(requests: Sequence, parse: Callable, run: Callable[[Sequence], list]) -> list:
    """One response per request: each is parsed on its own (one that `parse` refuses gets its error response
    alone), the parsed ones are run together (`together_or_alone`), and each answer goes back in place."""
    responses: list = [None] * len(requests)
    members: list[tuple[int, Any]] = []
    for position, request in enumerate(requests):
        try:
            members.append((position, parse(request)))
        except Exception as exc:  # this request alone is refused (LirError: INVALID_ARG)
            responses[position] = error_response(exc)
    answers = together_or_alone([parsed for _, parsed in members], run)
    for (position, _), answer in zip(members, answers, strict=True):
        responses[position] = answer
    return responses


def _engine(args: dict) -> OnnxEngine:
    """The embedded engine of the exported model directory this Triton model is, with its config's variant."""
    parameters = config_parameters(model_config(args))
    threads = int(os.environ.get("LIR_TRITON_THREADS", "0")) or None
    return OnnxEngine(
        Path(args["model_repository"]),
        variant=parameters.get("variant", "fp32"),
        device=parameters.get("device", "cpu"),
        threads=threads,
    )


def _input(request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise LirError(f"input {name} is missing")
    return tensor.as_numpy()


@dataclass(frozen=True)
class TextLimits:
    """What one request to a text endpoint may hold: texts (pairs), bytes per text, bytes of text in all."""

    count: int
    text_bytes: int
    request_bytes: int

    @classmethod
    def of(cls, args: dict) -> TextLimits:
        """The limits of a model: config parameters, else environment variables, else the defaults."""
        config = model_config(args)
        parameters = config_parameters(config)

        def limit(name: str, default: int) -> int:
            variable = f"LIR_TRITON_{name.upper()}"
            raw = parameters.get(name) or os.environ.get(variable) or str(default)
            if not raw.isdigit() or int(raw) < 1:
                raise LirError(f"{name} ({variable}) must be a positive integer, not {raw!r}")
            return int(raw)

        texts = limit("max_texts", int(config.get("max_batch_size") or 1))
        return cls(texts, limit("max_text_bytes", TEXT_BYTES), limit("max_request_bytes", REQUEST_BYTES))

    def texts(self, request, names: Sequence[str]) -> list[list[str]]:
        """The texts of each input `names` of `request`, decoded; a LirError when one is missing, is not
        strings, is not valid UTF-8, or a limit is exceeded (sizes are checked before anything is decoded)."""
        values = [_input(request, name).reshape(-1) for name in names]
        total = 0
        for name, items in zip(names, values, strict=True):
            if items.dtype != object:
                raise LirError(f"{name} must be strings (BYTES), not {items.dtype}")
            if len(items) > self.count:
                raise LirError(f"{len(items)} texts in {name}, over the limit of {self.count} per request")
            for position, item in enumerate(items):
                if not isinstance(item, bytes):
                    raise LirError(f"{name} #{position} is {type(item).__name__}, expected a string")
                if len(item) > self.text_bytes:
                    raise LirError(
                        f"{name} #{position} has {len(item)} bytes, over the limit of {self.text_bytes} per text"
                    )
                total += len(item)
        if total > self.request_bytes:
            raise LirError(f"the request holds {total} bytes of text, over the limit of {self.request_bytes}")
        return [
            [_decoded(item, name, i) for i, item in enumerate(items)] for name, items in zip(names, values, strict=True)
        ]


def _decoded(item: bytes, name: str, position: int) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        raise LirError(f"{name} #{position} is not valid UTF-8 text") from None


def _role(request) -> str:
    try:
        parameters = json.loads(request.parameters() or "{}")
    except ValueError:
        raise LirError("the request parameters are not JSON") from None
    if not isinstance(parameters, dict):
        raise LirError("the request parameters are not a JSON object")
    role = parameters.get("role", "query")
    return check_role(role if isinstance(role, str) else repr(role))


class TextEncoderModel:
    """Text endpoint of an exported bi-encoder directory."""

    def initialize(self, args: dict) -> None:
        self.engine = _engine(args)
        self.limits = TextLimits.of(args)

    def execute(self, requests: list) -> list:
        """Encode the texts of all valid requests of a role together, then answer each with its rows."""
        responses: list = [None] * len(requests)
        by_role: dict[str, list[tuple[int, list[str]]]] = {}
        for position, request in enumerate(requests):
            try:
                role = _role(request)
                (texts,) = self.limits.texts(request, ("TEXT",))
            except Exception as exc:  # this request alone is refused (LirError: INVALID_ARG)
                responses[position] = error_response(exc)
                continue
            by_role.setdefault(role, []).append((position, texts))
        for role, members in by_role.items():
            answers = together_or_alone([texts for _, texts in members], lambda batch, r=role: self._encode(batch, r))
            for (position, _), answer in zip(members, answers, strict=True):
                responses[position] = answer
        return responses

    def _encode(self, requests: Sequence[list[str]], role: str) -> list:
        """One response per request, from one encoding of all their texts."""
        encoded = self.engine.encode([text for texts in requests for text in texts], role)
        responses, start = [], 0
        for texts in requests:
            responses.append(_response(padded_outputs(encoded, start, start + len(texts))))
            start += len(texts)
        return responses


class PairScorerModel:
    """Text endpoint of an exported cross-encoder directory."""

    def initialize(self, args: dict) -> None:
        self.engine = _engine(args)
        self.limits = TextLimits.of(args)

    def execute(self, requests: list) -> list:
        """Score the pairs of all valid requests together (each request its own group), then answer each
        request with its scores; when that fails, each request is scored alone so that a bad one fails alone."""
        return answer_each(requests, self._pairs, self._score)

    def _pairs(self, request) -> tuple[list[str], list[str]]:
        queries, docs = self.limits.texts(request, ("QUERY", "DOC"))
        if len(queries) != len(docs):
            raise LirError(f"{len(queries)} queries for {len(docs)} documents: pairs need one of each")
        return queries, docs

    def _score(self, pairs: Sequence[tuple[list[str], list[str]]]) -> list:
        """One response per request, from one scoring of all their pairs (each request one group)."""
        queries = [q for texts, _ in pairs for q in texts]
        docs = [d for _, texts in pairs for d in texts]
        groups = [position for position, (texts, _) in enumerate(pairs) for _ in texts]
        scores = self.engine.score_pairs(queries, docs, groups)
        responses, start = [], 0
        for texts, _ in pairs:
            responses.append(_scores(scores[start : start + len(texts)]))
            start += len(texts)
        return responses


def _scores(scores: np.ndarray):
    return pb_utils.InferenceResponse([pb_utils.Tensor("SCORES", scores.astype(np.float32))])


def _response(outputs: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse([pb_utils.Tensor(name.upper(), value) for name, value in outputs.items()])


class GraphChecks:
    """What a request to one exported graph must hold, from the export's manifest and tokenizer: every
    input with its type and rank, the fixed sizes, one length per axis name (batch, sequence), sequences
    within `lengths`, token ids in [0, vocabulary), masks and token types 0 or 1."""

    def __init__(self, inputs: Sequence[TensorSpec], lengths: dict[str, int], vocabulary: int) -> None:
        self.inputs, self.lengths, self.vocabulary = list(inputs), lengths, vocabulary

    @classmethod
    def of(cls, model_repository: str | Path, model_name: str) -> GraphChecks:
        """The checks of the Triton graph model `<name>.<graph>`, whose export is `../<name>/`."""
        bundle, _, graph = model_name.rpartition(".")
        directory = Path(model_repository).parent / bundle
        manifest = load_manifest(directory)
        if graph not in manifest.graphs:
            raise LirError(f"{directory} has no graph {graph!r} (graphs: {', '.join(manifest.graphs)})")
        tokenizer = Tokenizer.from_file(str(directory / manifest.tokenizer.file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        lengths = _sequence_lengths(manifest, graph, tokenizer)
        return cls(manifest.graphs[graph].inputs, lengths, tokenizer.get_vocab_size(with_added_tokens=True))

    def feeds(self, request) -> dict[str, np.ndarray]:
        """The request's inputs by name, or a LirError that says what is wrong with them."""
        feeds: dict[str, np.ndarray] = {}
        sizes: dict[str, tuple[str, int]] = {}
        for spec in self.inputs:
            array = _input(request, spec.name)
            if array.dtype != np.dtype(spec.dtype) or array.ndim != len(spec.shape):
                expected = f"{spec.dtype} of rank {len(spec.shape)}"
                raise LirError(f"input {spec.name} must be {expected}, not {array.dtype} {list(array.shape)}")
            for axis, size in zip(spec.shape, array.shape, strict=True):
                self._check_axis(spec.name, axis, size, sizes)
            self._check_values(spec.name, array)
            feeds[spec.name] = array
        return feeds

    def _check_axis(self, name: str, axis: int | str, size: int, sizes: dict[str, tuple[str, int]]) -> None:
        if isinstance(axis, int):
            if size != axis:
                raise LirError(f"input {name} has {size} entries where the graph takes {axis}")
            return
        first, expected = sizes.setdefault(axis, (name, size))
        if size != expected:
            raise LirError(f"inputs {first} and {name} differ in their {axis} axis ({expected} and {size})")
        if size > self.lengths.get(axis, size):
            raise LirError(f"input {name} has {size} tokens, over the model's limit of {self.lengths[axis]}")

    def _check_values(self, name: str, array: np.ndarray) -> None:
        if not array.size or (name != "input_ids" and name not in BINARY_INPUTS):
            return
        low, high = int(array.min()), int(array.max())
        bound = self.vocabulary if name == "input_ids" else 2
        if low < 0 or high >= bound:
            bad = low if low < 0 else high
            allowed = f"the vocabulary [0, {bound})" if name == "input_ids" else "0 and 1"
            raise LirError(f"{name} holds {bad}, outside {allowed}")


def _sequence_lengths(manifest: Manifest, graph: str, tokenizer: Tokenizer) -> dict[str, int]:
    """The longest sequence each sequence axis of `graph` may have under the manifest's text rules: the
    `max_length` of the roles it encodes; for a cross-encoder's pairs both roles' plus the template's tokens,
    at most the pair's `max_length`;
    for a late-interaction scorer the query's (`q_sequence`) and the document's (`d_sequence`)."""
    if manifest.pair is not None:
        template = sum(
            len(tokenizer.encode(part, add_special_tokens=False).ids)
            for part in manifest.pair.template
            if part not in (QUERY, DOC)
        )
        total = manifest.query.max_length + manifest.doc.max_length + template
        return {"sequence": min(total, manifest.pair.max_length or total)}
    if graph == manifest.scorer:
        return {"q_sequence": manifest.query.max_length, "d_sequence": manifest.doc.max_length}
    roles = [role for role, name in manifest.encoders.items() if name == graph]
    return {"sequence": max(manifest.rules(role).max_length for role in roles)}


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
        self.checks = GraphChecks.of(args["model_repository"], args["model_name"])
        if {spec.name for spec in self.checks.inputs} != set(self.inputs):
            raise LirError(f"{path} takes {', '.join(self.inputs)}, not the manifest's inputs")

    def execute(self, requests: list) -> list:
        """Check each request, run the valid ones together (one by one when that fails), answer each."""
        return answer_each(requests, self.checks.feeds, self._run)

    def _run(self, requests: Sequence[dict[str, np.ndarray]]) -> list:
        """One response per request, from one run of the graph on all of them."""
        arrays = {name: [feeds[name] for feeds in requests] for name in self.inputs}
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
