"""monoT5 and RankT5 cross-encoders: a `T5ForConditionalGeneration` scored by one decoder step.

The pair `Query: q Document: d Relevant: </s>` (RankT5: without `Relevant:`) goes through the encoder; the
decoder reads the start token (id 0) once. monoT5 scores log-softmax over the logits of `▁false` and `▁true`
(the true entry); RankT5 scores the raw logit of `<extra_id_10>`. Only those rows of the LM head are computed:
the same numbers as the full vocabulary projection, at a fraction of the cost (and export size, once the
row gather is constant-folded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from lir.errors import LirError
from lir.train.checkpoints import load_tokenizer, pad_token_id, read_weights
from lir.train.cross_encoder import CrossEncoderConfig, LoadedCrossEncoder, logits_to_scores

SCORE_TOKENS = {"mono": ("▁false", "▁true"), "rank": ("<extra_id_10>",)}
"""The vocabulary rows each scoring reads, by token string (T5's ids: 6136, 1176; 32089)."""
TEMPLATES = {
    "mono": ["Query:", "{query}", "Document:", "{doc}", "Relevant:", "</s>"],
    "rank": ["Query:", "{query}", "Document:", "{doc}", "</s>"],
}
EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
"""T5's input embedding matrix under each of its names; a checkpoint saves at least one of them."""
IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
"""Found in old T5 checkpoints; T5 has no relative bias in cross-attention (transformers ignores it too)."""


class T5CrossEncoderModel(nn.Module):
    """Scores (query, document) token sequences with a T5 encoder and one decoder step."""

    family = "cross-encoder"

    def __init__(self, backbone: T5ForConditionalGeneration, config: CrossEncoderConfig, token_ids: list[int]) -> None:
        super().__init__()
        if len(token_ids) != len(SCORE_TOKENS[config.scoring]):
            raise LirError(f"{config.scoring} scoring reads {len(SCORE_TOKENS[config.scoring])} vocabulary rows")
        self.backbone = backbone
        self.config = config
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, L] pair ids and mask → [B] float32 scores (T5 takes no segments and scores pairs alone)."""
        t5 = self.backbone
        encoded = t5.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        start = torch.full_like(input_ids[:, :1], t5.config.decoder_start_token_id)
        decoded = t5.decoder(
            input_ids=start, encoder_hidden_states=encoded, encoder_attention_mask=attention_mask, use_cache=False
        ).last_hidden_state[:, 0]
        if t5.config.tie_word_embeddings:
            decoded = decoded * t5.model_dim**-0.5  # as T5ForConditionalGeneration before its tied LM head
        return logits_to_scores(decoded @ t5.lm_head.weight[self.token_ids].T, self.config.scoring)


def score_token_ids(tokenizer: Tokenizer, scoring: str, where: Path) -> list[int]:
    """The vocabulary ids of the scoring's tokens, or a one-line error naming the missing one."""
    ids = []
    for token in SCORE_TOKENS[scoring]:
        found = tokenizer.token_to_id(token)
        if found is None:
            raise LirError(f"{where}: the tokenizer has no {token!r} token, which {scoring}T5 scoring reads")
        ids.append(found)
    return ids


def build_t5(config: dict[str, Any], weights: dict[str, torch.Tensor], where: Path) -> T5ForConditionalGeneration:
    """A `T5ForConditionalGeneration` from config.json fields and safetensors weights (tied names resolved)."""
    fields = {k: v for k, v in config.items() if k not in ("model_type", "query_length", "doc_length")}
    if fields.get("decoder_start_token_id") is None:
        fields["decoder_start_token_id"] = 0  # T5 starts decoding with <pad>
    try:
        model = T5ForConditionalGeneration(T5Config(**fields))
    except (TypeError, ValueError) as exc:
        raise LirError(f"{where}: config.json is not a usable T5 config ({exc})") from None
    tied = EMBEDDINGS + (("lm_head.weight",) if model.config.tie_word_embeddings else ())
    if not any(name in weights for name in tied):
        raise LirError(f"{where}: the weights lack T5's embedding matrix (shared.weight)")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise LirError(f"{where}: weights do not fit the config ({str(exc).splitlines()[-1].strip()})") from None
    missing = [name for name in missing if name not in tied]
    unexpected = [name for name in unexpected if name not in IGNORED]
    if missing:
        raise LirError(f"{where}: the weights lack {len(missing)} of T5's tensors (first: {missing[0]})")
    if unexpected:
        raise LirError(
            f"{where}: {len(unexpected)} tensors in the weights belong to nothing lir knows ({unexpected[0]})"
        )
    return model.float().eval()


def load_t5_cross_encoder(path: Path, config: dict[str, Any], spec: str, scoring: str) -> LoadedCrossEncoder:
    """A monoT5 (`scoring="mono"`) or RankT5 (`"rank"`) checkpoint: `T5ForConditionalGeneration` in config.json,
    safetensors weights, tokenizer.json. Query and document keep 32 and 512 content tokens (Lightning IR's T5
    defaults) unless config.json names `query_length` / `doc_length`."""
    if scoring not in SCORE_TOKENS:
        raise LirError(f"unknown T5 scoring {scoring!r} (known: {', '.join(SCORE_TOKENS)})")
    tokenizer = load_tokenizer(path)
    token_ids = score_token_ids(tokenizer, scoring, path)
    backbone = build_t5(config, read_weights(path), path)
    settings = CrossEncoderConfig(
        query_length=int(config.get("query_length", 32)),
        doc_length=int(config.get("doc_length", 512)),
        template=list(TEMPLATES[scoring]),
        token_types=None,
        pooling="first",
        scoring=scoring,
    )
    model = T5CrossEncoderModel(backbone, settings, token_ids)
    return LoadedCrossEncoder(model, tokenizer, pad_token_id(tokenizer, config), spec, "t5", "t5")
