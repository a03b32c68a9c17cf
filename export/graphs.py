"""Tracing, fusing and converting ONNX graphs, shared by every model family.

A `GraphPlan` names one graph to export: the PyTorch module to trace, its interface as the manifest
records it (string dimensions are dynamic axes), the roles it encodes (none for a scoring graph) and
whether it runs the transformer. Transformer blocks of BERT-like backbones are fused by onnxruntime's
optimizer (attention, layer norm, GELU), which parity then checks; graphs that run the transformer are
also exported in the numeric variants (int8, fp16).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from lir.errors import LirError
from lir.manifest import TensorSpec

INPUTS = ("input_ids", "attention_mask")
OPSET = 17
FUSABLE_BACKBONES = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}


@dataclass
class GraphPlan:
    """One graph to export: the module to trace, its interface, a sample input, the roles it encodes and
    whether it runs the transformer (a multi-vector scorer does not: it is neither fused nor quantized)."""

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sample: tuple[torch.Tensor, ...]
    roles: tuple[str, ...] = ()
    runs_backbone: bool = True


def encoder_inputs() -> list[TensorSpec]:
    """The inputs of every encoder graph: token ids and attention mask, [batch, sequence] int64."""
    return [TensorSpec(name, "int64", ["batch", "sequence"]) for name in INPUTS]


def encoder_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask to trace an encoder with."""
    return torch.full((2, 8), 100, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)


def dynamic_axes(specs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    """torch.onnx's dynamic axes from the string dimensions of `specs`."""
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in specs}


def trace(plan: GraphPlan, path: Path, opset: int = OPSET) -> None:
    """Trace `plan.module` to an ONNX file with the plan's names and dynamic axes, then check it."""
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plan.module.eval(),
            plan.sample,
            str(path),
            input_names=[t.name for t in plan.inputs],
            output_names=[t.name for t in plan.outputs],
            dynamic_axes=dynamic_axes(plan.inputs + plan.outputs),
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def optimize_encoder(source: Path, target: Path, backbone_type: str, heads: int, hidden: int) -> bool:
    """Fuse transformer blocks with onnxruntime's optimizer; False (and a copy) when not applicable."""
    if backbone_type not in FUSABLE_BACKBONES:
        target.write_bytes(source.read_bytes())
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1)
    except Exception as exc:  # the optimizer raises many types on graphs it does not recognise
        raise LirError(f"onnxruntime's optimizer failed on the graph ({exc})") from None
    optimized.save_model_to_file(str(target))
    return True


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization, per-channel weights (per-tensor loses too much on small models)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def convert_fp16(source: Path, target: Path) -> None:
    """Half-precision weights and compute, float32 inputs and outputs kept (a GPU variant)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))


CONVERSIONS = {"int8": quantize_int8, "fp16": convert_fp16}
"""How each numeric variant is made from the fp32 graph."""
