"""Multi-vector (ColBERT-style) bi-encoder: backbone → projection → optional L2 → late interaction.

A text becomes one vector per token. Queries may be padded with an expansion token (`[MASK]`) to their
full length; those tokens are always scored, attended by the others or not. A scoring mask drops
padding and the configured tokens (ColBERT masks punctuation in documents). A query scores a document
by the best dot product of each query token over the document's tokens, summed or averaged.

The family in one place: `MultiVectorConfig`, `MultiVectorModel` (writes Lightning IR's `col` layout), the
layouts it reads (Lightning IR `col`: [MASK] expansion, scoring masks, aggregations; colbert-ir's
`HF_ColBERT`) and a new model (`NEW_COL`). MVR builds on it in `lir.train.mvr`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel

from lir.coil import check_aggregations
from lir.errors import LirError
from lir.files import read_json
from lir.manifest import ROLES, TextRules, check_role
from lir.train.checkpoint_io import (
    LIR_CONFIG_KEYS,
    MARKERS,
    LoadedBiEncoder,
    TextConfig,
    build_backbone,
    capped_length,
    lightning_ir_text,
    load_tokenizer,
    located,
    pad_token_id,
    read_weights,
    refuse_leftovers,
    take_linear,
    token_projection,
)
from lir.train.saving import (
    BI_ENCODER_DEFAULTS,
    NewModel,
    Settings,
    Tensors,
    new_projection,
    projection_layout,
    text_layout,
)

SIMILARITIES = ("dot", "cosine")


@dataclass
class LateInteractionConfig(TextConfig):
    """What every late-interaction family (multi-vector, MVR, COIL) shares beside the text settings: the tokens
    never scored and the aggregation over query tokens (sum, mean, max) of each query token's aggregation over
    document tokens (max, sum, mean)."""

    aggregation: str = "sum"
    doc_aggregation: str = "max"
    query_unscored_ids: list[int] = field(default_factory=list)
    doc_unscored_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise LirError(f"unknown similarity {self.similarity!r} (known: {', '.join(SIMILARITIES)})")
        check_aggregations(self.aggregation, self.doc_aggregation)


@dataclass
class MultiVectorConfig(LateInteractionConfig):
    """Late-interaction settings of a multi-vector model, its optional L2 normalization of the token vectors
    and the expansion of either role with a token (Lightning IR's `[MASK]`) up to its full length."""

    normalize: bool = False
    query_expansion_token: str | None = None
    query_expansion_id: int | None = None
    attend_to_query_expansion: bool = True
    doc_expansion_token: str | None = None
    doc_expansion_id: int | None = None
    attend_to_doc_expansion: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for role in ROLES:
            token, token_id, _ = self.expansion(role)
            if (token is None) != (token_id is None):
                raise LirError(f"{role} expansion needs both its token and its id")

    def expansion(self, role: str) -> tuple[str | None, int | None, bool]:
        """The expansion token of `role`, its id and whether the other tokens attend to it."""
        if check_role(role) == "query":
            return self.query_expansion_token, self.query_expansion_id, self.attend_to_query_expansion
        return self.doc_expansion_token, self.doc_expansion_id, self.attend_to_doc_expansion

    def rules(self, role: str) -> TextRules:
        """How texts of `role` become token ids, expanded when the role is."""
        token, _, attend = self.expansion(role)
        return replace(super().rules(role), expansion_token=token, attend_expansion=attend or token is None)


def aggregate(scores: torch.Tensor, mask: torch.Tensor, how: str, dim: int) -> torch.Tensor:
    """Lightning IR's aggregation of `scores` over `dim` where `mask` (broadcast) holds: max, sum or mean
    (over at least one). An all-masked max gives -inf."""
    if how == "max":
        return scores.masked_fill(~mask, float("-inf")).amax(dim=dim)
    total = scores.masked_fill(~mask, 0.0).sum(dim=dim)
    if how == "mean":
        total = total / mask.sum(dim=dim).clamp(min=1).to(total.dtype)
    return total


class MultiVectorModel(nn.Module):
    """Encodes token ids into scored token vectors; `score` is the late interaction."""

    family = "multi-vector"

    def __init__(self, backbone: PreTrainedModel, config: MultiVectorConfig, projection: nn.Linear | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.projection = projection
        self.register_buffer("query_unscored", torch.tensor(config.query_unscored_ids, dtype=torch.long))
        self.register_buffer("doc_unscored", torch.tensor(config.doc_unscored_ids, dtype=torch.long))

    @property
    def embedding_dim(self) -> int:
        if self.projection is not None:
            return self.projection.out_features
        return int(self.backbone.config.hidden_size)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] ids and attention mask → [B, L, D] token vectors and the [B, L] bool scoring mask."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = self.projection(hidden) if self.projection is not None else hidden
        if self.config.normalize:
            vectors = nn.functional.normalize(vectors, p=2, dim=-1)
        return vectors, self.scoring_mask(input_ids, attention_mask, role)

    def scoring_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """Which tokens score: attended or expansion tokens, minus the role's unscored ids."""
        mask = attention_mask.bool()
        _, expansion_id, _ = self.config.expansion(role)
        if expansion_id is not None:
            mask = mask | (input_ids == expansion_id)
        unscored = self.query_unscored if role == "query" else self.doc_unscored
        if unscored.numel():
            mask = mask & ~(input_ids.unsqueeze(-1) == unscored).any(-1)
        return mask

    def pair_scores(
        self, query: torch.Tensor, query_mask: torch.Tensor, doc: torch.Tensor, doc_mask: torch.Tensor
    ) -> torch.Tensor:
        """Late interaction of aligned pairs: [B, Lq, D], [B, Lq], [B, Ld, D], [B, Ld] → [B] scores. A
        document without scored tokens scores 0 per query token, a query without scored tokens 0."""
        if self.config.similarity == "cosine":
            query = nn.functional.normalize(query, p=2, dim=-1)
            doc = nn.functional.normalize(doc, p=2, dim=-1)
        sims = query @ doc.transpose(1, 2)  # [B, Lq, Ld]
        per_token = aggregate(sims, doc_mask.unsqueeze(1), self.config.doc_aggregation, -1)  # [B, Lq]
        per_token = torch.where(torch.isinf(per_token), torch.zeros_like(per_token), per_token)
        scores = aggregate(per_token, query_mask, self.config.aggregation, -1)
        return torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)

    def similarity(
        self, query: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor, docs_mask: torch.Tensor
    ) -> torch.Tensor:
        """[Q, Lq, D] queries against [N, Ld, D] documents → [Q, N] scores."""
        rows = []
        for q, qm in zip(query, query_mask, strict=True):
            n = len(docs)
            rows.append(self.pair_scores(q.expand(n, -1, -1), qm.expand(n, -1), docs, docs_mask))
        return torch.stack(rows) if rows else torch.empty(0, len(docs))

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's config keys and head tensors of this model (what `save_lightning_ir` writes)."""
        config = self.config
        expanded = {}
        for role in ROLES:
            token, _, attend = config.expansion(role)
            if token is not None and token != expansion_token(tokenizer, Path("the tokenizer")):
                raise LirError(f"{role} expansion with {token!r}: Lightning IR expands with the mask token")
            expanded |= {f"{role}_expansion": token is not None, f"attend_to_{role}_expanded_tokens": attend}
        projection, head = projection_layout(self.projection)
        settings = {
            "model_type": "col",
            **text_layout(config),
            "normalization_strategy": "l2" if config.normalize else None,
            "query_aggregation_function": config.aggregation,
            "doc_aggregation_function": config.doc_aggregation,
            **expanded,
            "query_mask_scoring_tokens": _mask_tokens(config.query_unscored_ids, tokenizer),
            "doc_mask_scoring_tokens": _mask_tokens(config.doc_unscored_ids, tokenizer),
            "projection": projection,
            "embedding_dim": self.embedding_dim,
        }
        return settings, head


