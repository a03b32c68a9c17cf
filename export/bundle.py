"""Write one exported model directory: graphs, tokenizer and manifest, checked, in one atomic rename.

The machinery is shared by every family (`lir.export.family.ModelExport`): tracing, fusion with a
fall-back to the plain graph when the fused one fails parity, numeric variants, effectiveness,
provenance, the consumer's self-check of the staged directory and the Triton models beside it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import tokenizers
import torch
import transformers

from lir import __version__
from lir.errors import LirError
from lir.export.coil import CoilExport
from lir.export.cross_encoder import CrossEncoderExport
from lir.export.family import BiEncoderExport, ModelExport
from lir.export.graphs import CONVERSIONS, FUSABLE_BACKBONES, OPSET, GraphPlan, optimize_encoder, trace
from lir.export.limits import DEFAULT_TOP_K, FP32_TOLERANCE, ParityError
from lir.export.multi_vector import MultiVectorExport
from lir.export.parity import Parity, ProbeSet, Reference, find_probe_data, load_probes
from lir.export.single_vector import SingleVectorExport
from lir.export.sparse import SparseExport
from lir.export.triton_repository import (
    default_name,
    is_export,
    is_graph_model_of,
    prepare_export,
    write_graph_model,
    write_text_endpoint,
)
from lir.files import sha256_file
from lir.manifest import Graph, Manifest, TokenizerSpec, Variant, load_manifest, verified_file
from lir.term_weights import TermTable
from lir.tokenization import PairEncoder, TextEncoder
from lir.train.checkpoint_io import LoadedBiEncoder
from lir.train.checkpoints import load_model
from lir.train.cross_encoder import LoadedCrossEncoder
from lir.train.cross_module import CrossEncoderModule
from lir.train.module import BiEncoderModule

Log = Callable[[str], None]
Loaded = LoadedBiEncoder | LoadedCrossEncoder


def family_export(module: BiEncoderModule, top_k: int = DEFAULT_TOP_K) -> BiEncoderExport:
    """The export of a bi-encoder's family (`top_k`: terms per text of a sparse model)."""
    if module.family == "sparse":
        return SparseExport(module, top_k)
    if module.family == "multi-vector":
        return MultiVectorExport(module)
    if module.family == "single-vector":
        return SingleVectorExport(module)
    if module.family == "coil":
        return CoilExport(module)
    raise LirError(f"cannot export a {module.family!r} model")


def model_export(loaded: Loaded, top_k: int = DEFAULT_TOP_K) -> ModelExport:
    """The export of a loaded checkpoint of any family."""
    if isinstance(loaded, LoadedCrossEncoder):
        return CrossEncoderExport(CrossEncoderModule(loaded))
    return family_export(BiEncoderModule(loaded), top_k)


def session(path: Path) -> ort.InferenceSession:
    """An onnxruntime CPU session of a graph file."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_bounds(
    graph: str,
    kind: str,
    diff: float,
    agreement: float,
    tolerance: float,
    source: str,
    bounds: dict[str, float],
    measure: str = "min cosine",
) -> None:
    """Raise ParityError when a variant of a graph drifts past its bound (`bounds`: lowest `measure` per variant)."""
    if kind == "fp32" and diff > tolerance:
        raise ParityError(
            f"the fp32 {graph} graph differs from PyTorch by {diff:.2e} (tolerance {tolerance:.0e}) "
            f"on {source}: export refused"
        )
    if kind in bounds and agreement < bounds[kind]:
        raise ParityError(
            f"the {kind} {graph} graph's {measure} to PyTorch falls to {agreement:.4f} (bound {bounds[kind]}): "
            "export refused"
        )


def verify(reference: Parity, plan: GraphPlan, path: Path, kind: str, tolerance: float = FP32_TOLERANCE) -> Variant:
    """Measure one graph file against PyTorch (encoders on probe texts, scorers on probe pairs)."""
    graph = session(path)
    try:
        diff, agreement = reference.measure(graph, plan)
    except ParityError as exc:
        raise ParityError(f"the {kind} {plan.name} graph: {exc}: export refused") from None
    family = reference.family
    source = reference.probes.source
    check_bounds(plan.name, kind, diff, agreement, tolerance, source, family.bounds, family.agreement)
    return Variant(path.name, sha256_file(path), diff, agreement, family.agreement)


def verify_graph(
    module: BiEncoderModule,
    path: Path,
    probes: ProbeSet,
    variant: str,
    reference: Reference | None = None,
    tolerance: float = FP32_TOLERANCE,
    measure_effectiveness: bool = True,
) -> Variant:
    """Measure a graph that encodes both roles against PyTorch; raise ParityError past the variant's bound."""
    reference = reference or Reference.compute(family_export(module), probes)
    plan = reference.family.plans()[0]
    found = verify(reference, plan, path, variant, tolerance)
    if measure_effectiveness:
        found.effectiveness = reference.effectiveness({plan.name: session(path)})
    return found


