"""Cross-encoder loaders in each layout, against references computed with plain transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertModel, BertTokenizerFast, ElectraModel

from lir.errors import LirError
from lir.tokenization import PairEncoder
from lir.train import (
    CrossEncoderModel,
    CrossEncoderModule,
    LoadedBiEncoder,
    LoadedCrossEncoder,
    SetEncoderModel,
    is_cross_encoder_checkpoint,
    load_bi_encoder,
    load_cross_encoder,
    load_model,
)
from tests import cross_builders

QUERIES = ["What is the capital of Germany?", "how do cats purr", "vitamin d and infections"]
DOCS = [
    "Berlin is the capital and largest city of Germany. " * 8,
    "Cats purr by vibrating the muscles of the larynx.",
    "Paris.",
]


@pytest.fixture(scope="module")
def mono_dir(tmp_path_factory):
    return cross_builders.lightning_ir_mono_dir(tmp_path_factory.mktemp("ckpt") / "mono")


@pytest.fixture(scope="module")
def set_dir(tmp_path_factory):
    return cross_builders.lightning_ir_set_encoder_dir(tmp_path_factory.mktemp("ckpt") / "set")


def _hf_tokenizer(path) -> BertTokenizerFast:
    return BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)


def _lightning_ir_batch(path, queries, docs, lengths):
    """Lightning IR's cross-encoder tokenization: each text truncated alone (no special tokens), decoded and
    re-tokenized as a pair."""
    tokenizer = _hf_tokenizer(path)

    def truncate(texts, length):
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=length).input_ids
        return tokenizer.batch_decode(ids)

    return tokenizer(truncate(queries, lengths[0]), truncate(docs, lengths[1]), padding=True, return_tensors="pt")


def _scores(logits: torch.Tensor, scoring: str) -> np.ndarray:
    if scoring == "mono":
        return torch.log_softmax(logits, dim=-1)[:, 1].numpy()
    return logits[:, 0].numpy()


def _mono_reference(path, queries, docs, scoring="rank", pooling="first", backbone_class=BertModel):
    """Lightning IR's mono by hand: backbone (token types on) → pooling → bert_pool → linear → scoring."""
    weights = load_file(str(path / "model.safetensors"))
    backbone = backbone_class(backbone_class.config_class.from_pretrained(path)).eval()
    own = {k: v for k, v in weights.items() if not k.startswith(("linear.", "bert_pool."))}
    missing, unexpected = backbone.load_state_dict(own, strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing)
    config = json.loads((path / "config.json").read_text())
    batch = _lightning_ir_batch(path, queries, docs, (config["query_length"], config["doc_length"]))
    with torch.no_grad():
        hidden = backbone(**batch).last_hidden_state
        if pooling == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
        else:
            pooled = hidden[:, 0]
        if "bert_pool.0.weight" in weights:
            pooled = torch.tanh(pooled @ weights["bert_pool.0.weight"].T + weights["bert_pool.0.bias"])
        logits = pooled @ weights["linear.weight"].T + weights.get("linear.bias", 0)
    return _scores(logits, scoring)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"scoring": "mono", "linear_bias": True},
        {"bert_pool": True, "linear_bias": True},
        {"pooling": "mean"},
    ],
)
def test_lightning_ir_mono_matches_transformers(tmp_path, options):
    path = cross_builders.lightning_ir_mono_dir(tmp_path / "mono", **options)
    module = CrossEncoderModule(str(path))
    config = module.model.config
    assert (config.query_length, config.doc_length, config.scoring) == (16, 48, options.get("scoring", "rank"))
    expected = _mono_reference(path, QUERIES, DOCS, config.scoring, options.get("pooling", "first"))
    np.testing.assert_allclose(module.score_pairs(QUERIES, DOCS, batch_size=2), expected, atol=1e-5)


def test_pair_encoding_equals_hugging_face_and_truncates_each_text(mono_dir):
    module = CrossEncoderModule(str(mono_dir))
    assert module.model.config.pair_rules().inputs == ("input_ids", "attention_mask", "token_type_ids")
    hf = _hf_tokenizer(mono_dir)
    short = [("what is a cat", "A cat is a small animal."), ("berlin", "Berlin is in Germany.")]
    for (query, doc), (ids, types) in zip(short, module.pairs.encode(*zip(*short, strict=True)), strict=True):
        reference = hf(query, doc)
        assert (ids, types) == (reference.input_ids, reference.token_type_ids)
    ids, types = module.pairs.encode(["word " * 40], ["text " * 100])[0]
    assert len(ids) == 16 + 48 + 3 and types.count(0) == 16 + 2 and ids[17] == 102
    expected = _lightning_ir_batch(mono_dir, ["word " * 40], ["text " * 100], (16, 48))
    assert ids == expected.input_ids[0].tolist()


