"""Load cross-encoders from the checkpoint layouts users have.

- Lightning IR `mono`, `set-encoder` and the older `cross-encoder` (webis/monoelectra-base): backbone weights
  without prefix, head `linear.weight` [1 or 2, H] (+ `linear.bias`), `bert_pool.0.*` for `bert_pool` pooling
  (saved as `_bert_pool: true` with `pooling_strategy: first`);
  `query_length`/`doc_length` count content tokens, truncated separately as Lightning IR does; `mono` on a
  T5 backbone (its MonoT5Model) runs as `lir.train.t5_cross_encoder.T5CrossEncoderModel`;
- Hugging Face `*ForSequenceClassification` (cross-encoder/ms-marco-MiniLM-L6-v2: 1 label → `rank`;
  castorini monoBERT: 2 labels → `mono`), run as the transformers class itself so its head is exact;
- `T5ForConditionalGeneration` (monoT5, RankT5) in `lir.train.t5_cross_encoder`.

The pair template and segment ids come from the tokenizer's own pair post-processing (BERT:
`[CLS] {query} [SEP] {doc} [SEP]`, segments 0 0 0 1 1); segments are dropped when the backbone has no
token types (`type_vocab_size` <= 1). Weights are read from safetensors only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification, T5Model

from lir.errors import LirError
from lir.files import read_json
from lir.tokenization import pair_template
from lir.train.checkpoints import (
    CROSS_ENCODER_TYPES,
    LIR_CONFIG_KEYS,
    _linear,
    _max_length,
    _refuse_leftovers,
    build_backbone,
    load_tokenizer,
    pad_token_id,
    read_weights,
)
from lir.train.cross_encoder import (
    SCORINGS,
    CrossEncoderConfig,
    CrossEncoderModel,
    LoadedCrossEncoder,
    SequenceClassificationCrossEncoder,
    SetEncoderModel,
)
from lir.train.hub import resolve_model_path

CROSS_CONFIG_KEYS = {"scoring_strategy", "linear_bias", "tokenizer_pattern", "depth", "add_extra_token"}
CROSS_CONFIG_KEYS |= {"sample_missing_docs", "_bert_pool"}
INTERACTION_TOKEN = "[INT]"
HF_QUERY_LENGTH = 64
"""Query tokens of Hugging Face cross-encoders, which truncate the joint pair instead; documents get the rest."""
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


def _lengths(
    fields: dict[str, Any], specials: int, query: int | None, doc: int | None, total: int | None = None
) -> tuple[int, int]:
    """Content lengths of query and document (None: not set), cut so that the whole pair, its `specials`
    template tokens included, fits the backbone's positions and `total`; an unset document length takes all
    that is left."""
    room = _max_length(fields, total) - specials
    query = min(query or min(HF_QUERY_LENGTH, room // 2), room - 1)
    return query, min(doc or room, room - query)


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
    head = _linear(rest, "linear", path)
    pooler = _linear(rest, "bert_pool.0", path) if bert_pool else None
    _refuse_leftovers(rest, path)
    tokenizer = load_tokenizer(path, (INTERACTION_TOKEN,) if extra_token else ())
    template, types = _pair_layout(tokenizer, fields)
    if extra_token and INTERACTION_TOKEN not in template:  # Lightning IR: [CLS] [INT] query [SEP] doc [SEP]
        template.insert(1, INTERACTION_TOKEN)  # (0.0.6 also writes it into the saved tokenizer's template)
        types = None if types is None else [types[0], *types]
    query_length, doc_length = _lengths(
        fields, len(template) - 2, config.get("query_length", 32), config.get("doc_length", 512)
    )
    settings = CrossEncoderConfig(
        query_length=query_length,
        doc_length=doc_length,
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
    head = _linear(weights, "linear", path)
    fields = {k: v for k, v in config.items() if k not in LIR_CONFIG_KEYS | CROSS_CONFIG_KEYS}
    backbone = build_t5(fields | {"decoder_start_token_id": 0}, weights, path, T5Model)  # MonoT5Model starts at 0
    tokenizer = load_tokenizer(path)
    specials = lightning_ir_template_tokens(tokenizer, scoring, path)
    query_length, doc_length = _lengths(
        fields, specials, config.get("query_length", 32), config.get("doc_length", 512), _tokenizer_max_length(path)
    )
    try:
        settings = CrossEncoderConfig(query_length, doc_length, list(TEMPLATES[scoring]), None, pooling, scoring)
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
    _refuse_leftovers({k: v for k, v in weights.items() if k not in own}, path)
    try:
        classifier.load_state_dict({k: weights[k] for k in own}, strict=False)
    except RuntimeError as exc:
        raise LirError(f"{path}: weights do not fit the config ({str(exc).splitlines()[-1].strip()})") from None
    tokenizer = load_tokenizer(path)
    template, types = _pair_layout(tokenizer, fields)
    query_length, doc_length = _lengths(fields, len(template) - 2, None, None, _tokenizer_max_length(path))
    model_settings = CrossEncoderConfig(
        query_length=query_length, doc_length=doc_length, template=template, token_types=types, scoring=scoring
    )
    model = SequenceClassificationCrossEncoder(classifier.float(), model_settings)
    return LoadedCrossEncoder(model, tokenizer, pad_token_id(tokenizer, fields), spec, "huggingface", backbone_type)


def _tokenizer_max_length(path: Path) -> int | None:
    """The tokenizer's `model_max_length` (sentence-transformers' CrossEncoder keeps its `max_length` there),
    None when it sets none."""
    file = path / "tokenizer_config.json"
    total = read_json(file).get("model_max_length") if file.is_file() else None
    if not isinstance(total, int | float) or total >= UNSET_MAX_LENGTH:
        return None
    return int(total)
