"""monoT5 and RankT5 cross-encoders: a T5 encoder, one decoder step and a small linear head.

The pair `Query: q Document: d Relevant: </s>` (RankT5: without `Relevant:`) goes through the encoder; the
decoder reads the start token (id 0) once. Two layouts share the model:

- `T5ForConditionalGeneration` (castorini's monoT5, RankT5): the head is the scoring's rows of the LM head
  (`▁false`, `▁true` for mono: log-softmax, the true entry; `<extra_id_10>` for rank: the raw logit), after
  the d_model^-0.5 rescaling that T5 applies before a tied LM head only. Only those rows are computed: the
  same numbers as the full vocabulary projection, at a fraction of the cost and export size;
- Lightning IR `mono` on a T5 backbone (its `MonoT5Model`, a `T5Model`): the head is the saved `linear`
  (+ bias), always after the d_model^-0.5 rescaling (its `ScaleLinear`, tied embeddings or not), and the
  decoder state is pooled as Lightning IR pools it. With `linear` = the rows of `shared` (what its hub
  mappings do) it scores exactly as the first layout on tied-embedding T5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration, T5Model

from lir.errors import LirError
from lir.manifest import DOC, QUERY
from lir.train.checkpoint_io import load_tokenizer, pad_token_id, read_weights
from lir.train.cross_encoder import (
    CrossEncoderConfig,
    LoadedCrossEncoder,
    _check_head,
    logits_to_scores,
    pair_lengths,
    tokenizer_max_length,
)
from lir.train.pooling import pool

SCORE_TOKENS = {"mono": ("▁false", "▁true"), "rank": ("<extra_id_10>",)}
"""The vocabulary rows each scoring reads, by token string (T5's ids: 6136, 1176; 32089)."""
TEMPLATES = {
    "mono": ["Query:", "{query}", "Document:", "{doc}", "Relevant:", "</s>"],
    "rank": ["Query:", "{query}", "Document:", "{doc}", "</s>"],
}
LIGHTNING_IR_PIECES = {
    "Query:": ("▁", "Query", ":"),
    "Document:": ("▁Document", ":"),
    "Relevant:": ("▁Relevan", "t", ":"),
    "</s>": ("</s>",),
}
"""What Lightning IR 0.0.6 writes for each text part of TEMPLATES: vocabulary pieces looked up by string (its
hard-coded T5 post-processor template; a piece the vocabulary lacks would become <unk>)."""
EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
"""T5's input embedding matrix under each of its names; a checkpoint saves at least one of them."""
IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
"""Found in old T5 checkpoints; T5 has no relative bias in cross-attention (transformers ignores it too)."""


class T5CrossEncoderModel(nn.Module):
    """Scores (query, document) token sequences with a T5 encoder, one decoder step and `head(state · scale)`.

    The one decoder state is pooled with the encoder's mask, as Lightning IR does: `first`, `mean` and `max`
    give the state itself, `sum` the state times the number of pair tokens."""

    family = "cross-encoder"

    def __init__(
        self, backbone: T5Model | T5ForConditionalGeneration, config: CrossEncoderConfig, head: nn.Linear, scale: float
    ) -> None:
        super().__init__()
        _check_head(head, config.scoring)
        self.backbone = backbone
        self.config = config
        self.head = head
        self.scale = scale

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
        ).last_hidden_state
        pooled = pool(decoded, attention_mask, self.config.pooling)
        return logits_to_scores(self.head(pooled * self.scale), self.config.scoring)


def score_token_ids(tokenizer: Tokenizer, scoring: str, where: Path) -> list[int]:
    """The vocabulary ids of the scoring's tokens, or a one-line error naming the missing one."""
    ids = []
    for token in SCORE_TOKENS[scoring]:
        found = tokenizer.token_to_id(token)
        if found is None:
            raise LirError(f"{where}: the tokenizer has no {token!r} token, which {scoring}T5 scoring reads")
        ids.append(found)
    return ids


def lm_head_rows(t5: T5ForConditionalGeneration, token_ids: list[int]) -> nn.Linear:
    """The LM head's rows of `token_ids` as a linear layer without bias."""
    rows = t5.lm_head.weight.detach()[token_ids]
    head = nn.Linear(rows.shape[1], rows.shape[0], bias=False)
    with torch.no_grad():
        head.weight.copy_(rows)
    return head


def lightning_ir_template_tokens(tokenizer: Tokenizer, scoring: str, where: Path) -> int:
    """The number of template tokens, once each text part of the scoring's template is found to encode to the
    pieces Lightning IR writes for it (else a one-line error: lir would feed the model other ids)."""
    count = 0
    for part in TEMPLATES[scoring]:
        if part in (QUERY, DOC):
            continue
        pieces = LIGHTNING_IR_PIECES[part]
        ids = [tokenizer.token_to_id(piece) for piece in pieces]
        if None in ids:
            missing = pieces[ids.index(None)]
            raise LirError(
                f"{where}: the vocabulary lacks {missing!r}, which Lightning IR's T5 template reads as <unk>"
            )
        found = tokenizer.encode(part, add_special_tokens=False)
        if found.ids != ids:
            raise LirError(
                f"{where}: the tokenizer splits {part!r} into {found.tokens}, not into Lightning IR's template "
                f"pieces {list(pieces)}"
            )
        count += len(ids)
    return count


def build_t5(
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    where: Path,
    model_class: type[T5Model] | type[T5ForConditionalGeneration] = T5ForConditionalGeneration,
) -> T5Model | T5ForConditionalGeneration:
    """A `model_class` T5 from config.json fields and safetensors weights (tied names resolved)."""
    fields = {k: v for k, v in config.items() if k not in ("model_type", "query_length", "doc_length")}
    if fields.get("decoder_start_token_id") is None:
        fields["decoder_start_token_id"] = 0  # T5 starts decoding with <pad>
    try:
        model = model_class(T5Config(**fields))
    except (TypeError, ValueError) as exc:
        raise LirError(f"{where}: config.json is not a usable T5 config ({exc})") from None
    tied = EMBEDDINGS + (("lm_head.weight",) if hasattr(model, "lm_head") and model.config.tie_word_embeddings else ())
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
    defaults) unless config.json names `query_length` / `doc_length`; the whole pair at most the tokenizer's
    `model_max_length` (512 at most), the longer content cut first."""
    if scoring not in SCORE_TOKENS:
        raise LirError(f"unknown T5 scoring {scoring!r} (known: {', '.join(SCORE_TOKENS)})")
    tokenizer = load_tokenizer(path)
    token_ids = score_token_ids(tokenizer, scoring, path)
    backbone = build_t5(config, read_weights(path), path)
    template = list(TEMPLATES[scoring])
    specials = sum(
        len(tokenizer.encode(part, add_special_tokens=False).ids) for part in template if part not in (QUERY, DOC)
    )
    lengths = pair_lengths(
        config, specials, config.get("query_length", 32), config.get("doc_length", 512), tokenizer_max_length(path)
    )
    settings = CrossEncoderConfig(template=template, token_types=None, pooling="first", scoring=scoring, **lengths)
    scale = backbone.model_dim**-0.5 if backbone.config.tie_word_embeddings else 1.0  # as before its LM head
    model = T5CrossEncoderModel(backbone, settings, lm_head_rows(backbone, token_ids), scale)
    return LoadedCrossEncoder(model, tokenizer, pad_token_id(tokenizer, config), spec, "t5", "t5")
