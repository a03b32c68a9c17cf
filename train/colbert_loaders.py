"""Load multi-vector (ColBERT) bi-encoders: Lightning IR `col` checkpoints and colbert-ir's own layout.

Lightning IR: backbone weights without prefix, `projection.weight` [dim, H] (bias optional), the
settings in `config.json` (older saves: `normalize`, and the scoring masks in `mask_scoring_tokens.json`).
colbert-ir (colbert-ir/colbertv2.0): a BERT config, `bert.*` + `linear.weight`, the settings in
`artifact.metadata`; markers `[unused0]`/`[unused1]`, unattended `[MASK]` query expansion, L2-normalized
vectors, summed maxima, punctuation not scored in documents.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from lir.errors import LirError
from lir.files import read_json
from lir.train.checkpoints import (
    LIR_CONFIG_KEYS,
    MARKERS,
    LoadedBiEncoder,
    _linear,
    _max_length,
    _refuse_leftovers,
    build_backbone,
    lightning_ir_text,
    load_tokenizer,
    located,
    pad_token_id,
    read_weights,
)
from lir.train.multi_vector import MultiVectorConfig, MultiVectorModel

MASK_SIDE_FILE = "mask_scoring_tokens.json"
EXPANSION_TOKENS = ("[MASK]", "<mask>")
COLBERT_DEFAULTS: dict[str, Any] = {
    "query_maxlen": 32,
    "doc_maxlen": 180,
    "similarity": "cosine",
    "attend_to_mask_tokens": False,
    "mask_punctuation": True,
    "query_token_id": "[unused0]",
    "doc_token_id": "[unused1]",
    "interaction": "colbert",
}
"""ColBERTv2's settings, for whatever `artifact.metadata` leaves out (or when it is absent)."""


def load_lightning_ir_col(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A Lightning IR `col` (or older multi-vector) checkpoint; unset fields take Lightning IR's defaults."""
    if config.get("doc_expansion"):
        raise LirError(f"{path}: doc_expansion (document [MASK] expansion) is not supported (query expansion only)")
    doc_aggregation = config.get("doc_aggregation_function", "max")
    if doc_aggregation != "max":
        raise LirError(f"{path}: doc_aggregation_function {doc_aggregation!r} is not supported (max only)")
    normalization = config.get("normalization_strategy")
    if normalization not in (None, "l2"):
        raise LirError(f"{path}: normalization {normalization!r} is not supported (l2 or none)")
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = None
    if "projection.weight" in rest or config.get("projection", "linear") is not None:
        projection = _linear(rest, "projection", path)
    _refuse_leftovers(rest, path)
    dim = config.get("embedding_dim")
    if projection is not None and dim is not None and dim != projection.out_features:
        raise LirError(f"{path}: embedding_dim {dim} but projection.weight gives {projection.out_features}")
    markers = MARKERS if config.get("add_marker_tokens") else ()
    tokenizer = load_tokenizer(path, markers)
    masks = {"query": config.get("query_mask_scoring_tokens"), "doc": config.get("doc_mask_scoring_tokens")}
    if (path / MASK_SIDE_FILE).is_file():
        masks |= read_json(path / MASK_SIDE_FILE)
    expansion = expansion_token(tokenizer, path) if config.get("query_expansion") else None
    with located(path):
        settings = MultiVectorConfig(
            normalize=normalization == "l2" or config.get("normalize") is True,
            aggregation=config.get("query_aggregation_function") or "sum",
            **lightning_ir_text(config, fields),
            query_expansion_token=expansion,
            query_expansion_id=tokenizer.token_to_id(expansion) if expansion else None,
            attend_to_query_expansion=bool(config.get("attend_to_query_expanded_tokens", False)),
            query_unscored_ids=unscored_ids(masks.get("query"), tokenizer),
            doc_unscored_ids=unscored_ids(masks.get("doc"), tokenizer),
        )
    model = MultiVectorModel(backbone, settings, projection)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)


def load_colbert_ir(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A colbert-ir checkpoint: HF config + `linear.weight`, settings from `artifact.metadata` or ColBERTv2's."""
    metadata = read_json(path / "artifact.metadata") if (path / "artifact.metadata").is_file() else {}
    settings_in = COLBERT_DEFAULTS | {k: v for k, v in metadata.items() if v is not None}
    if settings_in["interaction"] != "colbert":
        raise LirError(f"{path}: ColBERT interaction {settings_in['interaction']!r} is not supported (colbert)")
    if settings_in["similarity"] != "cosine":
        raise LirError(f"{path}: ColBERT similarity {settings_in['similarity']!r} is not supported (cosine only)")
    fields = {k: v for k, v in config.items() if k != "architectures"}
    backbone_type = fields.pop("model_type", None)
    if not backbone_type:
        raise LirError(f"{path}/config.json has no model_type")
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = _linear(rest, "linear", path)
    _refuse_leftovers(rest, path)
    dim = settings_in.get("dim")
    if dim is not None and dim != projection.out_features:
        raise LirError(f"{path}: artifact.metadata says dim {dim} but linear.weight gives {projection.out_features}")
    tokenizer = load_tokenizer(path)
    markers = settings_in["query_token_id"], settings_in["doc_token_id"]
    for marker in markers:
        if tokenizer.token_to_id(marker) is None:
            raise LirError(f"{path}: ColBERT marker {marker!r} is not in the tokenizer's vocabulary")
    expansion = expansion_token(tokenizer, path)
    with located(path):
        settings = MultiVectorConfig(
            similarity="cosine",
            normalize=True,
            aggregation="sum",
            query_length=_max_length(fields, int(settings_in["query_maxlen"])),
            doc_length=_max_length(fields, int(settings_in["doc_maxlen"])),
            query_marker=markers[0],
            doc_marker=markers[1],
            query_expansion_token=expansion,
            query_expansion_id=tokenizer.token_to_id(expansion),
            attend_to_query_expansion=bool(settings_in["attend_to_mask_tokens"]),
            doc_unscored_ids=unscored_ids("punctuation" if settings_in["mask_punctuation"] else None, tokenizer),
        )
    model = MultiVectorModel(backbone, settings, projection)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "colbert", backbone_type)


def expansion_token(tokenizer: Tokenizer, where: Path) -> str:
    """The tokenizer's mask token, which pads expanded queries."""
    for token in EXPANSION_TOKENS:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise LirError(f"{where}: query expansion needs a mask token ({' or '.join(EXPANSION_TOKENS)}) in the vocabulary")


def unscored_ids(tokens: str | list[str] | None, tokenizer: Tokenizer) -> list[int]:
    """Token ids never scored: `"punctuation"` (each character of `string.punctuation` the tokenizer keeps
    as one token, ColBERT's skiplist) or a list of tokens (each must be one token); sorted, unique."""
    if tokens is None:
        return []
    if tokens == "punctuation":
        encoded = (tokenizer.encode(c, add_special_tokens=False).ids for c in string.punctuation)
        return sorted({ids[0] for ids in encoded if len(ids) == 1})
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise LirError(f"mask scoring tokens must be 'punctuation', a list of tokens or null, not {tokens!r}")
    ids = set()
    for token in tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False).ids
        if len(encoded) != 1:
            raise LirError(f"mask scoring token {token!r} is not a single token of the vocabulary")
        ids.add(encoded[0])
    return sorted(ids)
