"""Triton model configs for an exported model: a text endpoint and one model per graph.

Layout in the model repository (one source of truth for the ONNX files):

    <name>/                  the exported model, also the text endpoint (python backend: strings in,
      config.pbtxt           tokenized on the server by the manifest's rules, the family's outputs out; CPU)
      configs/onnxruntime.pbtxt   the same on a GPU (onnxruntime-gpu in the image)
      1/model.py
      manifest.json, tokenizer.json, encoder.onnx, ...
    <name>.<graph>/          the graph's own inputs and outputs (encoders: token ids in; scorer: token vectors in)
      config.pbtxt           python backend running the graph with onnxruntime (the local tritonserver)
      configs/onnxruntime.pbtxt   the onnxruntime backend, GPU (official image: --model-config-name=onnxruntime)
      1/model.onnx -> ../../<name>/<graph file>
      1/model.py

Text endpoint outputs per family: single-vector EMBEDDINGS [D]; multi-vector EMBEDDINGS [-1, D] and
SCORING_MASK [-1]; sparse TERM_IDS [-1] and WEIGHTS [-1]. The parameter `manifest` holds the export's
manifest, which engines read (`lir.model_card`); `family`, `embedding_dim` (and `aggregation` for
multi-vector models) repeat what it says for a reader of the config. Bool tensors are TYPE_BOOL; a [batch] tensor is
[1] reshaped to [].

A search model (`lir-serve --index`, in the server's work folder, not in the repository) is the python-backend
model `<name>.search`: QUERY strings and an optional K in, DOC_IDS, SCORES and TIMINGS_MS out; its parameters
name the index folder, the export that encodes the queries and the optional re-ranking stage.

A cross-encoder's text endpoint takes QUERY and DOC strings (one pair per batch item) and returns SCORES;
the parameter `listwise` says whether each request is one group of candidates scored jointly. Its models
take up to 256 pairs per batch (a listwise request holds a whole candidate list). The listwise scorer
graph served by the onnxruntime backend runs each request alone (no dynamic batching: requests must not
share a group); the python-backend graph model keeps them apart itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from lir.errors import LirError
from lir.files import FolderSwap, owned_by, plain_name
from lir.manifest import FORMAT, MANIFEST_FILE, Graph, Manifest
from lir.model_card import MANIFEST_PARAMETER

MAX_BATCH = 64
CROSS_MAX_BATCH = 256
PREFERRED_BATCHES = (8, 32)
QUEUE_DELAY_US = 100
TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32", "bool": "TYPE_BOOL"}
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
TEXT_SHIM = "from lir.serving.triton_models import TextEncoderModel as TritonPythonModel  # noqa: F401\n"
GRAPH_SHIM = "from lir.serving.triton_models import GraphModel as TritonPythonModel  # noqa: F401\n"
PAIR_SHIM = "from lir.serving.triton_models import PairScorerModel as TritonPythonModel  # noqa: F401\n"
SEARCH_SHIM = "from lir.serving.search_model import SearchModel as TritonPythonModel  # noqa: F401\n"


def _tensor(name: str, dtype: str, dims: list, optional: bool = False) -> str:
    """One tensor of a config; a tensor of one value per batch item is [1] reshaped to []; an `optional`
    input may be left out of a request."""
    more = " optional: true" if optional else ""
    if not dims:
        return f'  {{ name: "{name}" data_type: {dtype} dims: [ 1 ] reshape: {{ shape: [ ] }}{more} }}'
    shape = ", ".join(str(d) if isinstance(d, int) else "-1" for d in dims)
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ {shape} ]{more} }}'


def max_batch(manifest: Manifest) -> int:
    """The largest batch a model of this manifest takes (pairs for a cross-encoder, texts otherwise)."""
    return CROSS_MAX_BATCH if manifest.is_cross_encoder else MAX_BATCH


def text_inputs(manifest: Manifest) -> list[str]:
    """The text endpoint's inputs: TEXT, or QUERY and DOC for a cross-encoder."""
    names = ("QUERY", "DOC") if manifest.is_cross_encoder else ("TEXT",)
    return [_tensor(name, "TYPE_STRING", [1]) for name in names]


