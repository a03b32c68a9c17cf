"""Cross-encoders: a backbone reads the joint (query, document) sequence and a small head scores it.

- `CrossEncoderModel`: Lightning IR's `mono` (backbone → pooling → optional BERT pooler → linear head);
- `SetEncoderModel`: Lightning IR's listwise `set-encoder` (candidates of one query see each other's
  interaction token in every self-attention layer);
- `SequenceClassificationCrossEncoder`: a Hugging Face `*ForSequenceClassification` model with its own head.

Scoring `rank` takes the one logit as the score; `mono` takes two logits and scores with the
log-probability of the second (relevant) class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.manifest import DOC, QUERY, PairRules, TextRules, check_role
from lir.train.pooling import POOLINGS, pool

SCORINGS = {"rank": 1, "mono": 2}
"""Scoring strategies and the number of logits each needs."""
BERT_TEMPLATE = ["[CLS]", QUERY, "[SEP]", DOC, "[SEP]"]
SET_ENCODER_BACKBONES = ("bert", "electra")


@dataclass
class CrossEncoderConfig:
    """How pairs become one sequence (template, segments, content lengths) and how states become a score."""

    query_length: int = 32
    doc_length: int = 512
    template: list[str] = field(default_factory=lambda: list(BERT_TEMPLATE))
    token_types: list[int] | None = field(default_factory=lambda: [0, 0, 0, 1, 1])
    pooling: str = "first"
    scoring: str = "rank"
    listwise: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise LirError(f"unknown pooling {self.pooling!r} (known: {', '.join(POOLINGS)})")
        if self.scoring not in SCORINGS:
            raise LirError(f"unknown scoring {self.scoring!r} (known: {', '.join(SCORINGS)})")
        self.pair_rules().validate()

    def rules(self, role: str) -> TextRules:
        """The content-token limit of `role` (special tokens of the template not counted)."""
        return TextRules(max_length=self.query_length if check_role(role) == "query" else self.doc_length)

    def pair_rules(self) -> PairRules:
        """The manifest's pair rules of this model."""
        return PairRules(
            list(self.template), None if self.token_types is None else list(self.token_types), self.listwise
        )


def logits_to_scores(logits: torch.Tensor, scoring: str) -> torch.Tensor:
    """[B, 1] logits → the raw logit (`rank`); [B, 2] → log-softmax of the second class (`mono`)."""
    if scoring == "mono":
        return nn.functional.log_softmax(logits.float(), dim=-1)[:, 1]
    return logits[:, 0].float()


def backbone_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The keyword inputs of a Hugging Face backbone; segments only when the pairs have them."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    return inputs


def _check_head(head: nn.Linear, scoring: str) -> None:
    if head.out_features != SCORINGS[scoring]:
        raise LirError(f"scoring {scoring!r} needs {SCORINGS[scoring]} logits, the head gives {head.out_features}")


