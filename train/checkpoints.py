"""Which family module loads a checkpoint: the checkpoint's files say it, each family's module reads its layouts.

- `single_vector`: Lightning IR `lir-dpr` (old `bi-encoder` too), sentence-transformers directories
  (`modules.json`), other plain Hugging Face encoders (Lightning IR's defaults: mean pooling, dot product);
- `multi_vector`: Lightning IR `col`, colbert-ir checkpoints (`HF_ColBERT`, `artifact.metadata`); `mvr`: `mvr`;
- `sparse`: Lightning IR `splade`, Hugging Face `*ForMaskedLM` (naver/splade-v3); `unicoil`: `unicoil`;
- `coil`: Lightning IR `coil`;
- `cross_encoder`: Lightning IR `mono`/`set-encoder`/`cross-encoder`, `*ForSequenceClassification`;
  `t5_cross_encoder`: `T5ForConditionalGeneration` and Lightning IR `mono` on T5.
`load_model` takes a checkpoint of either kind. Shared reading (weights, backbone, tokenizer) is
`checkpoint_io`; writing Lightning IR's layout is each model's `lightning_ir_layout` (`saving`).

Weights are read from safetensors only (no pickle). Tokenizers come back as `tokenizers.Tokenizer`, the
object the torch-free core tokenizes with, so training, export and serving share one set of rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lir.errors import LirError
from lir.files import read_json
from lir.train import coil, multi_vector, mvr, sparse, unicoil
from lir.train.checkpoint_io import LoadedBiEncoder, lightning_ir_pooling
from lir.train.cross_encoder import CROSS_ENCODER_TYPES, LoadedCrossEncoder, load_cross_encoder
from lir.train.hub import resolve_model_path
from lir.train.single_vector import load_huggingface, load_lightning_ir_dpr, load_sentence_transformers

SINGLE_VECTOR_TYPES = ("lir-dpr", "bi-encoder", "single-vector-bi-encoder")
MULTI_VECTOR_TYPES = ("col", "mvr", "multi-vector-bi-encoder")
SPARSE_TYPES = ("splade", "unicoil")
COIL_TYPES = ("coil",)


def load_bi_encoder(spec: str, revision: str | None = None) -> LoadedBiEncoder:
    """Load a bi-encoder of any family from a directory or a hub id (at `revision`), in eval mode.

    The family comes from the files: Lightning IR checkpoints name it by `model_type` (old `bi-encoder`
    saves by an `mlm` projection or by having no pooling); colbert-ir checkpoints say `HF_ColBERT` or carry
    `artifact.metadata`. A plain Hugging Face checkpoint whose architectures name a `*ForMaskedLM` class is
    taken as SPLADE (naver/splade-v3), any other as a mean-pooling single-vector encoder: so a raw masked
    LM such as bert-base-uncased loads as an (untrained) SPLADE model, not as a dense encoder.
    """
    path = resolve_model_path(spec, revision)
    kind = cross_encoder_kind(path)
    if kind is not None:
        raise LirError(
            f"{spec} is a cross-encoder ({kind}), not a bi-encoder: load it with load_model or load_cross_encoder"
        )
    if (path / "modules.json").is_file():
        loaded = load_sentence_transformers(path, spec)
    else:
        config = read_json(path / "config.json")
        architectures = config.get("architectures") or []
        if "backbone_model_type" in config:
            loader = {
                "single-vector": load_lightning_ir_dpr,
                "multi-vector": multi_vector.load_lightning_ir_col,
                "sparse": sparse.load_lightning_ir_splade,
                "coil": coil.load_lightning_ir_coil,
            }[lightning_ir_family(config, path)]
            loader = {"mvr": mvr.load_lightning_ir_mvr, "unicoil": unicoil.load_lightning_ir_unicoil}.get(
                config.get("model_type"), loader
            )
            loaded = loader(path, config, spec)
        elif "HF_ColBERT" in architectures or (path / "artifact.metadata").is_file():
            loaded = multi_vector.load_colbert_ir(path, config, spec)
        elif any(name.endswith("ForMaskedLM") for name in architectures):
            loaded = sparse.load_masked_lm(path, config, spec)
        elif "model_type" in config:
            loaded = load_huggingface(path, config, spec)
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
    """The lir family of a Lightning IR config: single-vector, multi-vector, sparse or coil."""
    model_type = config.get("model_type")
    if model_type in SPARSE_TYPES or config.get("projection") == "mlm":
        return "sparse"
    if model_type in MULTI_VECTOR_TYPES:
        return "multi-vector"
    if model_type in SINGLE_VECTOR_TYPES:
        says_pooling = any(k in config for k in ("pooling_strategy", "query_pooling_strategy", "doc_pooling_strategy"))
        no_pooling = model_type != "lir-dpr" and says_pooling and lightning_ir_pooling(config, where) is None
        return "multi-vector" if no_pooling else "single-vector"
    if model_type in COIL_TYPES:
        return "coil"
    raise LirError(f"{where}: unknown Lightning IR model type {model_type!r}")