def _mask_tokens(ids: list[int], tokenizer: Tokenizer) -> str | list[str] | None:
    """The scoring-mask setting that gives back `ids`: None, "punctuation" or the list of tokens."""
    if not ids:
        return None
    if sorted(ids) == unscored_ids("punctuation", tokenizer):
        return "punctuation"
    tokens = [tokenizer.id_to_token(i) for i in ids]
    if None in tokens or unscored_ids(tokens, tokenizer) != sorted(ids):
        raise LirError(f"unscored token ids {ids[:5]} cannot be written as tokens that encode back to them")
    return tokens


NEW_COL = NewModel(
    BI_ENCODER_DEFAULTS
    | {
        "model_type": "col",
        "embedding_dim": 128,
        "projection": "linear",
        "normalization_strategy": None,
        "query_mask_scoring_tokens": None,
        "doc_mask_scoring_tokens": None,
        "query_aggregation_function": "sum",
        "doc_aggregation_function": "max",
        "query_expansion": False,
        "attend_to_query_expanded_tokens": False,
        "doc_expansion": False,
        "attend_to_doc_expanded_tokens": False,
    },
    new_projection,
)
"""A new multi-vector model (`col`) with Lightning IR 0.0.6's ColConfig defaults (webis/colbert's settings are
`projection: linear_no_bias`, `query_expansion: true`, `doc_mask_scoring_tokens: punctuation`, see
train/configs/multi-vector.yaml). Lightning IR 0.0.6 reloads only 128 as `embedding_dim`; lir reads any size."""


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
    normalization = config.get("normalization_strategy")
    if normalization not in (None, "l2"):
        raise LirError(f"{path}: normalization {normalization!r} is not supported (l2 or none)")
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = token_projection(rest, config, path)
    refuse_leftovers(rest, path)
    markers = MARKERS if config.get("add_marker_tokens") else ()
    tokenizer = load_tokenizer(path, markers)
    masks = {"query": config.get("query_mask_scoring_tokens"), "doc": config.get("doc_mask_scoring_tokens")}
    if (path / MASK_SIDE_FILE).is_file():
        masks |= read_json(path / MASK_SIDE_FILE)
    expansions = {}
    for role in ROLES:
        token = expansion_token(tokenizer, path) if config.get(f"{role}_expansion") else None
        expansions |= {
            f"{role}_expansion_token": token,
            f"{role}_expansion_id": tokenizer.token_to_id(token) if token else None,
            f"attend_to_{role}_expansion": bool(config.get(f"attend_to_{role}_expanded_tokens", False)),
        }
    with located(path):
        settings = MultiVectorConfig(
            normalize=normalization == "l2" or config.get("normalize") is True,
            aggregation=config.get("query_aggregation_function") or "sum",
            doc_aggregation=config.get("doc_aggregation_function") or "max",
            **lightning_ir_text(config, fields),
            **expansions,
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
    projection = take_linear(rest, "linear", path)
    refuse_leftovers(rest, path)
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
            query_length=capped_length(fields, int(settings_in["query_maxlen"])),
            doc_length=capped_length(fields, int(settings_in["doc_maxlen"])),
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
    """The tokenizer's mask token, which pads expanded queries (and documents)."""
    for token in EXPANSION_TOKENS:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise LirError(f"{where}: expansion needs a mask token ({' or '.join(EXPANSION_TOKENS)}) in the vocabulary")


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