class CrossEncoderModel(nn.Module):
    """Backbone → pooling (first/mean/max/sum) → optional BERT pooler (linear + tanh) → linear head → score."""

    family = "cross-encoder"

    def __init__(
        self,
        backbone: PreTrainedModel,
        config: CrossEncoderConfig,
        head: nn.Linear,
        pooler: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        _check_head(head, config.scoring)
        self.backbone = backbone
        self.config = config
        self.pooler = pooler
        self.head = head

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        groups: torch.Tensor | None,
    ) -> torch.Tensor:
        """[B, L, H] token states of the pair sequences (pointwise: `groups` is not used)."""
        return self.backbone(**backbone_inputs(input_ids, attention_mask, token_type_ids)).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, L] pair sequences → [B] float32 scores."""
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids, groups)
        pooled = pool(hidden, attention_mask, self.config.pooling)
        if self.pooler is not None:
            pooled = torch.tanh(self.pooler(pooled))
        return logits_to_scores(self.head(pooled), self.config.scoring)


class SetEncoderModel(CrossEncoderModel):
    """Lightning IR's set-encoder on a BERT or ELECTRA backbone: in every self-attention layer each sequence's
    tokens attend to its own tokens and to the interaction-token states of the other sequences of its group
    (`groups` [B] int64: one id per pair, the candidates of one query share it). Its own interaction token is
    not repeated among them, so a one-candidate group scores as the plain mono model. Scores do not depend
    on the order of the candidates. `interaction_index` is the interaction token's position: 0 ([CLS]), or 1
    when Lightning IR's `add_extra_token` put an `[INT]` token after it."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        config: CrossEncoderConfig,
        head: nn.Linear,
        pooler: nn.Linear | None = None,
        interaction_index: int = 0,
    ) -> None:
        super().__init__(backbone, config, head, pooler)
        settings = backbone.config
        if settings.model_type not in SET_ENCODER_BACKBONES:
            raise LirError(f"a set-encoder needs a bert or electra backbone, not {settings.model_type!r}")
        if getattr(settings, "position_embedding_type", "absolute") != "absolute":
            raise LirError("a set-encoder needs absolute position embeddings")
        if not config.listwise:
            raise LirError("a set-encoder's config must be listwise")
        self.interaction_index = interaction_index

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        groups: torch.Tensor | None,
    ) -> torch.Tensor:
        """The backbone's layers run by hand with the set-encoder's extended keys (tensor ops only, so that
        a trace holds for any batch and sequence length)."""
        if groups is None:
            raise LirError("a set-encoder scores groups of candidates: pass groups (one id per pair)")
        backbone = self.backbone
        hidden = backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if hasattr(backbone, "embeddings_project"):  # ELECTRA with embedding_size != hidden_size
            hidden = backbone.embeddings_project(hidden)
        order = (groups * 0 + 1).cumsum(0)  # not ones_like: a trace would freeze its batch size
        others = (groups[:, None] == groups[None, :]) & (order[:, None] != order[None, :])
        blocked = ~torch.cat([attention_mask.bool(), others], dim=1)[:, None, None, :]  # [B, 1, 1, L + B]
        for layer in backbone.encoder.layer:
            attended = self._attention(layer.attention.self, hidden, blocked)
            attended = layer.attention.output(attended, hidden)
            hidden = layer.output(layer.intermediate(attended), attended)
        return hidden

    def _attention(self, attention: nn.Module, hidden: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """Multi-head attention over own tokens [B, L] plus the group's interaction tokens [B] (one softmax);
        `blocked` keys are filled, not added to, so that an fp16 graph's -inf makes no NaN."""
        heads, size = attention.num_attention_heads, attention.attention_head_size

        def split(states: torch.Tensor) -> torch.Tensor:  # [B, L, H] → [B, heads, L, size]
            return states.unflatten(-1, (heads, size)).transpose(1, 2)

        query, key, value = split(attention.query(hidden)), split(attention.key(hidden)), split(attention.value(hidden))
        shared_key = key[:, :, self.interaction_index].transpose(0, 1)  # [heads, B, size]
        shared_value = value[:, :, self.interaction_index].transpose(0, 1)
        own = query @ key.transpose(-1, -2)  # [B, heads, L, L]
        other = torch.einsum("bhld,hcd->bhlc", query, shared_key)  # [B, heads, L, B]
        scores = (torch.cat([own, other], dim=-1) / size**0.5).masked_fill(blocked, torch.finfo(own.dtype).min)
        probs = attention.dropout(scores.softmax(dim=-1))
        # own values and the group's shared ones side by side, [B, heads, L + B, size]; no slicing by a
        # shape (a trace would freeze it), the broadcast comes from an input-dependent zero term
        values = torch.cat([value, shared_value.unsqueeze(0) + value[:, :, :1] * 0], dim=2)
        return (probs @ values).transpose(1, 2).flatten(2)


class SequenceClassificationCrossEncoder(nn.Module):
    """A Hugging Face `*ForSequenceClassification` model with its own head (BERT pooler + classifier,
    ELECTRA/RoBERTa dense → activation → out_proj): 1 label scores `rank`, 2 labels `mono`."""

    family = "cross-encoder"

    def __init__(self, classifier: PreTrainedModel, config: CrossEncoderConfig) -> None:
        super().__init__()
        labels = int(classifier.config.num_labels)
        if labels != SCORINGS[config.scoring]:
            raise LirError(
                f"scoring {config.scoring!r} needs {SCORINGS[config.scoring]} labels, the model has {labels}"
            )
        self.backbone = classifier
        self.config = config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, L] pair sequences → [B] float32 scores (`groups` is not used: pointwise)."""
        logits = self.backbone(**backbone_inputs(input_ids, attention_mask, token_type_ids)).logits
        return logits_to_scores(logits, self.config.scoring)


@dataclass
class LoadedCrossEncoder:
    """A loaded cross-encoder checkpoint: the model, its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: Tokenizer
    pad_token_id: int
    source: str
    source_format: str
    backbone_type: str
