"""Checkpoint reading shared by every family's codec: safetensors weights (never pickle), a Hugging Face
backbone from its config and weights, the tokenizer as a `tokenizers.Tokenizer`, head tensors taken out of
the weights one by one (what is left over is refused), and the text settings of Lightning IR configs."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from lir.errors import LirError
from lir.files import read_json
from lir.manifest import TextRules, check_role

if TYPE_CHECKING:
    from lir.train.coil import CoilModel
    from lir.train.multi_vector import MultiVectorModel
    from lir.train.single_vector import BiEncoderModel
    from lir.train.sparse import SparseModel
    from lir.train.unicoil import UniCoilModel

LIR_CONFIG_KEYS = {
    "model_type",
    "backbone_model_type",
    "architectures",
    "query_length",
    "doc_length",
    "similarity_function",
    "normalization_strategy",
    "normalize",
    "sparsification",
    "sparsification_strategy",
    "pooling_strategy",
    "query_pooling_strategy",
    "doc_pooling_strategy",
    "embedding_dim",
    "projection",
    "add_marker_tokens",
    "use_adapter",
    "adapter_config",
    "pretrained_adapter_name_or_path",
    "save_step",
    "query_expansion",
    "doc_expansion",
    "attend_to_query_expanded_tokens",
    "attend_to_doc_expanded_tokens",
    "query_mask_scoring_tokens",
    "doc_mask_scoring_tokens",
    "query_aggregation_function",
    "doc_aggregation_function",
    "query_weighting",
    "doc_weighting",
}


MARKERS = ("[QUE]", "[DOC]")


IGNORED_KEYS = ("pooler.", "embeddings.position_ids")


@dataclass
class LoadedBiEncoder:
    """A loaded checkpoint: the model, its tokenizer and where it came from."""

    model: BiEncoderModel | MultiVectorModel | SparseModel | UniCoilModel | CoilModel
    tokenizer: Tokenizer
    pad_token_id: int
    source: str
    source_format: str
    backbone_type: str


def lightning_ir_pooling(config: dict[str, Any], where: Path) -> str | None:
    """The pooling a Lightning IR config names (`pooling_strategy`, else the old per-role keys)."""
    pooling = config.get("pooling_strategy")
    old_q, old_d = config.get("query_pooling_strategy"), config.get("doc_pooling_strategy")
    if pooling is None and (old_q or old_d):
        if old_q and old_d and old_q != old_d:
            raise LirError(f"{where}: different query ({old_q}) and doc ({old_d}) pooling is not supported")
        pooling = old_q or old_d
    return pooling


@contextmanager
def located(where: Path) -> Iterator[None]:
    """Prefix the one-line LirErrors raised inside (settings validation) with the checkpoint's path."""
    try:
        yield
    except LirError as exc:
        raise LirError(f"{where}: {exc}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder's safetensors file(s); pickle files are refused."""
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = [path / name for name in sorted(set(read_json(index).get("weight_map", {}).values()))]
    elif (path / "pytorch_model.bin").is_file():
        raise LirError(
            f"{path} has only pytorch_model.bin: lir loads safetensors alone (pickle files can run code); "
            "convert it with safetensors first"
        )
    else:
        raise LirError(f"{path} has no model.safetensors")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise LirError(f"weights file {file} is corrupt or truncated ({str(exc).splitlines()[0]})") from None
    return weights


def build_backbone(
    model_type: str, fields: dict[str, Any], weights: dict[str, torch.Tensor], where: Path
) -> tuple[PreTrainedModel, dict[str, torch.Tensor]]:
    """A Hugging Face encoder of `model_type` with its weights; returns it and the tensors it did not use."""
    try:
        config: PretrainedConfig = AutoConfig.for_model(model_type, **fields)
    except ValueError:
        raise LirError(f"{where}: unknown backbone model type {model_type!r}") from None
    model = _instantiate(config)
    prefix = f"{model.base_model_prefix}."
    if any(key.startswith(prefix) for key in weights):
        weights = {key.removeprefix(prefix): value for key, value in weights.items()}
    own = model.state_dict()
    backbone = {k: v for k, v in weights.items() if k in own}
    rest = {k: v for k, v in weights.items() if k not in own and not k.startswith(IGNORED_KEYS)}
    missing = [k for k in own if k not in backbone and not k.startswith(IGNORED_KEYS)]
    if missing:
        raise LirError(
            f"{where}: the weights lack {len(missing)} of the backbone's tensors (first: {missing[0]}); "
            f"not a {model_type} checkpoint?"
        )
    try:
        model.load_state_dict(backbone, strict=False)
    except RuntimeError as exc:
        raise LirError(f"{where}: weights do not fit the config ({str(exc).splitlines()[-1].strip()})") from None
    return model.float(), rest


def _instantiate(config: PretrainedConfig) -> PreTrainedModel:
    model_class = AutoModel._model_mapping[type(config)]
    kwargs = {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}
    return model_class(config, **kwargs)


def load_tokenizer(path: Path, markers: tuple[str, ...] = ()) -> Tokenizer:
    """The checkpoint's tokenizer as a `tokenizers.Tokenizer` (tokenizer.json, else converted once)."""
    file = path / "tokenizer.json"
    if file.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise LirError(f"{file} cannot be read ({str(exc).splitlines()[0]})") from None
    else:
        tokenizer = _convert_tokenizer(path)
    add_markers(tokenizer, markers)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def add_markers(tokenizer: Tokenizer, markers: tuple[str, ...]) -> None:
    """Add the `markers` the tokenizer lacks as special tokens (in place)."""
    missing = [m for m in markers if tokenizer.token_to_id(m) is None]
    if missing:
        tokenizer.add_special_tokens(missing)


def _convert_tokenizer(path: Path) -> Tokenizer:
    import transformers

    settings = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    name = settings.get("backbone_tokenizer_class") or settings.get("tokenizer_class") or "AutoTokenizer"
    name = name if name == "AutoTokenizer" or name.endswith("Fast") else f"{name}Fast"
    tokenizer_class = getattr(transformers, name, None)
    if tokenizer_class is None:
        raise LirError(f"{path}: tokenizer class {name!r} is not a transformers fast tokenizer")
    try:
        return tokenizer_class.from_pretrained(str(path)).backend_tokenizer
    except (OSError, ValueError) as exc:
        raise LirError(f"{path}: no usable tokenizer files ({str(exc).splitlines()[0]})") from None


def pad_token_id(tokenizer: Tokenizer, fields: dict[str, Any]) -> int:
    """The padding id: the config's, else the tokenizer's [PAD]/<pad>, else 0."""
    if isinstance(fields.get("pad_token_id"), int):
        return fields["pad_token_id"]
    for token in ("[PAD]", "<pad>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    return 0


def take_linear(weights: dict[str, torch.Tensor], prefix: str, where: Path) -> nn.Linear:
    weight = weights.pop(f"{prefix}.weight", None)
    if weight is None:
        raise LirError(f"{where}: the weights lack {prefix}.weight")
    bias = weights.pop(f"{prefix}.bias", None)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def refuse_leftovers(rest: dict[str, torch.Tensor], where: Path) -> None:
    if rest:
        names = ", ".join(sorted(rest)[:3])
        raise LirError(f"{where}: {len(rest)} tensors in the weights belong to nothing lir knows ({names})")


@dataclass
class TextConfig:
    """The text settings every bi-encoder family's config shares (what `lightning_ir_text` reads from a Lightning
    IR config and `saving.text_layout` writes): the similarity, the query and doc lengths (special and marker
    tokens counted) and the [QUE]/[DOC] markers, inserted after the first token."""

    similarity: str = "dot"
    query_length: int = 32
    doc_length: int = 512
    query_marker: str | None = None
    doc_marker: str | None = None

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids: cut to the role's length, its marker after the first token."""
        if check_role(role) == "query":
            return TextRules(self.query_length, marker=self.query_marker)
        return TextRules(self.doc_length, marker=self.doc_marker)


def lightning_ir_text(config: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The text settings of a Lightning IR bi-encoder config: query and doc lengths (default 32 and 512, cut to
    the backbone's position limit `fields`), the [QUE]/[DOC] markers and the similarity (default dot)."""
    markers = MARKERS if config.get("add_marker_tokens") else (None, None)
    return {
        "query_length": capped_length(fields, config.get("query_length", 32)),
        "doc_length": capped_length(fields, config.get("doc_length", 512)),
        "query_marker": markers[0],
        "doc_marker": markers[1],
        "similarity": config.get("similarity_function") or "dot",
    }


def capped_length(fields: dict[str, Any], wanted: int | None) -> int:
    limit = int(fields.get("max_position_embeddings", 512))
    if fields.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # position ids start after the padding index
    return min(wanted, limit) if wanted else limit


def take_tensor(weights: dict[str, torch.Tensor], name: str, where: Path) -> torch.Tensor:
    tensor = weights.pop(name, None)
    if tensor is None:
        raise LirError(f"{where}: the weights lack {name}")
    return tensor


def token_projection(rest: dict[str, torch.Tensor], config: dict[str, Any], where: Path) -> nn.Linear | None:
    """A Lightning IR multi-vector config's `projection` (linear, linear_no_bias; None: no projection) taken
    from the weights; its size decides the dimension (0.0.6 never saves `embedding_dim`; a saved one must agree)."""
    projection = None
    if "projection.weight" in rest or config.get("projection", "linear") is not None:
        projection = take_linear(rest, "projection", where)
    dim = config.get("embedding_dim")
    if projection is not None and dim is not None and dim != projection.out_features:
        raise LirError(f"{where}: embedding_dim {dim} but projection.weight gives {projection.out_features}")
    return projection
