"""UniCOIL (Lightning IR `unicoil`): one learned impact per token, scattered into a vocabulary-sized vector.

`w_t = relu(token_projection(h_t))` for every attended token (special tokens included); the vector holds
`w_t` at each token's id: for a repeated token, its last occurrence's weight (what Lightning IR's scatter
gives on CPU), not the sum or the max. Queries and documents compare by dot product, so UniCOIL is a
sparse model: its exports and indexes are the sparse family's. Its text rules are `SparseConfig`'s
(lengths and markers; the SPLADE fields keep their defaults and are unused).
"""

from __future__ import annotations

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
from lir.train.saving import Settings, Tensors, projection_layout, text_layout
from lir.train.sparse import SparseConfig


class UniCoilModel(nn.Module):
    """Encodes token ids into vocabulary-sized impacts (non-negative, one per distinct token)."""

    family = "sparse"

    def __init__(self, backbone: PreTrainedModel, config: SparseConfig, token_projection: nn.Linear) -> None:
        super().__init__()
        if token_projection.out_features != 1:
            raise LirError(f"a UniCOIL token projection has one output, not {token_projection.out_features}")
        self.backbone = backbone
        self.config = config
        self.token_projection = token_projection

    @property
    def embedding_dim(self) -> int:
        return self.backbone.get_input_embeddings().num_embeddings

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """[B, L] ids and mask → [B, V] impacts (the same computation for both roles)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = torch.relu(self.token_projection(hidden).squeeze(-1).masked_fill(~attention_mask.bool(), 0.0))
        later = torch.ones(input_ids.shape[1], input_ids.shape[1], dtype=torch.bool, device=input_ids.device).triu(1)
        repeated = ((input_ids[:, :, None] == input_ids[:, None, :]) & attention_mask.bool()[:, None, :] & later).any(
            -1
        )
        weights = weights.masked_fill(repeated, 0.0)  # only the last occurrence of a token keeps its weight
        return torch.zeros(
            input_ids.shape[0], self.embedding_dim, dtype=weights.dtype, device=weights.device
        ).scatter_add(1, input_ids, weights)

    def graph_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, role: str) -> torch.Tensor:
        """`encode`, which an export graph runs as it is."""
        return self.encode(input_ids, attention_mask, role)

    def similarity(self, queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """[Q, V] and [N, V] impacts → [Q, N] dot products."""
        return queries @ docs.T

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's `unicoil` config keys and `token_projection` (what `save_lightning_ir` writes)."""
        config = self.config
        projection, tensors = projection_layout(self.token_projection, "token_projection")
        settings = {
            "model_type": "unicoil",
            **text_layout(config),
            "projection": projection,
        }
        return settings, tensors


def load_lightning_ir_unicoil(path: Path, config: dict[str, Any], spec: str) -> LoadedBiEncoder:
    """A Lightning IR `unicoil` checkpoint: the backbone and `token_projection` [1, H] (+ bias)."""
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS}
    backbone_type = config["backbone_model_type"]
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    projection = take_linear(rest, "token_projection", path)
    refuse_leftovers(rest, path)
    markers = MARKERS if config.get("add_marker_tokens") else ()
    with located(path):
        settings = SparseConfig(
            **lightning_ir_text(config, fields),
        )
        model = UniCoilModel(backbone, settings, projection)
    tokenizer = load_tokenizer(path, markers)
    return LoadedBiEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)