def export_model(
    spec: str | Loaded,
    output: str | Path = "model_repository",
    name: str | None = None,
    int8: bool = False,
    fp16: bool = False,
    optimize: bool = True,
    parity_data: str | None = None,
    tolerance: float = FP32_TOLERANCE,
    overwrite: bool = False,
    log: Log = print,
    top_k: int = DEFAULT_TOP_K,
    t5_scoring: str | None = None,
    revision: str | None = None,
) -> Path:
    """Export a checkpoint (a spec, or a model already loaded) into `output/name`.

    Nothing is left behind when any check fails. `top_k` bounds the terms per text of a sparse model;
    `t5_scoring` (`mono` or `rank`) says how a T5 checkpoint scores (default: from its name); `revision`
    pins a hub id's branch, tag or commit (recorded in the provenance).
    """
    source = spec if isinstance(spec, str) else spec.source
    name = name or default_name(source)
    if top_k < 1:
        raise LirError(f"top_k must be positive, not {top_k}")
    swap, existing = prepare_export(output, name, overwrite)
    if isinstance(spec, str):
        log(f"loading {spec}" + (f" at revision {revision}" if revision else ""))
        loaded = load_model(spec, t5_scoring=t5_scoring, revision=revision)
    else:
        loaded = spec
    loaded.model.eval()
    family = model_export(loaded, top_k)
    probes = load_probes(find_probe_data(parity_data))
    with swap:
        staging = swap.stage(name, is_export, "an export")
        log(f"computing PyTorch's {family.family} outputs on {probes.source}")
        reference = family.reference(probes)
        extra = family.provenance(reference.expected)
        for warning in family.warnings(reference.expected):
            log(f"warning: {warning}")
        kinds = ["fp32"] + [kind for kind, wanted in (("int8", int8), ("fp16", fp16)) if wanted]
        graphs, fusion = _graphs(reference, staging, kinds, optimize, tolerance, log)
        (staging / "tokenizer.json").write_text(loaded.tokenizer.to_str(), encoding="utf-8")
        files = family.write_files(staging, reference)
        pinned = {"revision": revision} if revision else {}
        manifest = _manifest(name, source, family, graphs, probes, pinned | extra | fusion, files)
        manifest.save(staging)
        write_text_endpoint(staging, manifest)
        _self_check(staging)
        models = [f"{name}.{graph}" for graph in manifest.graphs]
        for model, graph in zip(models, manifest.graphs.values(), strict=True):
            write_graph_model(swap.stage(model, is_graph_model_of(name), "a Triton model"), name, manifest, graph)
        for model in set(existing) - set(models):
            swap.drop(model, is_graph_model_of(name), "a Triton model")
    target = Path(output) / name
    log(f"exported {target} and Triton models {', '.join(models)}")
    return target


