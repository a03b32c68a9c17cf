"""Cross-encoders: a backbone reads the joint (query, document) sequence and a small head scores it.

- `CrossEncoderModel`: Lightning IR's `mono` (backbone → pooling → optional BERT pooler → linear head);
- `SetEncoderModel`: Lightning IR's listwise `set-encoder` (candidates of one query see each other's
  interaction token in every self-attention layer);
- `SequenceClassificationCrossEncoder`: a Hugging Face `*ForSequenceClassification` model with its own head.

Scoring `rank` takes the one logit as the score; `mono` takes two logits and scores with the
log-probability of the second (relevant) class.

The family in one place with the layouts it reads (Lightning IR `mono`/`set-encoder`/`cross-encoder`,
Hugging Face `*ForSequenceClassification`; T5 in `lir.train.t5_cross_encoder`), the layout it writes
(`CrossEncoderModel.lightning_ir_layout`) and a new model (`NEW_MONO`: Lightning IR's defaults and a fresh head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel, T5Model

from lir.errors import LirError
from lir.files import read_json
from lir.manifest import DOC, QUERY, PairRules, TextRules, check_role
from lir.tokenization import pair_template
from lir.train.checkpoint_io import (
    LIR_CONFIG_KEYS,
    build_backbone,
    capped_length,
    load_tokenizer,
    pad_token_id,
    read_weights,
    refuse_leftovers,
    take_linear,
)
from lir.train.hub import resolve_model_path
from lir.train.pooling import POOLINGS, pool
from lir.train.saving import NewModel, Settings, Tensors, new_linear, projection_layout

CROSS_ENCODER_TYPES = ("mono", "set-encoder", "cross-encoder")
"""Lightning IR's cross-encoder model types."""
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
    max_length: int | None = None

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
        types = None if self.token_types is None else list(self.token_types)
        return PairRules(list(self.template), types, self.listwise, self.max_length)


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

    def lightning_ir_layout(self, tokenizer: Tokenizer) -> tuple[Settings, Tensors]:
        """Lightning IR's config keys and head tensors of this model (what `save_lightning_ir` writes)."""
        config = self.config
        if self.pooler is not None and config.pooling != "first":
            raise LirError(f"a BERT pooler after {config.pooling!r} pooling has no Lightning IR setting")
        _, head = projection_layout(self.head, "linear")
        _, pooler = projection_layout(self.pooler, "bert_pool.0")
        settings = {
            "model_type": "set-encoder" if isinstance(self, SetEncoderModel) else "mono",
            "pooling_strategy": "bert_pool" if self.pooler is not None else config.pooling,
            "scoring_strategy": config.scoring,
            "linear_bias": self.head.bias is not None,
            "query_length": config.query_length,
            "doc_length": config.doc_length,
        }
        if isinstance(self, SetEncoderModel):
            settings["add_extra_token"] = self.interaction_index == 1
        return settings, head | pooler


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


def new_mono_head(backbone: PreTrainedModel, settings: Settings) -> Tensors:
    """A fresh `linear` head (one logit for `rank`, two for `mono`) and, for `bert_pool`, a fresh pooler."""
    scoring, hidden = settings["scoring_strategy"], backbone.config.hidden_size
    if scoring not in SCORINGS:
        raise LirError(f"unknown scoring_strategy {scoring!r} (known: {', '.join(SCORINGS)})")
    tensors = new_linear("linear", hidden, SCORINGS[scoring], settings["linear_bias"] is True)
    if settings["pooling_strategy"] == "bert_pool":
        tensors |= new_linear("bert_pool.0", hidden, hidden, bias=True)
    return tensors


NEW_MONO = NewModel(
    {
        "model_type": "mono",
        "query_length": 32,
        "doc_length": 512,
        "pooling_strategy": "first",
        "linear_bias": False,
        "scoring_strategy": "rank",
    },
    new_mono_head,
)
"""A new pointwise cross-encoder (`mono`) with Lightning IR 0.0.6's MonoConfig defaults: first-token pooling, a
linear head without bias, one logit (`rank`)."""


CROSS_CONFIG_KEYS = {"scoring_strategy", "linear_bias", "tokenizer_pattern", "depth", "add_extra_token"}
CROSS_CONFIG_KEYS |= {"sample_missing_docs", "_bert_pool"}
INTERACTION_TOKEN = "[INT]"
UNSET_MAX_LENGTH = 10**9
"""transformers writes a huge `model_max_length` (1e30) when the tokenizer sets none."""


