"""Masked pooling of token embeddings into one vector (first / mean / max / sum), as Lightning IR does."""

from __future__ import annotations

import torch

POOLINGS = ("first", "mean", "max", "sum")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, strategy: str) -> torch.Tensor:
    """[B, L, H] token states and [B, L] mask → [B, H]; padding never contributes."""
    if strategy == "first":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if strategy == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    summed = (hidden * mask).sum(dim=1)
    if strategy == "sum":
        return summed
    if strategy == "mean":
        return summed / mask.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {strategy!r} (known: {', '.join(POOLINGS)})")