def _graphs(
    reference: Parity, staging: Path, kinds: list[str], optimize: bool, tolerance: float, log: Log
) -> tuple[dict[str, Graph], dict[str, Any]]:
    """Every graph of the family in every variant, each checked; and how fusion went."""
    family = reference.family
    plans = family.plans()
    variants: dict[str, dict[str, Variant]] = {plan.name: {} for plan in plans}
    fused, fallback = {}, {}
    for plan in plans:
        log(f"tracing {plan.name} to ONNX and checking it against PyTorch")
        fuse = optimize and plan.runs_backbone and family.loaded.backbone_type in FUSABLE_BACKBONES
        variants[plan.name]["fp32"], fused[plan.name], reason = _fp32_graph(plan, reference, staging, fuse, tolerance)
        if reason:
            fallback[plan.name] = reason
            log(f"  {plan.name}: the fused graph was refused ({reason}); kept the unfused graph")
        _log_variant(log, family, plan.name, "fp32", variants[plan.name]["fp32"])
    numeric = [plan for plan in plans if plan.runs_backbone]
    for kind in kinds[1:]:
        for plan in numeric:
            file = staging / f"{plan.name}.{kind}.onnx"
            CONVERSIONS[kind](staging / variants[plan.name]["fp32"].file, file)
            variants[plan.name][kind] = verify(reference, plan, file, kind, tolerance)
            _log_variant(log, family, plan.name, kind, variants[plan.name][kind])
    for kind in kinds:
        sessions = {plan.name: session(staging / variants[plan.name][kind].file) for plan in numeric}
        found = reference.effectiveness(sessions)
        for plan in numeric:
            variants[plan.name][kind].effectiveness = found
        if found:
            log(f"  {kind}: {found['measure']} {found['value']} ({found['collection']})")
    graphs = {plan.name: Graph(plan.inputs, plan.outputs, variants[plan.name]) for plan in plans}
    fusion: dict[str, Any] = {"fused": all(fused[plan.name] for plan in numeric)}
    if fallback:
        fusion["fusion_fallback"] = fallback
    return graphs, fusion


def _fp32_graph(
    plan: GraphPlan, reference: Parity, staging: Path, fuse: bool, tolerance: float
) -> tuple[Variant, bool, str | None]:
    """Trace a plan, fuse it when asked and it passes parity, else keep it unfused: (variant, fused, why not)."""
    raw, final = staging / f".{plan.name}.traced.onnx", staging / f"{plan.name}.onnx"
    loaded = reference.family.loaded
    reason = None
    try:
        trace(plan, raw)
        if fuse:
            config = loaded.model.backbone.config
            try:
                optimize_encoder(raw, final, loaded.backbone_type, config.num_attention_heads, config.hidden_size)
                return verify(reference, plan, final, "fp32", tolerance), True, None
            except LirError as exc:  # the optimizer failed or its graph drifted: try the plain one
                reason = str(exc)
        raw.replace(final)
        return verify(reference, plan, final, "fp32", tolerance), False, reason
    finally:
        raw.unlink(missing_ok=True)


def _log_variant(log: Log, family: ModelExport, graph: str, kind: str, variant: Variant) -> None:
    log(f"  {graph} {kind}: max |diff| {variant.max_abs_diff:.2e}, {variant.measure} {variant.agreement:.4f}")


def _manifest(
    name: str,
    source: str,
    family: ModelExport,
    graphs: dict[str, Graph],
    probes: ProbeSet,
    extra: dict[str, Any],
    files: dict[str, Any],
) -> Manifest:
    loaded = family.loaded
    rules = family.rules()
    return Manifest(
        name=name,
        tokenizer=TokenizerSpec("tokenizer.json", loaded.pad_token_id),
        query=rules["query"],
        doc=rules["doc"],
        graphs=graphs,
        **family.manifest_fields(),
        **files,
        provenance={
            "source": source,
            "source_format": loaded.source_format,
            "backbone": loaded.backbone_type,
            **extra,
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
    probe = ["a consumer's probe"]
    if manifest.is_cross_encoder:
        PairEncoder.from_manifest(directory, manifest).encode(probe, probe)
    else:
        for role in ("query", "doc"):
            TextEncoder.from_manifest(directory, manifest, role).encode(probe)
        for role in manifest.term_weights:
            TermTable.from_manifest(directory, manifest, role)
    for name, graph in manifest.graphs.items():
        for variant in graph.variants.values():
            loaded = session(verified_file(directory, variant))
            found = [t.name for t in loaded.get_inputs()], [t.name for t in loaded.get_outputs()]
            if found != ([t.name for t in graph.inputs], [t.name for t in graph.outputs]):
                raise LirError(f"graph {name!r} ({variant.file}) does not have the interface its manifest records")
