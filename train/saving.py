"""Write a model as a Lightning IR checkpoint directory that lir's loaders (and so lir-export) read back exactly.

Layout, as Lightning IR saves: `config.json` (the backbone's own fields, the family's `model_type`, the
`backbone_model_type`, the family's settings under Lightning IR's keys), `model.safetensors` (the backbone's
tensors without prefix, then the head: `projection.*`, `linear.*`, `bert_pool.0.*`), `tokenizer.json` and
`tokenizer_config.json` (`backbone_tokenizer_class`). Settings that Lightning IR cannot express (text
prefixes, a projection activation, markers other than [QUE]/[DOC]) are refused rather than dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

from lir.errors import LirError
from lir.train.checkpoint_io import MARKERS, TextConfig

TOKENIZER_CLASSES = {
    "lir-dpr": "BiEncoderTokenizer",
    "col": "ColTokenizer",
    "mvr": "MvrTokenizer",
    "splade": "SpladeTokenizer",
    "unicoil": "BiEncoderTokenizer",
    "coil": "BiEncoderTokenizer",
    "mono": "CrossEncoderTokenizer",
    "set-encoder": "SetEncoderTokenizer",
}
"""Lightning IR's tokenizer class of each model type (tokenizer_config.json's `tokenizer_class`)."""
BACKBONE_FIELDS_DROPPED = ("architectures", "_name_or_path", "transformers_version", "model_type")

Settings = dict[str, Any]
Tensors = dict[str, torch.Tensor]


def save_lightning_ir(model: nn.Module, tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write `model` (any family with a Lightning IR layout) and its tokenizer into `directory`."""
    settings, head = family_settings(model, tokenizer)
    return write_checkpoint(directory, model.backbone, tokenizer, settings, head)


def write_checkpoint(
    directory: str | Path, backbone: PreTrainedModel, tokenizer: Tokenizer, settings: Settings, head: Tensors
) -> Path:
    """The Lightning IR directory of a backbone, a family's settings (with `model_type`) and its head tensors."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone_type = backbone.config.model_type
    fields = {k: v for k, v in backbone.config.to_diff_dict().items() if k not in BACKBONE_FIELDS_DROPPED}
    config = fields | {"backbone_model_type": backbone_type} | settings
    tensors = {name: _plain(value) for name, value in (backbone.state_dict() | head).items()}
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": TOKENIZER_CLASSES[settings["model_type"]],
        "backbone_tokenizer_class": (TOKENIZER_MAPPING_NAMES.get(backbone_type) or (None, None))[1],
        "query_length": settings["query_length"],
        "doc_length": settings["doc_length"],
        "add_marker_tokens": bool(settings.get("add_marker_tokens")),
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return directory


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached CPU copy, float32 when floating (mixed-precision training keeps fp32 weights anyway)."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous().clone()


def family_settings(model: nn.Module, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
    """Lightning IR's config keys and head tensors of a loaded or trained model (its `lightning_ir_layout`)."""
    layout = getattr(model, "lightning_ir_layout", None)
    if layout is None:
        raise LirError(f"a {type(model).__name__} has no Lightning IR layout: it cannot be saved as a checkpoint")
    return layout(tokenizer)


def markers_layout(query: str | None, doc: str | None) -> bool:
    """Whether the model uses Lightning IR's [QUE]/[DOC] markers (others cannot be written)."""
    if (query, doc) == (None, None):
        return False
    if (query, doc) != MARKERS:
        raise LirError(f"markers {query!r}/{doc!r}: Lightning IR checkpoints know only {MARKERS[0]}/{MARKERS[1]}")
    return True


def text_layout(config: TextConfig) -> Settings:
    """The text settings Lightning IR bi-encoder configs share, from a `checkpoint_io.TextConfig` (the inverse of
    `checkpoint_io.lightning_ir_text`): lengths, [QUE]/[DOC] markers and similarity."""
    return {
        "similarity_function": config.similarity,
        "query_length": config.query_length,
        "doc_length": config.doc_length,
        "add_marker_tokens": markers_layout(config.query_marker, config.doc_marker),
    }


def projection_layout(layer: nn.Linear | None, prefix: str = "projection") -> tuple[str | None, Tensors]:
    """Lightning IR's `projection` setting of a linear layer (linear, linear_no_bias or None) and its tensors."""
    if layer is None:
        return None, {}
    tensors = {f"{prefix}.weight": layer.weight}
    if layer.bias is not None:
        tensors[f"{prefix}.bias"] = layer.bias
    return ("linear" if layer.bias is not None else "linear_no_bias"), tensors


BI_ENCODER_DEFAULTS: Settings = {
    "query_length": 32,
    "doc_length": 512,
    "similarity_function": "dot",
    "add_marker_tokens": False,
}
"""Lightning IR 0.0.6's defaults of the text settings every bi-encoder config has."""


class NewModel(NamedTuple):
    """How a new model of one Lightning IR model type starts (`lir.train.initialize`): Lightning IR 0.0.6's
    defaults of every setting lir reads for that type (the only keys a new model may set) and its fresh head."""

    defaults: Settings
    head: Callable[[PreTrainedModel, Settings], Tensors]

    def settings(self, given: Mapping[str, Any]) -> Settings:
        """The complete config of a new model: the defaults with `given` (Lightning IR's keys) over them."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(set(self.defaults) - {"model_type"}))
            raise LirError(f"a new {self.defaults['model_type']} model has no setting {unknown[0]!r} (known: {known})")
        return self.defaults | dict(given)


def new_projection(backbone: PreTrainedModel, settings: Settings) -> Tensors:
    """A fresh `projection` (Lightning IR's linear, linear_no_bias or null) to `embedding_dim` (default: the
    hidden size)."""
    projection = settings["projection"]
    if projection is None:
        return {}
    if projection not in ("linear", "linear_no_bias"):
        raise LirError(f"unknown projection {projection!r} (known: linear, linear_no_bias, null)")
    hidden = backbone.config.hidden_size
    return new_linear("projection", hidden, settings["embedding_dim"] or hidden, projection == "linear")


def new_linear(prefix: str, inputs: int, outputs: int, bias: bool) -> Tensors:
    layer = nn.Linear(inputs, outputs, bias=bias)
    tensors = {f"{prefix}.weight": layer.weight.detach()}
    if bias:
        tensors[f"{prefix}.bias"] = layer.bias.detach()
    return tensors
