"""monoT5 / RankT5 cross-encoders against transformers' own T5ForConditionalGeneration and tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import T5ForConditionalGeneration, T5TokenizerFast

from lir.errors import LirError
from lir.files import read_json
from lir.train.checkpoints import load_model
from lir.train.cross_encoder import load_cross_encoder
from lir.train.cross_module import CrossEncoderModule
from lir.train.t5_cross_encoder import T5CrossEncoderModel, load_t5_cross_encoder
from tests.t5_builders import t5_cross_encoder_dir

QUERIES = ["what causes fever in children?", "capital of Germany", "does vitamin D deficiency increase risk?"]
DOCS = [
    "Fever in children is most often caused by a viral infection of the respiratory tract.",
    "Berlin is the capital of Germany.",
    "In a trial of 600 adults, daily vitamin D reduced respiratory infections; the effect was largest in "
    "patients with low blood levels. Adverse effects were rare and did not differ between groups.",
]


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def t5_dir(request, tmp_path_factory):
    return t5_cross_encoder_dir(tmp_path_factory.mktemp("t5") / "monot5", seed=3, tied=request.param)


def _load(path, scoring="mono"):
    return load_t5_cross_encoder(path, read_json(path / "config.json"), str(path), scoring)


def _pairs(loaded):
    return CrossEncoderModule(loaded).pairs


@pytest.mark.parametrize("scoring", ["mono", "rank"])
def test_scores_match_transformers(t5_dir, scoring):
    module = CrossEncoderModule(_load(t5_dir, scoring))
    feeds = module.pairs.batch(module.pairs.encode(QUERIES, DOCS))
    assert set(feeds) == {"input_ids", "attention_mask"} and feeds["attention_mask"].min() == 0  # padded
    input_ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
    with torch.inference_mode():
        ours = module.model(input_ids, mask)
        reference = T5ForConditionalGeneration.from_pretrained(str(t5_dir)).eval()
        start = torch.zeros(len(QUERIES), 1, dtype=torch.long)
        logits = reference(input_ids=input_ids, attention_mask=mask, decoder_input_ids=start).logits[:, 0]
    vocabulary = T5TokenizerFast.from_pretrained(str(t5_dir))
    if scoring == "mono":
        false, true = vocabulary.convert_tokens_to_ids(["▁false", "▁true"])
        expected = torch.log_softmax(logits[:, [false, true]], dim=-1)[:, 1]
    else:
        expected = logits[:, vocabulary.convert_tokens_to_ids("<extra_id_10>")]
    assert ours.dtype == torch.float32 and ours.shape == (len(QUERIES),)
    assert float(ours.max() - ours.min()) > 1e-3  # the pairs score differently
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    alone = module.score_pairs(QUERIES, DOCS, batch_size=1)
    torch.testing.assert_close(ours, torch.from_numpy(alone), atol=1e-5, rtol=0)


@pytest.mark.parametrize("scoring", ["mono", "rank"])
def test_template_matches_whole_string_encoding(t5_dir, scoring):
    loaded = _load(t5_dir, scoring)
    assert loaded.model.config.token_types is None and loaded.pad_token_id == 0
    config = loaded.model.config  # a document never gets more than the pair's room beside the template
    template_tokens = len(_pairs(loaded).encode(["q"], ["d"])[0][0]) - 2
    assert (config.query_length, config.doc_length, config.max_length) == (32, 512 - template_tokens, 512)
    relevant = " Relevant:" if scoring == "mono" else ""
    texts = [f"Query: {q} Document: {d}{relevant}" for q, d in zip(QUERIES, DOCS, strict=True)]
    expected = T5TokenizerFast.from_pretrained(str(t5_dir))(texts).input_ids
    assert all(ids[-1] == 1 for ids in expected)  # </s>
    assert [ids for ids, _ in _pairs(loaded).encode(QUERIES, DOCS)] == expected


def test_truncation_to_config_lengths(tmp_path):
    path = t5_cross_encoder_dir(tmp_path / "short")
    config = read_json(path / "config.json") | {"query_length": 4, "doc_length": 6}
    (path / "config.json").write_text(json.dumps(config))
    loaded = _load(path)
    query, doc = "vitamin deficiency and respiratory infections in children", DOCS[2]
    tokenizer = T5TokenizerFast.from_pretrained(str(path))

    def words(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    expected = words("Query:") + words(query)[:4] + words("Document:") + words(doc)[:6] + words("Relevant:") + [1]
    assert len(words(query)) > 4 and len(words(doc)) > 6
    assert _pairs(loaded).encode([query], [doc])[0][0] == expected


def test_missing_score_token_is_a_clear_error(tmp_path):
    path = t5_cross_encoder_dir(tmp_path / "no-true", drop=("▁true",))
    with pytest.raises(LirError, match="no '▁true' token") as error:
        _load(path, "mono")
    assert "\n" not in str(error.value)
    assert _load(path, "rank").model.config.scoring == "rank"
    with pytest.raises(LirError, match="unknown T5 scoring"):
        _load(path, "pairwise")


@pytest.mark.parametrize(
    ("change", "message"),
    [("drop", "lack 1 of T5's tensors"), ("add", "belong to nothing lir knows"), ("embeddings", "embedding matrix")],
)
def test_weights_that_do_not_fit_are_refused(tmp_path, change, message):
    path = t5_cross_encoder_dir(tmp_path / "broken")
    weights = load_file(str(path / "model.safetensors"))
    if change == "drop":
        del weights["encoder.final_layer_norm.weight"]
    elif change == "add":
        weights["classifier.weight"] = torch.zeros(2, 32)
    else:
        weights = {k: v for k, v in weights.items() if not k.endswith("embed_tokens.weight") and k != "shared.weight"}
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(LirError, match=message):
        _load(path)


def test_loaders_dispatch_t5(tmp_path):
    path = t5_cross_encoder_dir(tmp_path / "monot5-tiny")
    loaded = load_model(str(path))
    assert isinstance(loaded.model, T5CrossEncoderModel) and loaded.model.config.scoring == "mono"
    assert (loaded.source_format, loaded.backbone_type) == ("t5", "t5")
    assert load_cross_encoder(str(path), t5_scoring="rank").model.config.scoring == "rank"
    assert load_model(str(path.rename(tmp_path / "rankt5-tiny"))).model.config.scoring == "rank"
