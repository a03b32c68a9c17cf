"""COIL (Lightning IR `coil`): a projected [CLS] vector plus small token vectors matched on equal token ids.

Texts are `[CLS] text [SEP]` (`[CLS] [QUE]/[DOC] text [SEP]` with markers). The first token's hidden state
goes through `cls_projection` [C, H], every later one through `token_projection` [D, H] (both with a bias, or
both without: `projection` linear / linear_no_bias). A query scores a document by

    sim(cls_q, cls_d) + query_agg_i doc_agg_j (sim(q_i, d_j) if id(q_i) == id(d_j) else 0)

over the scored tokens from position 1 on ([SEP] included; padding and the role's mask-scoring tokens
excluded), as Lightning IR 0.0.6 computes it: unmatched pairs are 0, not excluded. Cosine models L2-normalize
both kinds of vectors here, so every consumer compares by dot products (`lir.coil`). Lightning IR's COIL
never normalizes nor sparsifies: `normalization_strategy` and `sparsification_strategy` are ignored alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel

from lir.errors import LirError
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
    take_linear,
)
from lir.train.multi_vector import LateInteractionConfig, _mask_tokens, aggregate, unscored_ids
from lir.train.saving import Settings, Tensors, projection_layout, text_layout

COIL_KEYS = {"token_embedding_dim", "cls_embedding_dim"}
"""Lightning IR's coil settings beyond the multi-vector ones (kept out of the backbone's config)."""
CoilOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""cls [B, C], token vectors [B, L, D], token ids [B, L], scoring mask [B, L] (`lir.manifest.OUTPUTS["coil"]`)."""


@dataclass
class CoilConfig(LateInteractionConfig):
    """The late-interaction settings of a COIL model (its vectors are L2-normalized when it is cosine)."""

    @property
    def normalize(self) -> bool:
        """Whether the vectors come out L2-normalized (cosine models)."""
        return self.similarity == "cosine"


class CoilModel(nn.Module):
    """Encodes token ids into a cls vector and scored token vectors with their ids; `similarity` scores them."""

    family = "coil"

    def __init__(
        self, backbone: PreTrainedModel, config: CoilConfig, token_projection: nn.Linear, cls_projection: nn.Linear
    ) -> None:
        super().__init__()
        if (token_projection.bias is None) != (cls_projection.bias is None):
            raise LirError("COIL's token and cls projections both have a bias or neither has")
        self.backbone = backbone
        self.config = config
        self.token_projection = token_projection
        self.cls_projection = cls_projection
        self.register_buffer("query_unscored", torch.tensor(config.query_unscored_ids, dtype=torch.long))
        self.register_buffer("doc_unscored", torch.tensor(config.doc_unscored_ids, dtype=torch.long))

    @property
    def embedding_dim(self) -> int:
        """The token vector size."""
        return self.token_projection.out_features

    @property
    def cls_dim(self) -> int:
        return self.cls_projection.out_features

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> CoilOutputs:
        """[B, L] ids and mask → cls [B, C], token vectors [B, L, D], token ids [B, L] and scoring mask [B, L]
        (position 0 never scores as a token: it is the cls vector)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        cls, vectors = self.cls_projection(hidden[:, 0]), self.token_projection(hidden)
        if self.config.normalize:
            cls, vectors = nn.functional.normalize(cls, p=2, dim=-1), nn.functional.normalize(vectors, p=2, dim=-1)
        return cls, vectors, input_ids, self.scoring_mask(input_ids, attention_mask, role)

    def scoring_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """Attended tokens from position 1 on, minus the role's unscored ids."""
        mask = attention_mask.bool()
        mask = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, 1:]], dim=1)
        unscored = self.query_unscored if role == "query" else self.doc_unscored
        if unscored.numel():
            mask = mask & ~(input_ids.unsqueeze(-1) == unscored).any(-1)
        return mask

    def similarity(self, *outputs: torch.Tensor) -> torch.Tensor:
        """The `encode` outputs of Q queries then of N documents → [Q, N] scores."""
        q_cls, q_vectors, q_ids, q_mask, d_cls, d_vectors, d_ids, d_mask = outputs
        sims = torch.einsum("qid,njd->qnij", q_vectors, d_vectors)
        sims = sims * (q_ids[:, None, :, None] == d_ids[None, :, None, :]).to(sims.dtype)
        per_token = aggregate(sims, d_mask[None, :, None, :], self.config.doc_aggregation, -1)
        tokens = aggregate(per_token, q_mask[:, None, :], self.config.aggregation, -1)
        return q_cls @ d_cls.T + tokens

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's `coil` config keys and both projections (what `save_lightning_ir` writes)."""
        config = self.config
        projection, tensors = projection_layout(self.token_projection, "token_projection")
        tensors |= projection_layout(self.cls_projection, "cls_projection")[1]
        settings = {
            "model_type": "coil",
            **text_layout(config),
            "projection": projection,
            "token_embedding_dim": self.embedding_dim,
            "cls_embedding_dim": self.cls_dim,
            "query_aggregation_function": config.aggregation,
            "doc_aggregation_function": config.doc_aggregation,
            "query_mask_scoring_tokens": _mask_tokens(config.query_unscored_ids, tokenizer),
            "doc_mask_scoring_tokens": _mask_tokens(config.doc_unscored_ids, tokenizer),
        }
        return settings, tensors


def load_lightning_ir_coil(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A Lightning IR `coil` checkpoint: the backbone, `token_projection` [D, H] and `cls_projection` [C, H]."""
    for key in ("query_expansion", "doc_expansion"):
        if config.get(key):
            raise LirError(f"{path}: {key} is not supported for COIL (Lightning IR's COIL does not expand)")
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS | COIL_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    token_projection = take_linear(rest, "token_projection", path)
    cls_projection = take_linear(rest, "cls_projection", path)
    refuse_leftovers(rest, path)
    for key, layer in (("token_embedding_dim", token_projection), ("cls_embedding_dim", cls_projection)):
        if config.get(key) is not None and config[key] != layer.out_features:
            raise LirError(f"{path}: {key} {config[key]} but the weights give {layer.out_features}")
    markers = MARKERS if config.get("add_marker_tokens") else ()
    tokenizer = load_tokenizer(path, markers)
    with located(path):
        settings = CoilConfig(
            **lightning_ir_text(config, fields),
            aggregation=config.get("query_aggregation_function") or "sum",
            doc_aggregation=config.get("doc_aggregation_function") or "max",
            query_unscored_ids=unscored_ids(config.get("query_mask_scoring_tokens"), tokenizer),
            doc_unscored_ids=unscored_ids(config.get("doc_mask_scoring_tokens"), tokenizer),
        )
        model = CoilModel(backbone, settings, token_projection, cls_projection)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)
