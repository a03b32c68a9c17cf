"""ONNX graphs of a bi-encoder: token ids + attention mask (dynamic batch and sequence) → embedding.

Pooling, projection and normalization live inside the graph. Transformer blocks of BERT-like backbones
are fused by onnxruntime's optimizer (attention, layer norm, GELU), which parity then checks.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from lir.errors import LirError
from lir.manifest import TensorSpec
from lir.train.bi_encoder import BiEncoderModel

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embeddings"
OPSET = 17
FUSABLE_BACKBONES = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}


class EncoderGraph(nn.Module):
    """The exported computation: the model's encoder, L2-normalized when the similarity is cosine."""

    def __init__(self, model: BiEncoderModel) -> None:
        super().__init__()
        self.model = model
        self.normalize = model.config.similarity == "cosine" and not model.config.normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedding = self.model.encode(input_ids, attention_mask)
        if self.normalize:
            embedding = nn.functional.normalize(embedding, p=2, dim=-1)
        return embedding


def interface(dim: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs the manifest records for an encoder graph."""
    inputs = [TensorSpec(name, "int64", ["batch", "sequence"]) for name in INPUTS]
    return inputs, [TensorSpec(OUTPUT, "float32", ["batch", dim])]


def export_encoder(graph: EncoderGraph, path: Path, opset: int = OPSET) -> None:
    """Trace `graph` to an ONNX file with dynamic batch and sequence axes."""
    sample = torch.full((2, 8), 100, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {OUTPUT: {0: "batch"}}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(),
            sample,
            str(path),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes=axes,
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
        raise LirError(f"onnxruntime's optimizer failed on the graph ({exc}); retry with --no-optimize") from None
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
