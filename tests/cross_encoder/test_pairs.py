"""Cross-encoder pairs in the torch-free core: pair rules in the manifest and the pair encoder."""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer

from lir.errors import LirError
from lir.manifest import Manifest, PairRules, TextRules
from lir.tokenization import PairEncoder, pair_template
from tests.builders import minilm_dir

BERT = ["[CLS]", "{query}", "[SEP]", "{doc}", "[SEP]"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))


def cross_manifest(listwise: bool = False) -> dict:
    inputs = ["input_ids", "attention_mask", "token_type_ids"] + (["groups"] if listwise else [])
    tensor = {"dtype": "int64", "shape": ["batch", "sequence"]}
    variant = {"file": "scorer.onnx", "sha256": "0" * 64, "max_abs_diff": 0.0, "agreement": 1.0, "measure": "Pearson r"}
    return {
        "name": "mono",
        "family": "cross-encoder",
        "similarity": None,
        "embedding_dim": None,
        "normalized": False,
        "tokenizer": {"file": "tokenizer.json", "pad_token_id": 0},
        "query": {"max_length": 32},
        "doc": {"max_length": 256},
        "encoders": {},
        "graphs": {
            "scorer": {
                "inputs": [{"name": name} | tensor for name in inputs],
                "outputs": [{"name": "scores", "dtype": "float32", "shape": ["batch"]}],
                "variants": {"fp32": variant},
            }
        },
        "scorer": "scorer",
        "pair": {"template": BERT, "token_types": [0, 0, 0, 1, 1], "listwise": listwise},
        "format": "lir-model",
        "format_version": 2,
    }


def test_cross_encoder_manifest_round_trip_and_fingerprint():
    for listwise in (False, True):
        manifest = Manifest.from_dict(cross_manifest(listwise))
        assert manifest.is_cross_encoder and manifest.pair.listwise is listwise
        assert Manifest.from_dict(manifest.to_dict()) == manifest
        assert manifest.fingerprint == {"model": "mono", "doc_encoder_sha256": "0" * 64}
        with pytest.raises(LirError, match="scores \\(query, document\\) pairs"):
            manifest.encoder("doc")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("pair"), "needs pair rules"),
        (lambda d: d["pair"].update(template=["[CLS]", "{query}", "[SEP]"]), "{doc} exactly once"),
        (lambda d: d["pair"].update(token_types=[0, 1]), "0 or 1 for each template part"),
        (lambda d: d.update(similarity="dot"), "no encoders, similarity"),
        (lambda d: d.update(scorer="nope"), "names no graph"),
        (lambda d: d["pair"].update(listwise=True), "must take input_ids, attention_mask, token_type_ids, groups"),
        (lambda d: d["query"].update(marker="[Q]"), "take no marker"),
    ],
)
def test_cross_encoder_manifest_validation(change, message):
    data = copy.deepcopy(cross_manifest())
    change(data)
    with pytest.raises(LirError, match=message):
        Manifest.from_dict(data)


def test_bi_encoders_refuse_pair_rules(tiny_export):
    from lir.manifest import load_manifest

    data = load_manifest(tiny_export).to_dict() | {"pair": {"template": BERT}}
    with pytest.raises(LirError, match="only cross-encoders have pair rules"):
        Manifest.from_dict(data)


def test_pair_template_of_a_bert_tokenizer(tokenizer):
    assert pair_template(tokenizer) == (BERT, [0, 0, 0, 1, 1])


def test_pair_encoder_equals_the_tokenizers_pair_encoding_and_truncates_each_side(tokenizer):
    encoder = PairEncoder(tokenizer, TextRules(6), TextRules(8), PairRules(BERT, [0, 0, 0, 1, 1]), 0)
    reference = Tokenizer.from_str(tokenizer.to_str())
    reference.no_padding()
    short = reference.encode("what is a flea", "a flea is an insect")
    (ids, types), (long_ids, long_types) = encoder.encode(
        ["what is a flea", "one two three four five six seven eight"],
        ["a flea is an insect", "alpha beta gamma delta epsilon zeta eta theta iota kappa"],
    )
    assert ids == short.ids and types == short.type_ids
    query = reference.encode("one two three four five six", add_special_tokens=False).ids
    doc = reference.encode("alpha beta gamma delta epsilon zeta eta theta", add_special_tokens=False).ids
    assert long_ids[1:7] == query[:6] and long_ids[8:-1] == doc[:8] and len(long_ids) == 6 + 8 + 3
    assert long_types == [0] * 8 + [1] * 9
    feeds = encoder.batch([(ids, types), (long_ids, long_types)])
    assert sorted(feeds) == ["attention_mask", "input_ids", "token_type_ids"]
    assert feeds["input_ids"].shape == (2, len(long_ids)) and feeds["attention_mask"][0].sum() == len(ids)


def test_pair_encoder_errors(tokenizer):
    encoder = PairEncoder(tokenizer, TextRules(6), TextRules(8), PairRules(BERT, None), 0)
    with pytest.raises(LirError, match="query #0 is empty"):
        encoder.encode([" "], ["doc"])
    with pytest.raises(LirError, match="2 queries for 1 documents"):
        encoder.encode(["a", "b"], ["doc"])
    with pytest.raises(LirError, match="not valid UTF-8"):
        encoder.encode(["a"], [b"\xff"])
    assert "token_type_ids" not in encoder.batch(encoder.encode(["a"], ["b"]))
