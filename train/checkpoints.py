"""Load bi-encoders of every family from the checkpoint layouts users have.

- sentence-transformers directories (`modules.json`: Transformer → Pooling → Dense* → Normalize);
- Lightning IR checkpoints (`config.json` with `backbone_model_type`; old key names too): single-vector
  here, `col` in `colbert_loaders`, `mvr` in `mvr`, `splade` in `splade_loaders`, `unicoil` in `unicoil`;
- colbert-ir checkpoints (`HF_ColBERT`, `artifact.metadata`) in `colbert_loaders`;
- Hugging Face `*ForMaskedLM` checkpoints (naver/splade-v3) in `splade_loaders`;
- other plain Hugging Face encoders (Lightning IR's single-vector defaults: mean pooling, dot product).

Cross-encoders (Lightning IR `mono`/`set-encoder`/`cross-encoder`, Hugging Face `*ForSequenceClassification`,
`T5ForConditionalGeneration`) load through `cross_loaders`; `load_model` takes a checkpoint of either kind.

Weights are read from safetensors only (no pickle). Tokenizers come back as `tokenizers.Tokenizer`, the
object the torch-free core tokenizes with, so training, export and serving share one set of rules.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from lir.errors import LirError
from lir.files import read_json
from lir.train.bi_encoder import BiEncoderModel, SingleVectorConfig
from lir.train.cross_encoder import LoadedCrossEncoder
from lir.train.hub import resolve_model_path
from lir.train.multi_vector import MultiVectorModel
from lir.train.sparse import SparseModel

SINGLE_VECTOR_TYPES = ("lir-dpr", "bi-encoder", "single-vector-bi-encoder")
MULTI_VECTOR_TYPES = ("col", "mvr", "multi-vector-bi-encoder")
SPARSE_TYPES = ("splade", "unicoil")
LATER_TYPES = ("coil",)
CROSS_ENCODER_TYPES = ("mono", "set-encoder", "cross-encoder")
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

    model: BiEncoderModel | MultiVectorModel | SparseModel
    tokenizer: Tokenizer
    pad_token_id: int
    source: str
    source_format: str
    backbone_type: str


def load_bi_encoder(spec: str, revision: str | None = None) -> LoadedBiEncoder:
    """Load a bi-encoder of any family from a directory or a hub id (at `revision`), in eval mode.

    The family comes from the files: Lightning IR checkpoints name it by `model_type` (old `bi-encoder`
    saves by an `mlm` projection or by having no pooling); colbert-ir checkpoints say `HF_ColBERT` or carry
    `artifact.metadata`. A plain Hugging Face checkpoint whose architectures name a `*ForMaskedLM` class is
    taken as SPLADE (naver/splade-v3), any other as a mean-pooling single-vector encoder: so a raw masked
    LM such as bert-base-uncased loads as an (untrained) SPLADE model, not as a dense encoder.
    """
    from lir.train import colbert_loaders, mvr, splade_loaders, unicoil  # they import this module's helpers

    path = resolve_model_path(spec, revision)
    kind = cross_encoder_kind(path)
    if kind is not None:
        raise LirError(
            f"{spec} is a cross-encoder ({kind}), not a bi-encoder: load it with load_model or load_cross_encoder"
        )
    if (path / "modules.json").is_file():
        loaded = _load_sentence_transformers(path, spec)
    else:
        config = read_json(path / "config.json")
        architectures = config.get("architectures") or []
        if "backbone_model_type" in config:
            loader = {
                "single-vector": _load_lightning_ir,
                "multi-vector": colbert_loaders.load_lightning_ir_col,
                "sparse": splade_loaders.load_lightning_ir_splade,
            }[lightning_ir_family(config, path)]
            loader = {"mvr": mvr.load_lightning_ir_mvr, "unicoil": unicoil.load_lightning_ir_unicoil}.get(
                config.get("model_type"), loader
            )
            loaded = loader(path, config, spec)
        elif "HF_ColBERT" in architectures or (path / "artifact.metadata").is_file():
            loaded = colbert_loaders.load_colbert_ir(path, config, spec)
        elif any(name.endswith("ForMaskedLM") for name in architectures):
            loaded = splade_loaders.load_masked_lm(path, config, spec)
        elif "model_type" in config:
            loaded = _load_huggingface(path, config, spec)
        else:
            raise LirError(f"{path}/config.json has no model_type: not a checkpoint lir knows")
    loaded.model.eval()
    return loaded


def load_model(
    spec: str, t5_scoring: str | None = None, revision: str | None = None
) -> LoadedBiEncoder | LoadedCrossEncoder:
    """Load a bi-encoder of any family or a cross-encoder, whichever the checkpoint's files say it is.
    `t5_scoring` ('mono' or 'rank') picks how a T5ForConditionalGeneration scores (see `load_cross_encoder`);
    `revision` pins a hub id's branch, tag or commit (see `lir.train.hub.resolve_model_path`)."""
    from lir.train.cross_loaders import load_cross_encoder  # it imports this module's helpers

    if is_cross_encoder_checkpoint(spec, revision):
        return load_cross_encoder(spec, t5_scoring, revision)
    return load_bi_encoder(spec, revision)


