"""Write one exported model directory: graphs, tokenizer and manifest, checked, in one atomic rename."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort
import tokenizers
import torch
import transformers

from lir import __version__
from lir.errors import LirError
from lir.export.graphs import (
    OPSET,
    EncoderGraph,
    convert_fp16,
    export_encoder,
    interface,
    optimize_encoder,
    quantize_int8,
)
from lir.export.limits import FP32_TOLERANCE, MIN_COSINE, ParityError
from lir.export.parity import ProbeSet, Reference, effectiveness, find_probe_data, load_probes
from lir.export.triton_repository import write_graph_models, write_text_endpoint
from lir.files import atomic_directory, sha256_file
from lir.manifest import Graph, Manifest, TextRules, TokenizerSpec, Variant, load_manifest
from lir.tokenization import TextEncoder
from lir.train.checkpoints import load_bi_encoder
from lir.train.module import BiEncoderModule

GRAPH = "encoder"


def default_name(spec: str) -> str:
    """A model name from a checkpoint spec: its last path part, lower-case, safe characters only."""
    name = re.sub(r"[^a-z0-9_-]+", "-", Path(spec.rstrip("/")).name.lower()).strip("-")
    return name or "model"


def verify_graph(
    module: BiEncoderModule,
    path: Path,
    probes: ProbeSet,
    variant: str,
    reference: Reference | None = None,
    tolerance: float = FP32_TOLERANCE,
    measure_effectiveness: bool = True,
) -> Variant:
    """Measure a graph against PyTorch on the probe texts; raise ParityError past the variant's bound."""
    reference = reference or Reference.compute(module, probes, EncoderGraph(module.model).normalize)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff, cos = reference.compare(session)
    if variant == "fp32" and diff > tolerance:
        raise ParityError(
            f"the fp32 graph differs from PyTorch by {diff:.2e} (tolerance {tolerance:.0e}) "
            f"on {probes.source}: export refused"
        )
    if variant in MIN_COSINE and cos < MIN_COSINE[variant]:
        raise ParityError(
            f"the {variant} graph's cosine to PyTorch falls to {cos:.4f} (bound {MIN_COSINE[variant]}): export refused"
        )
    cosine = module.model.config.similarity == "cosine"
    found = effectiveness(session, module, probes, cosine) if measure_effectiveness else None
    return Variant(path.name, sha256_file(path), diff, cos, found)


def export_model(
    spec: str,
    output: str | Path = "model_repository",
    name: str | None = None,
    int8: bool = False,
    fp16: bool = False,
    optimize: bool = True,
    parity_data: str | None = None,
    tolerance: float = FP32_TOLERANCE,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Export a checkpoint into `output/name`; nothing is left behind when any check fails."""
    target = Path(output) / (name or default_name(spec))
    if target.exists() and not overwrite:
        raise LirError(f"{target} already exists (pass --overwrite to replace it)")
    if "." in target.name:
        raise LirError(f"model name {target.name!r} may not contain '.' (Triton graph models are named <name>.<graph>)")
    log(f"loading {spec}")
    loaded = load_bi_encoder(spec)
    module = BiEncoderModule(loaded)
    probes = load_probes(find_probe_data(parity_data))
    backbone = loaded.model.backbone.config
    with atomic_directory(target, overwrite=overwrite) as staging:
        log("tracing the encoder to ONNX")
        raw, fp32 = staging / ".traced.onnx", staging / f"{GRAPH}.onnx"
        export_encoder(EncoderGraph(loaded.model), raw)
        fused = optimize and optimize_encoder(
            raw, fp32, loaded.backbone_type, backbone.num_attention_heads, backbone.hidden_size
        )
        if not fused:
            raw.replace(fp32)
        raw.unlink(missing_ok=True)
        log(f"checking parity with PyTorch on {probes.source}")
        reference = Reference.compute(module, probes, EncoderGraph(loaded.model).normalize)
        variants = {"fp32": verify_graph(module, fp32, probes, "fp32", reference, tolerance)}
        log(f"  fp32: max |diff| {variants['fp32'].max_abs_diff:.2e}")
        for wanted, kind, convert in ((int8, "int8", quantize_int8), (fp16, "fp16", convert_fp16)):
            if wanted:
                file = staging / f"{GRAPH}.{kind}.onnx"
                convert(fp32, file)
                variants[kind] = verify_graph(module, file, probes, kind, reference)
                log(f"  {kind}: min cosine {variants[kind].min_cosine:.4f}")
        (staging / "tokenizer.json").write_text(loaded.tokenizer.to_str(), encoding="utf-8")
        manifest = _manifest(target.name, spec, loaded, module, variants, fused, probes)
        manifest.save(staging)
        write_text_endpoint(staging, manifest)
        _self_check(staging)
    try:
        for model in write_graph_models(target, manifest, overwrite=overwrite):
            log(f"wrote Triton model {model}")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    log(f"exported {target}")
    return target


def _manifest(name, spec, loaded, module, variants, fused, probes) -> Manifest:
    config = module.model.config
    dim = module.model.embedding_dim
    inputs, outputs = interface(dim)
    rules = {role: encoder.rules for role, encoder in module.encoders.items()}
    return Manifest(
        name=name,
        family="single-vector",
        similarity=config.similarity,
        embedding_dim=dim,
        normalized=config.normalize or config.similarity == "cosine",
        tokenizer=TokenizerSpec("tokenizer.json", loaded.pad_token_id),
        query=TextRules(**vars(rules["query"])),
        doc=TextRules(**vars(rules["doc"])),
        encoders={"query": GRAPH, "doc": GRAPH},
        graphs={GRAPH: Graph(inputs, outputs, variants)},
        provenance={
            "source": spec,
            "source_format": loaded.source_format,
            "backbone": loaded.backbone_type,
            "pooling": config.pooling,
            "fused": fused,
            "opset": OPSET,
            "parity_texts": probes.source,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "lir": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "tokenizers": tokenizers.__version__,
            },
        },
    )


def _self_check(directory: Path) -> None:
    """Read the staged export back as a consumer would before it is published."""
    manifest = load_manifest(directory)
    for role in ("query", "doc"):
        TextEncoder.from_manifest(directory, manifest, role).encode(["a consumer's probe"])
