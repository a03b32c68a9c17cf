"""Lightning IR `mvr` (multi-view document representation): one vector per query, n views per document.

Documents get n viewer tokens `[VIE0]`…`[VIE{n-1}]` right after their first token (`[CLS] [VIE0..n-1] text
[SEP]`; with markers `[CLS] [DOC] [VIE0..n-1] text [SEP]`), queries none. The query's vector is its first
token's, the document's views are the vectors at positions 1..n (with markers: `[DOC]` and the first n-1
viewer tokens, as Lightning IR 0.0.6 takes them); both projected and optionally L2-normalized. A query
scores a document by its best view (or, with doc aggregation sum / mean, the views' sum or mean): late
interaction over one query vector, so the multi-vector graphs, index and scorer serve MVR unchanged,
through the scoring masks.

Lightning IR's layout: backbone weights without prefix, `projection.weight` [dim, H] (bias optional, or
none: `projection` null), `num_viewer_tokens`; `embedding_dim` is never saved (the projection gives it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from lir.errors import LirError
from lir.manifest import TextRules, check_role
from lir.train.checkpoint_io import (
    LIR_CONFIG_KEYS,
    MARKERS,
    LoadedBiEncoder,
    build_backbone,
    lightning_ir_text,
    load_tokenizer,
    located,
    pad_token_id,
    read_weights,
    refuse_leftovers,
    token_projection,
)
from lir.train.multi_vector import MultiVectorConfig, MultiVectorModel
from lir.train.saving import Settings, Tensors, projection_layout, text_layout

MVR_KEYS = {"num_viewer_tokens"}
"""Lightning IR's mvr settings beyond the multi-vector ones (kept out of the backbone's config)."""


def viewer_tokens(count: int) -> list[str]:
    """The viewer tokens of `count` views: `[VIE0]`…`[VIE{count-1}]`."""
    return [f"[VIE{i}]" for i in range(count)]


@dataclass
class MvrConfig(MultiVectorConfig):
    """Multi-vector settings with `num_viewer_tokens` views per document; queries have one vector, so the
    aggregation over query tokens is that vector's score (`sum`)."""

    num_viewer_tokens: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_viewer_tokens < 1:
            raise LirError(f"num_viewer_tokens {self.num_viewer_tokens} must be at least 1")
        expanded = self.query_expansion_token is not None or self.doc_expansion_token is not None
        if expanded or self.query_unscored_ids or self.doc_unscored_ids:
            raise LirError("mvr scores fixed positions: it takes no query expansion or scoring-mask tokens")
        needed = 2 + len(self.rules("doc").markers)
        if self.doc_length < needed:
            raise LirError(f"doc_length {self.doc_length} leaves no room for the {needed} special and viewer tokens")

    def rules(self, role: str) -> TextRules:
        """The multi-vector rules; documents also get the viewer tokens after their marker."""
        rules = super().rules(role)
        if check_role(role) == "query":
            return rules
        return replace(rules, marker=[*rules.markers, *viewer_tokens(self.num_viewer_tokens)])


class MvrModel(MultiVectorModel):
    """A multi-vector model whose scoring masks are fixed positions: the query's first token, the
    document's positions 1..n."""

    config: MvrConfig

    def scoring_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """Position 0 of queries, positions 1..num_viewer_tokens of documents (padding never)."""
        position = torch.ones_like(input_ids).cumsum(dim=-1) - 1
        first, last = (0, 0) if role == "query" else (1, self.config.num_viewer_tokens)
        return (position >= first) & (position <= last) & attention_mask.bool()

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's config keys and head tensors of this model (what `save_lightning_ir` writes)."""
        config = self.config
        projection, head = projection_layout(self.projection)
        settings = {
            "model_type": "mvr",
            **text_layout(config),
            "num_viewer_tokens": config.num_viewer_tokens,
            "normalization_strategy": "l2" if config.normalize else None,
            "doc_aggregation_function": config.doc_aggregation,
            "projection": projection,
            "embedding_dim": self.embedding_dim,
        }
        return settings, head


def load_lightning_ir_mvr(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A Lightning IR `mvr` checkpoint; unset fields take Lightning IR's defaults (8 views, linear, dot, the
    best view: doc aggregation max; sum and mean score the views' sum or mean)."""
    views = _checked_views(path, config)
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS | MVR_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = token_projection(rest, config, path)
    refuse_leftovers(rest, path)
    markers = MARKERS if config.get("add_marker_tokens") else ()
    with located(path):
        settings = MvrConfig(
            normalize=config.get("normalization_strategy") == "l2",
            aggregation="sum",
            doc_aggregation=config.get("doc_aggregation_function") or "max",
            **lightning_ir_text(config, fields),
            num_viewer_tokens=views,
        )
    tokenizer = load_tokenizer(path, (*markers, *viewer_tokens(views)))
    rows = backbone.get_input_embeddings().num_embeddings
    for token in settings.rules("doc").markers:
        if tokenizer.token_to_id(token) >= rows:
            raise LirError(f"{path}: {token} has id {tokenizer.token_to_id(token)}, beyond the {rows} embedding rows")
    model = MvrModel(backbone, settings, projection)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)


def _checked_views(path: Path, config: dict[str, Any]) -> int:
    """The number of views, after refusing the settings lir does not score as Lightning IR does."""
    views = config.get("num_viewer_tokens", 8)
    if not isinstance(views, int) or isinstance(views, bool):
        raise LirError(f"{path}: num_viewer_tokens {views!r} is not supported (a positive number of views)")
    normalization = config.get("normalization_strategy")
    if normalization not in (None, "l2"):
        raise LirError(f"{path}: normalization {normalization!r} is not supported (l2 or none)")
    return views