def is_cross_encoder_checkpoint(spec: str | Path, revision: str | None = None) -> bool:
    """Whether a checkpoint (directory or hub id) holds a cross-encoder."""
    return cross_encoder_kind(resolve_model_path(str(spec), revision)) is not None


def cross_encoder_kind(path: Path) -> str | None:
    """What kind of cross-encoder `path/config.json` describes (e.g. "Lightning IR mono",
    "BertForSequenceClassification"), or None for a bi-encoder or a folder without config.json."""
    if not (path / "config.json").is_file():
        return None
    config = read_json(path / "config.json")
    if "backbone_model_type" in config:
        model_type = config.get("model_type")
        return f"Lightning IR {model_type}" if model_type in CROSS_ENCODER_TYPES else None
    for name in config.get("architectures") or []:
        if isinstance(name, str) and (
            name.endswith("ForSequenceClassification") or name == "T5ForConditionalGeneration"
        ):
            return name
    return None


def lightning_ir_family(config: dict[str, Any], where: Path) -> str:
    """The lir family of a Lightning IR config: single-vector, multi-vector or sparse."""
    model_type = config.get("model_type")
    if model_type in SPARSE_TYPES or config.get("projection") == "mlm":
        return "sparse"
    if model_type in MULTI_VECTOR_TYPES:
        return "multi-vector"
    if model_type in SINGLE_VECTOR_TYPES:
        says_pooling = any(k in config for k in ("pooling_strategy", "query_pooling_strategy", "doc_pooling_strategy"))
        no_pooling = model_type != "lir-dpr" and says_pooling and lightning_ir_pooling(config, where) is None
        return "multi-vector" if no_pooling else "single-vector"
    if model_type in LATER_TYPES:
        raise LirError(
            f"{where}: Lightning IR model type {model_type!r} (COIL-style token matching) is not supported yet"
        )
    raise LirError(f"{where}: unknown Lightning IR model type {model_type!r}")


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
    missing = [m for m in markers if tokenizer.token_to_id(m) is None]
    if missing:
        tokenizer.add_special_tokens(missing)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


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


def _linear(weights: dict[str, torch.Tensor], prefix: str, where: Path) -> nn.Linear:
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


def _refuse_leftovers(rest: dict[str, torch.Tensor], where: Path) -> None:
    if rest:
        names = ", ".join(sorted(rest)[:3])
        raise LirError(f"{where}: {len(rest)} tensors in the weights belong to nothing lir knows ({names})")