def text_outputs(manifest: Manifest) -> list[str]:
    """The text endpoint's outputs per family: one embedding, token vectors and mask, top-k terms or scores."""
    dim = manifest.embedding_dim
    if manifest.is_cross_encoder:
        return [_tensor("SCORES", "TYPE_FP32", [])]
    if manifest.family == "multi-vector":
        return [_tensor("EMBEDDINGS", "TYPE_FP32", [-1, dim]), _tensor("SCORING_MASK", "TYPE_BOOL", [-1])]
    if manifest.family == "sparse":
        return [_tensor("TERM_IDS", "TYPE_INT64", [-1]), _tensor("WEIGHTS", "TYPE_FP32", [-1])]
    if manifest.family == "coil":
        return [
            _tensor("CLS", "TYPE_FP32", [manifest.graphs[manifest.encoders["query"]].outputs[0].shape[1]]),
            _tensor("EMBEDDINGS", "TYPE_FP32", [-1, dim]),
            _tensor("TOKEN_IDS", "TYPE_INT64", [-1]),
            _tensor("SCORING_MASK", "TYPE_BOOL", [-1]),
        ]
    return [_tensor("EMBEDDINGS", "TYPE_FP32", [dim])]


def family_parameters(manifest: Manifest) -> dict[str, str]:
    """The model family, its vector size (the sparse outputs do not show it) and the aggregation of a
    multi-vector model, or whether a cross-encoder is listwise, as config parameters."""
    if manifest.pair is not None:
        return {"family": manifest.family, "listwise": str(manifest.pair.listwise).lower()}
    found = {"family": manifest.family, "embedding_dim": str(manifest.embedding_dim)}
    if manifest.aggregation is not None:
        found["aggregation"] = manifest.aggregation
    if manifest.doc_aggregation is not None:
        found["doc_aggregation"] = manifest.doc_aggregation
    return found


def _common(parameters: dict[str, str], kind: str, batching: bool = True) -> str:
    params = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{_escaped(v)}" }} }}' for k, v in parameters.items()
    )
    preferred = ", ".join(str(b) for b in PREFERRED_BATCHES)
    dynamic = (
        f"dynamic_batching {{ preferred_batch_size: [ {preferred} ] max_queue_delay_microseconds: {QUEUE_DELAY_US} }}\n"
    )
    return f"{params}\n" + (dynamic if batching else "") + f"instance_group [ {{ count: 1 kind: {kind} }} ]\n"


def _escaped(value: str) -> str:
    """`value` as the body of a protobuf text-format string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _fingerprint(manifest: Manifest) -> dict[str, str]:
    """The manifest's fingerprint as config parameters (`lir_model`, `doc_encoder_sha256`)."""
    fingerprint = manifest.fingerprint
    return {"lir_model": fingerprint["model"], "doc_encoder_sha256": fingerprint["doc_encoder_sha256"]}


def text_endpoint_config(manifest: Manifest, device: str = "cpu", variant: str = "fp32") -> str:
    """config.pbtxt of the text endpoint: TEXT strings → the family's outputs (the role is a request
    parameter), or QUERY and DOC strings → SCORES."""
    inputs, outputs = ",\n".join(text_inputs(manifest)), ",\n".join(text_outputs(manifest))
    return (
        'backend: "python"\n'
        f"max_batch_size: {max_batch(manifest)}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        + _common(
            {"variant": variant, "device": device}
            | family_parameters(manifest)
            | _fingerprint(manifest)
            | {MANIFEST_PARAMETER: json.dumps(manifest.to_dict(), separators=(",", ":"))},
            "KIND_GPU" if device == "cuda" else "KIND_CPU",
        )
    )


def graph_config(manifest: Manifest, graph: Graph, backend: str) -> str:
    """config.pbtxt of a graph model for the python or the onnxruntime backend."""
    inputs = ",\n".join(_tensor(t.name, TYPES[t.dtype], t.shape[1:]) for t in graph.inputs)
    outputs = ",\n".join(_tensor(t.name, TYPES[t.dtype], t.shape[1:]) for t in graph.outputs)
    head = (
        'backend: "python"\n'
        if backend == "python"
        else 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"\n'
    )
    body = f"{head}max_batch_size: {max_batch(manifest)}\ninput [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
    if backend == "python":
        return body + _common(_fingerprint(manifest), "KIND_CPU")
    grouped = any(t.name == "groups" for t in graph.inputs)  # requests batched together would share groups
    return (
        body
        + _common(_fingerprint(manifest), "KIND_GPU", batching=not grouped)
        + "# TensorRT instead of CUDA: uncomment (first load builds engines, minutes)\n"
        + '# optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt"\n'
        + '#   parameters { key: "precision_mode" value: "FP16" } } ] } }\n'
    )