def test_monoelectra_layout(tmp_path):
    path = cross_builders.monoelectra_dir(tmp_path / "monoelectra")
    loaded = load_cross_encoder(str(path))
    config = loaded.model.config
    assert (loaded.source_format, loaded.backbone_type) == ("lightning-ir", "electra")
    assert (config.query_length, config.doc_length, config.token_types) == (32, 256, [0, 0, 0, 1, 1])
    expected = _mono_reference(path, QUERIES, DOCS, backbone_class=ElectraModel)
    np.testing.assert_allclose(CrossEncoderModule(loaded).score_pairs(QUERIES, DOCS), expected, atol=1e-5)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_sequence_classification_matches_transformers(tmp_path, num_labels):
    from transformers import AutoModelForSequenceClassification

    if num_labels == 1:
        path = cross_builders.hf_sequence_classification_dir(tmp_path / "ms-marco")
    else:
        path = cross_builders.castorini_monobert_dir(tmp_path / "monobert")
    module = CrossEncoderModule(str(path))
    config = module.model.config
    assert config.scoring == ("rank" if num_labels == 1 else "mono")
    assert (config.query_length, config.doc_length, config.max_length) == (509, 509, 512)  # the pair is cut
    reference = AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = _hf_tokenizer(path)(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = _scores(reference(**batch).logits, config.scoring)
    np.testing.assert_allclose(module.score_pairs(QUERIES, DOCS), expected, atol=1e-5)


def test_sequence_classification_lengths_follow_the_tokenizer(tmp_path):
    path = cross_builders.hf_sequence_classification_dir(tmp_path / "short", max_length=256)
    loaded = load_cross_encoder(str(path))
    config = loaded.model.config
    assert (config.query_length, config.doc_length, config.max_length) == (253, 253, 256)
    tokenizer = _hf_tokenizer(path)  # sentence-transformers' CrossEncoder: the whole pair, longest first
    pairs = PairEncoder(loaded.tokenizer, config.rules("query"), config.rules("doc"), config.pair_rules(), 0)
    for query_words, doc_words in ((5, 400), (300, 10), (200, 200), (129, 128), (40, 40)):
        query, doc = " ".join(["vitamin"] * query_words), " ".join(["deficiency risk"] * doc_words)
        expected = tokenizer(query, doc, truncation="longest_first", max_length=256).input_ids
        assert [ids for ids, _ in pairs.encode([query], [doc])] == [expected]


def _set_reference(model: SetEncoderModel, feeds: dict[str, np.ndarray], index: int) -> np.ndarray:
    """The set-encoder the slow way: each sequence without its padding, one at a time, its keys and values
    built explicitly from its own states and the interaction-token states of the other members of its group
    (transformers' own attention module, called as cross-attention)."""
    backbone = model.backbone
    lengths = feeds["attention_mask"].sum(1)
    hidden = [
        backbone.embeddings(
            input_ids=torch.from_numpy(feeds["input_ids"][i : i + 1, :n]),
            token_type_ids=torch.from_numpy(feeds["token_type_ids"][i : i + 1, :n]),
        )
        for i, n in enumerate(lengths)
    ]
    groups = feeds["groups"].tolist()
    for layer in backbone.encoder.layer:
        updated = []
        for i, states in enumerate(hidden):
            others = [hidden[j][:, index] for j in range(len(hidden)) if j != i and groups[j] == groups[i]]
            keys = torch.cat([states, *[o[:, None] for o in others]], dim=1)
            context = layer.attention.self(states, encoder_hidden_states=keys)[0]
            attended = layer.attention.output(context, states)
            updated.append(layer.output(layer.intermediate(attended), attended))
        hidden = updated
    pooled = torch.cat([states[:, 0] for states in hidden])
    return model.head(pooled)[:, 0].numpy()


def _set_feeds(module: CrossEncoderModule, queries, docs, groups) -> dict[str, np.ndarray]:
    feeds = module.pairs.batch(module.pairs.encode(queries, docs))
    return feeds | {"groups": np.asarray(groups, np.int64)}


SET_QUERIES = [QUERIES[0]] * 3 + [QUERIES[1]] * 2
SET_DOCS = [DOCS[0], DOCS[1], DOCS[2], DOCS[1], "Dogs bark."]
SET_GROUPS = [7, 7, 7, 3, 3]


@pytest.mark.parametrize("extra_token", [False, True])
def test_set_encoder_matches_slow_reference(tmp_path, set_dir, extra_token):
    path = cross_builders.lightning_ir_set_encoder_dir(tmp_path / "int", True) if extra_token else set_dir
    module = CrossEncoderModule(str(path))
    assert isinstance(module.model, SetEncoderModel) and module.listwise
    assert module.model.config.pair_rules().inputs == ("input_ids", "attention_mask", "token_type_ids", "groups")
    if extra_token:
        assert module.model.config.template[:2] == ["[CLS]", "[INT]"]
        assert module.pairs.encode(["a"], ["b"])[0][0][:2] == [101, 30522]
    feeds = _set_feeds(module, SET_QUERIES, SET_DOCS, SET_GROUPS)
    with torch.no_grad():
        expected = _set_reference(module.model, feeds, int(extra_token))
    np.testing.assert_allclose(module.forward_batch(feeds).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(module.score_pairs(SET_QUERIES, SET_DOCS, SET_GROUPS), expected, atol=1e-5)


def test_set_encoder_order_groups_and_single_candidates(set_dir):
    module = CrossEncoderModule(str(set_dir))
    scores = module.score_pairs(SET_QUERIES, SET_DOCS, SET_GROUPS)
    order = [4, 2, 0, 3, 1]
    permuted = module.score_pairs(
        [SET_QUERIES[i] for i in order], [SET_DOCS[i] for i in order], [SET_GROUPS[i] for i in order]
    )
    np.testing.assert_allclose(permuted, scores[order], atol=1e-6)
    alone = module.score_pairs(SET_QUERIES[:3], SET_DOCS[:3], [0, 0, 0])
    np.testing.assert_allclose(alone, scores[:3], atol=1e-6)  # group 3 in the same batch changes nothing
    by_query = module.score_pairs(SET_QUERIES, SET_DOCS, batch_size=3)  # default groups: one per query
    np.testing.assert_allclose(by_query, scores, atol=1e-6)
    singles = module.score_pairs(SET_QUERIES, SET_DOCS, list(range(5)))
    model = module.model
    mono = CrossEncoderModel(model.backbone, model.config, model.head)
    feeds = module.pairs.batch(module.pairs.encode(SET_QUERIES, SET_DOCS))
    with torch.no_grad():
        plain = mono(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
    np.testing.assert_allclose(singles, plain, atol=1e-5)
    assert np.abs(singles - scores).max() > 1e-4  # the candidates do see each other


def test_set_encoder_needs_groups(set_dir):
    module = CrossEncoderModule(str(set_dir))
    feeds = module.pairs.batch(module.pairs.encode(QUERIES, DOCS))
    with pytest.raises(LirError, match="pass groups"):
        module.forward_batch(feeds)


def test_minilm_cross_encoder_matches_reference(tmp_path):
    path = cross_builders.minilm_cross_encoder_dir(tmp_path / "minilm-mono")
    module = CrossEncoderModule(str(path))
    assert (module.model.config.query_length, module.model.config.doc_length) == (32, 256)
    np.testing.assert_allclose(module.score_pairs(QUERIES, DOCS), _mono_reference(path, QUERIES, DOCS), atol=1e-4)


def test_load_model_dispatches_on_the_files(mono_dir, dpr_dir):
    assert is_cross_encoder_checkpoint(mono_dir) and not is_cross_encoder_checkpoint(dpr_dir)
    assert isinstance(load_model(str(mono_dir)), LoadedCrossEncoder)
    assert isinstance(load_model(str(dpr_dir)), LoadedBiEncoder)
    with pytest.raises(LirError, match="is a cross-encoder .*load_model or load_cross_encoder"):
        load_bi_encoder(str(mono_dir))
    with pytest.raises(LirError, match="not a cross-encoder"):
        load_cross_encoder(str(dpr_dir))


def _copy(source, target):
    shutil.copytree(source, target)
    return target


def test_pickle_only_checkpoint_is_refused(tmp_path, mono_dir):
    path = _copy(mono_dir, tmp_path / "pickled")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(LirError, match="safetensors alone"):
        load_cross_encoder(str(path))


def test_missing_and_unknown_head_tensors(tmp_path, mono_dir):
    path = _copy(mono_dir, tmp_path / "headless")
    weights = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "linear.weight"}, str(path / "model.safetensors"))
    with pytest.raises(LirError, match="lack linear.weight"):
        load_cross_encoder(str(path))
    save_file(weights | {"extra.weight": torch.zeros(2)}, str(path / "model.safetensors"))
    with pytest.raises(LirError, match="belong to nothing"):
        load_cross_encoder(str(path))


def test_head_size_must_fit_the_scoring(tmp_path, mono_dir):
    path = _copy(mono_dir, tmp_path / "mismatch")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"scoring_strategy": "mono"}))
    with pytest.raises(LirError, match=f"{path}: scoring 'mono' needs 2 logits"):
        load_cross_encoder(str(path))


def test_three_labels_are_refused(tmp_path):
    path = cross_builders.hf_sequence_classification_dir(tmp_path / "three", num_labels=3)
    with pytest.raises(LirError, match="3 labels"):
        load_cross_encoder(str(path))