def lightning_ir_text(config: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The text settings of a Lightning IR bi-encoder config: query and doc lengths (default 32 and 512, cut to
    the backbone's position limit `fields`), the [QUE]/[DOC] markers and the similarity (default dot)."""
    markers = MARKERS if config.get("add_marker_tokens") else (None, None)
    return {
        "query_length": _max_length(fields, config.get("query_length", 32)),
        "doc_length": _max_length(fields, config.get("doc_length", 512)),
        "query_marker": markers[0],
        "doc_marker": markers[1],
        "similarity": config.get("similarity_function") or "dot",
    }


def _max_length(fields: dict[str, Any], wanted: int | None) -> int:
    limit = int(fields.get("max_position_embeddings", 512))
    if fields.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # position ids start after the padding index
    return min(wanted, limit) if wanted else limit


def _load_lightning_ir(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    model_type = config["model_type"]
    pooling = lightning_ir_pooling(config, path)
    if config.get("sparsification_strategy") or config.get("sparsification"):
        raise LirError(f"{path}: sparsified single-vector models are not supported yet")
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = None
    if "projection.weight" in rest:
        projection = _linear(rest, "projection", path)
    elif model_type == "lir-dpr" and config.get("projection", "linear") is not None:
        raise LirError(f"{path}: the config asks for a projection but the weights lack projection.weight")
    _refuse_leftovers(rest, path)
    markers = MARKERS if config.get("add_marker_tokens") else ()
    settings = SingleVectorConfig(
        pooling=pooling or ("first" if model_type == "lir-dpr" else "mean"),
        normalize=_dpr_normalize(config),
        **lightning_ir_text(config, fields),
    )
    tokenizer = load_tokenizer(path, markers)
    model = BiEncoderModel(backbone, settings, projection)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)


def _dpr_normalize(config: dict[str, Any]) -> bool:
    """Whether a single-vector Lightning IR model L2-normalizes: `normalize` decides when the config has it
    (0.0.6 writes it and ignores `normalization_strategy` for lir-dpr), else `normalization_strategy` (older
    saves)."""
    if "normalize" in config:
        return config["normalize"] is True
    return config.get("normalization_strategy") == "l2"


def _load_huggingface(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    fields = {k: v for k, v in config.items() if k != "architectures"}
    backbone_type = fields.pop("model_type")
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    rest = {k: v for k, v in rest.items() if not k.startswith(("cls.", "lm_head.", "classifier."))}
    _refuse_leftovers(rest, path)
    settings = SingleVectorConfig(
        pooling="mean", similarity="dot", query_length=32, doc_length=_max_length(fields, 512)
    )
    tokenizer = load_tokenizer(path)
    model = BiEncoderModel(backbone, settings)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "huggingface", backbone_type)


ST_POOLING = {"pooling_mode_cls_token": "first", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}
ST_ACTIVATIONS = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh"}


def _load_sentence_transformers(path: Path, spec: str) -> LoadedBiEncoder:
    modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or "Pooling" not in kinds:
        raise LirError(f"{path}/modules.json: expected Transformer → Pooling → Dense* → Normalize, got {kinds}")
    unknown = sorted(set(kinds) - {"Transformer", "Pooling", "Dense", "Normalize"})
    if unknown:
        raise LirError(f"{path}/modules.json: module types {unknown} are not supported")
    folders = [path / m.get("path", "") for m in modules]
    transformer = folders[0]
    fields = read_json(transformer / "config.json")
    fields.pop("architectures", None)
    backbone_type = fields.pop("model_type", None)
    if not backbone_type:
        raise LirError(f"{transformer}/config.json has no model_type")
    backbone, rest = build_backbone(backbone_type, fields, read_weights(transformer), transformer)
    _refuse_leftovers(rest, transformer)
    pooling_config = read_json(folders[kinds.index("Pooling")] / "config.json")
    modes = [ST_POOLING.get(k, k) for k, v in pooling_config.items() if k.startswith("pooling_mode") and v]
    if len(modes) != 1 or modes[0] not in ST_POOLING.values():
        raise LirError(f"{path}: pooling {modes} is not supported (one of cls, mean or max)")
    projection, activation = None, "identity"
    dense = [folder for folder, kind in zip(folders, kinds, strict=True) if kind == "Dense"]
    if len(dense) > 1:
        raise LirError(f"{path}: more than one Dense module is not supported")
    if dense:
        dense_config = read_json(dense[0] / "config.json")
        activation = ST_ACTIVATIONS.get(dense_config.get("activation_function", ""), "")
        if not activation:
            raise LirError(f"{dense[0]}: activation {dense_config.get('activation_function')!r} is not supported")
        dense_weights = read_weights(dense[0])
        projection = _linear(dense_weights, "linear", dense[0])
        _refuse_leftovers(dense_weights, dense[0])
    st_config = (
        read_json(transformer / "sentence_bert_config.json")
        if (transformer / "sentence_bert_config.json").is_file()
        else {}
    )
    options = (
        read_json(path / "config_sentence_transformers.json")
        if (path / "config_sentence_transformers.json").is_file()
        else {}
    )
    prompts = options.get("prompts") or {}
    max_length = _max_length(fields, st_config.get("max_seq_length"))
    similarity = options.get("similarity_fn_name") or "cosine"
    if similarity not in ("cosine", "dot"):
        raise LirError(f"{path}: similarity {similarity!r} is not supported (cosine, dot)")
    settings = SingleVectorConfig(
        pooling=modes[0],
        similarity=similarity,
        normalize="Normalize" in kinds,
        query_length=max_length,
        doc_length=max_length,
        query_prefix=prompts.get("query", ""),
        doc_prefix=prompts.get("document", prompts.get("passage", "")),
    )
    tokenizer = load_tokenizer(transformer)
    model = BiEncoderModel(backbone, settings, projection, activation)
    return LoadedBiEncoder(
        model, tokenizer, pad_token_id(tokenizer, fields), spec, "sentence-transformers", backbone_type
    )