def search_config(parameters: dict[str, str], stages: list[str]) -> str:
    """config.pbtxt of a search model (python backend, CPU): QUERY strings (one query per batch item) and an
    optional K in; DOC_IDS and SCORES (best first, padded with empty ids) and TIMINGS_MS (one per stage, named
    by the parameter `timings`) out."""
    inputs = ",\n".join([_tensor("QUERY", "TYPE_STRING", [1]), _tensor("K", "TYPE_INT32", [], optional=True)])
    outputs = ",\n".join(
        [
            _tensor("DOC_IDS", "TYPE_STRING", [-1]),
            _tensor("SCORES", "TYPE_FP32", [-1]),
            _tensor("TIMINGS_MS", "TYPE_FP32", [len(stages)]),
        ]
    )
    return f'backend: "python"\nmax_batch_size: {MAX_BATCH}\ninput [\n{inputs}\n]\noutput [\n{outputs}\n]\n' + _common(
        parameters | {"timings": ",".join(stages)}, "KIND_CPU"
    )


def write_search_model(directory: Path, parameters: dict[str, str], stages: list[str]) -> None:
    """A search model (config.pbtxt and 1/model.py) in the new folder `directory`."""
    (directory / "1").mkdir(parents=True)
    (directory / "config.pbtxt").write_text(search_config(parameters, stages))
    (directory / "1" / "model.py").write_text(SEARCH_SHIM)


def write_text_endpoint(directory: Path, manifest: Manifest) -> None:
    """Make an exported model directory a Triton model too (config.pbtxt and 1/model.py)."""
    (directory / "config.pbtxt").write_text(text_endpoint_config(manifest))
    (directory / "configs").mkdir(exist_ok=True)
    (directory / "configs" / "onnxruntime.pbtxt").write_text(text_endpoint_config(manifest, device="cuda"))
    (directory / "1").mkdir(exist_ok=True)
    (directory / "1" / "model.py").write_text(PAIR_SHIM if manifest.is_cross_encoder else TEXT_SHIM)


def default_name(spec: str) -> str:
    """A model name from a checkpoint spec: its last path part, lower-case, safe characters only."""
    name = re.sub(r"[^a-z0-9_-]+", "-", Path(spec.rstrip("/")).name.lower()).strip("-")
    return name or "model"


def check_model_name(name: str) -> str:
    """`name` if Triton can serve it as a model of the repository and a URL can name it: a plain name of
    letters, digits, '_' and '-' (no '.': Triton graph models are named <name>.<graph>), at most 100."""
    plain_name(name, "model name")
    if "." in name:
        raise LirError(f"model name {name!r} may not contain '.' (Triton graph models are named <name>.<graph>)")
    if not MODEL_NAME.fullmatch(name):
        raise LirError(f"model name {name!r}: use letters, digits, '_' and '-' (at most 100, a letter or digit first)")
    return name


is_export = owned_by(MANIFEST_FILE, (FORMAT,))
"""Whether a folder is an export of lir (only those are replaced by --overwrite)."""


def is_graph_model_of(name: str) -> Callable[[Path], bool]:
    """A test of whether a folder is a Triton graph model that lir-export wrote for the export `name`."""

    def owned(folder: Path) -> bool:
        link = folder / "1" / "model.onnx"
        try:
            shim = (folder / "1" / "model.py").read_text(encoding="utf-8")
            return shim == GRAPH_SHIM and link.is_symlink() and Path(os.readlink(link)).parts[:3] == ("..", "..", name)
        except (OSError, UnicodeDecodeError):
            return False

    return owned


def prepare_export(output: str | Path, name: str, overwrite: bool) -> tuple[FolderSwap, list[str]]:
    """Check, before any export work, that the export `name` may be written into the repository `output`: a
    plain name, a writable repository, no foreign folder in its place (an existing export only with
    `overwrite`), and every existing `name.*` folder a graph model of that export. Returns the swap that will
    publish it and those existing graph models."""
    swap = FolderSwap(output, overwrite)
    swap.check(check_model_name(name), is_export, "an export")
    found = sorted(path.name for path in swap.parent.glob(f"{name}.*") if not path.name.startswith("."))
    for model in found:
        swap.check(model, is_graph_model_of(name), f"a Triton graph model of {name}")
    return swap, found


def write_graph_model(staging: Path, bundle: str, manifest: Manifest, graph: Graph) -> None:
    """The Triton model of one graph (configs, shim, and a link to the export's fp32 file) in `staging`."""
    (staging / "1").mkdir()
    (staging / "configs").mkdir()
    (staging / "config.pbtxt").write_text(graph_config(manifest, graph, "python"))
    (staging / "configs" / "onnxruntime.pbtxt").write_text(graph_config(manifest, graph, "onnxruntime"))
    (staging / "1" / "model.py").write_text(GRAPH_SHIM)
    os.symlink(Path("..", "..", bundle, graph.variants["fp32"].file), staging / "1" / "model.onnx")