def load_cross_encoder(spec: str, t5_scoring: str | None = None, revision: str | None = None) -> LoadedCrossEncoder:
    """Load a cross-encoder from a directory or a hub id (at `revision`), in eval mode.

    `t5_scoring` picks a T5ForConditionalGeneration's scoring: 'mono' (monoT5: true vs false) or 'rank'
    (RankT5: one logit); by default 'rank' when the spec names rankt5, else 'mono'.
    """
    path = resolve_model_path(spec, revision)
    config = read_json(path / "config.json")
    architectures = config.get("architectures") or []
    if "backbone_model_type" in config:
        loaded = _load_lightning_ir(path, config, spec)
    elif "T5ForConditionalGeneration" in architectures:
        from lir.train.t5_cross_encoder import load_t5_cross_encoder

        scoring = t5_scoring or ("rank" if "rankt5" in spec.lower() else "mono")
        loaded = load_t5_cross_encoder(path, config, spec, scoring)
    elif any(str(name).endswith("ForSequenceClassification") for name in architectures):
        loaded = _load_sequence_classification(path, config, spec)
    else:
        raise LirError(
            f"{path}: not a cross-encoder lir knows (Lightning IR mono/set-encoder, *ForSequenceClassification, "
            "T5ForConditionalGeneration)"
        )
    loaded.model.eval()
    return loaded


def _pair_layout(tokenizer: Any, fields: dict[str, Any]) -> tuple[list[str], list[int] | None]:
    """The tokenizer's pair template; segment ids only when the backbone has token types."""
    template, types = pair_template(tokenizer)
    return template, types if int(fields.get("type_vocab_size") or 0) > 1 else None


def pair_lengths(
    fields: dict[str, Any], specials: int, query: int | None, doc: int | None, total: int | None
) -> dict[str, int]:
    """The content lengths of query and document (None: not cut) and the most tokens of a whole pair: the
    tokenizer's `total` (Hugging Face truncates a pair to it, `longest_first`) within the backbone's positions;
    `specials`: the template's own tokens."""
    pair = capped_length(fields, total)
    room = pair - specials
    return {"query_length": min(query or room, room), "doc_length": min(doc or room, room), "max_length": pair}


def _load_lightning_ir(path: Path, config: dict[str, Any], spec: str) -> LoadedCrossEncoder:
    model_type, backbone_type = config.get("model_type"), config["backbone_model_type"]
    if model_type not in CROSS_ENCODER_TYPES:
        raise LirError(f"{path}: Lightning IR {model_type!r} is not a cross-encoder: load it with load_bi_encoder")
    scoring = config.get("scoring_strategy") or "rank"
    pooling = config.get("pooling_strategy") or "first"
    bert_pool = pooling == "bert_pool" or config.get("_bert_pool") is True  # MonoConfig saves the latter
    if scoring not in SCORINGS:
        raise LirError(f"{path}: unknown scoring_strategy {scoring!r} (known: {', '.join(SCORINGS)})")
    if backbone_type == "t5":
        return _load_lightning_ir_t5(path, config, spec, scoring, "bert_pool" if bert_pool else pooling)
    extra_token = model_type == "set-encoder" and bool(config.get("add_extra_token"))
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS | CROSS_CONFIG_KEYS}
    backbone, rest = build_backbone(backbone_type, fields, read_weights(path), path)
    head = take_linear(rest, "linear", path)
    pooler = take_linear(rest, "bert_pool.0", path) if bert_pool else None
    refuse_leftovers(rest, path)
    tokenizer = load_tokenizer(path, (INTERACTION_TOKEN,) if extra_token else ())
    template, types = _pair_layout(tokenizer, fields)
    if extra_token and INTERACTION_TOKEN not in template:  # Lightning IR: [CLS] [INT] query [SEP] doc [SEP]
        template.insert(1, INTERACTION_TOKEN)  # (0.0.6 also writes it into the saved tokenizer's template)
        types = None if types is None else [types[0], *types]
    lengths = pair_lengths(
        fields,
        len(template) - 2,
        config.get("query_length", 32),
        config.get("doc_length", 512),
        tokenizer_max_length(path),
    )
    settings = CrossEncoderConfig(
        **lengths,
        template=template,
        token_types=types,
        pooling="first" if bert_pool else pooling,
        scoring=scoring,
        listwise=model_type == "set-encoder",
    )
    try:
        if model_type == "set-encoder":
            model = SetEncoderModel(backbone, settings, head, pooler, interaction_index=int(extra_token))
        else:
            model = CrossEncoderModel(backbone, settings, head, pooler)
    except LirError as exc:
        raise LirError(f"{path}: {exc}") from None
    return LoadedCrossEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", backbone_type)


def _load_lightning_ir_t5(
    path: Path, config: dict[str, Any], spec: str, scoring: str, pooling: str
) -> LoadedCrossEncoder:
    """Lightning IR `mono` on a T5 backbone (its MonoT5Model): encoder, one decoder step from id 0, pooling, then
    the `linear` head on the state times d_model^-0.5 (its ScaleLinear, whatever tie_word_embeddings says); the
    pair template of its hard-coded pieces, checked against the tokenizer."""
    from lir.train.t5_cross_encoder import TEMPLATES, T5CrossEncoderModel, build_t5, lightning_ir_template_tokens

    if config["model_type"] != "mono":
        raise LirError(
            f"{path}: Lightning IR {config['model_type']!r} on a T5 backbone is not supported (only 'mono'; "
            "Lightning IR builds set-encoders on bert and electra alone)"
        )
    if pooling == "bert_pool":
        raise LirError(f"{path}: pooling_strategy 'bert_pool' on a T5 backbone is not supported")
    weights = read_weights(path)
    head = take_linear(weights, "linear", path)
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS | CROSS_CONFIG_KEYS}
    backbone = build_t5(fields | {"decoder_start_token_id": 0}, weights, path, T5Model)  # MonoT5Model starts at 0
    tokenizer = load_tokenizer(path)
    specials = lightning_ir_template_tokens(tokenizer, scoring, path)
    lengths = pair_lengths(
        fields, specials, config.get("query_length", 32), config.get("doc_length", 512), tokenizer_max_length(path)
    )
    try:
        settings = CrossEncoderConfig(
            template=list(TEMPLATES[scoring]), token_types=None, pooling=pooling, scoring=scoring, **lengths
        )
        model = T5CrossEncoderModel(backbone, settings, head, backbone.config.d_model**-0.5)
    except LirError as exc:
        raise LirError(f"{path}: {exc}") from None
    return LoadedCrossEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "lightning-ir", "t5")


def _load_sequence_classification(path: Path, config: dict[str, Any], spec: str) -> LoadedCrossEncoder:
    fields = {k: v for k, v in config.items() if k != "architectures"}
    backbone_type = fields.pop("model_type", None)
    try:
        settings = AutoConfig.for_model(backbone_type, **fields)
        model_class = AutoModelForSequenceClassification._model_mapping[type(settings)]
    except (ValueError, KeyError):
        raise LirError(f"{path}: no sequence-classification model for model type {backbone_type!r}") from None
    labels = int(settings.num_labels)
    scoring = {count: name for name, count in SCORINGS.items()}.get(labels)
    if scoring is None:
        raise LirError(f"{path}: {labels} labels: a cross-encoder has 1 (a score) or 2 (not relevant, relevant)")
    classifier = model_class(settings)
    weights = {k: v for k, v in read_weights(path).items() if not k.endswith("position_ids")}
    own = {k for k in classifier.state_dict() if not k.endswith("position_ids")}
    missing = sorted(own - set(weights))
    if missing:
        raise LirError(f"{path}: the weights lack {len(missing)} of the model's tensors (first: {missing[0]})")
    refuse_leftovers({k: v for k, v in weights.items() if k not in own}, path)
    try:
        classifier.load_state_dict({k: weights[k] for k in own}, strict=False)
    except RuntimeError as exc:
        raise LirError(f"{path}: weights do not fit the config ({str(exc).splitlines()[-1].strip()})") from None
    tokenizer = load_tokenizer(path)
    template, types = _pair_layout(tokenizer, fields)
    lengths = pair_lengths(fields, len(template) - 2, None, None, tokenizer_max_length(path))
    model_settings = CrossEncoderConfig(template=template, token_types=types, scoring=scoring, **lengths)
    model = SequenceClassificationCrossEncoder(classifier.float(), model_settings)
    return LoadedCrossEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "huggingface", backbone_type)


def tokenizer_max_length(path: Path) -> int | None:
    """The tokenizer's `model_max_length` (sentence-transformers' CrossEncoder keeps its `max_length` there),
    None when it sets none."""
    file = path / "tokenizer_config.json"
    total = read_json(file).get("model_max_length") if file.is_file() else None
    if not isinstance(total, int | float) or total >= UNSET_MAX_LENGTH:
        return None
    return int(total)
