"""Checkpoint loaders in each layout, against independent references."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import BertModel

from lir.errors import LirError
from lir.train import BiEncoderModule, load_bi_encoder
from tests import builders

TEXTS = ["What is the capital of Germany?", "Berlin is the capital of Germany. " * 30, "Paris."]


def test_sentence_transformers_layout_matches_sentence_transformers(st_dir):
    from sentence_transformers import SentenceTransformer

    ours = BiEncoderModule(str(st_dir))
    config = ours.model.config
    assert (config.pooling, config.normalize, config.similarity, config.doc_length) == ("mean", True, "cosine", 64)
    assert ours.model.embedding_dim == 16
    reference = SentenceTransformer(str(st_dir), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours.encode(TEXTS, "doc"), reference, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_sentence_transformers_poolings(tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    path = builders.sentence_transformers_dir(tmp_path / "st", dense=False, normalize=False, pooling=pooling)
    ours = BiEncoderModule(str(path)).encode(TEXTS, "doc")
    reference = SentenceTransformer(str(path), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_real_minilm_matches_sentence_transformers(scifact):
    from sentence_transformers import SentenceTransformer

    texts = [json.loads(line)["text"] for line in (scifact / "corpus.jsonl").read_text().splitlines()[:8]]
    ours = BiEncoderModule("sentence-transformers/all-MiniLM-L6-v2")
    reference = SentenceTransformer(str(builders.minilm_dir()), device="cpu").encode(texts)
    np.testing.assert_allclose(ours.encode(texts, "doc"), reference, atol=1e-5)


def _dpr_reference(path, texts, role_length, normalize=False):
    """Lightning IR's DPR computed by hand: BERT → masked mean → linear projection."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertTokenizerFast

    config = BertConfig.from_pretrained(path)
    bert = BertModel(config, add_pooling_layer=False).eval()
    weights = load_file(str(path / "model.safetensors"))
    bert.load_state_dict({k: v for k, v in weights.items() if not k.startswith("projection")}, strict=False)
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    batch = tokenizer(texts, truncation=True, max_length=role_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out = pooled @ weights["projection.weight"].T + weights["projection.bias"]
        return torch.nn.functional.normalize(out, dim=-1).numpy() if normalize else out.numpy()


def test_lightning_ir_dpr_current_keys(dpr_dir):
    module = BiEncoderModule(str(dpr_dir))
    config = module.model.config
    assert (config.pooling, config.similarity, config.normalize) == ("mean", "dot", False)
    assert (config.query_length, config.doc_length, module.model.embedding_dim) == (16, 48, 24)
    np.testing.assert_allclose(module.encode(TEXTS, "doc"), _dpr_reference(dpr_dir, TEXTS, 48), atol=1e-5)
    np.testing.assert_allclose(module.encode(TEXTS, "query"), _dpr_reference(dpr_dir, TEXTS, 16), atol=1e-5)
    scores = module.score(TEXTS[0], TEXTS[1:]).scores
    assert scores.shape == (2,)


def test_lightning_ir_dpr_old_keys_and_vocab_only_tokenizer(tmp_path):
    path = builders.lightning_ir_dpr_dir(tmp_path / "old", old_keys=True)
    assert not (path / "tokenizer.json").exists()
    module = BiEncoderModule(str(path))
    assert (module.model.config.pooling, module.model.config.normalize) == ("mean", True)
    expected = _dpr_reference(path, TEXTS, 48, normalize=True)
    np.testing.assert_allclose(module.encode(TEXTS, "doc"), expected, atol=1e-5)


def test_lightning_ir_marker_tokens_follow_cls(tmp_path):
    path = builders.lightning_ir_dpr_dir(tmp_path / "markers", markers=True)
    module = BiEncoderModule(str(path))
    query, doc = module.tokenize(["hello world"], "query")[0], module.tokenize(["hello world"], "doc")[0]
    assert query[:2] == [101, 30522] and doc[:2] == [101, 30523]
    long = module.tokenize(["word " * 100], "query")[0]
    assert len(long) == 16 and long[-1] == 102


def test_hub_id_resolves_through_the_cache(tmp_path, dpr_dir):
    cache = builders.hf_cache(tmp_path / "hub", "webis/bert-bi-encoder", dpr_dir)
    env = os.environ | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    code = "from lir.train import load_bi_encoder; print(load_bi_encoder('webis/bert-bi-encoder').source_format)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "lightning-ir"


def test_hub_id_not_cached_is_one_clear_line(tmp_path):
    env = os.environ | {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lir.export.cli",
            "--model",
            "webis/colbert-nowhere",
            "--output",
            str(tmp_path / "repo"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    error = done.stderr.splitlines()[-1]
    assert error.startswith("lir-export: error:") and "nor in the Hugging Face cache" in error
    assert not (tmp_path / "repo").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(LirError, match="does not exist"):
        load_bi_encoder(str(tmp_path / "nothing-here"))


def test_unknown_and_later_model_types(tmp_path, dpr_dir):
    import shutil

    for model_type, message in (
        ("zebra", "unknown Lightning IR model type"),
        ("mono", "is a cross-encoder"),
        ("coil", "lack token_projection.weight"),
    ):
        path = tmp_path / model_type
        shutil.copytree(dpr_dir, path)
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps(config | {"model_type": model_type}))
        with pytest.raises(LirError, match=message):
            load_bi_encoder(str(path))


def test_corrupt_weights_file(tmp_path, dpr_dir):
    import shutil

    path = tmp_path / "corrupt"
    shutil.copytree(dpr_dir, path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LirError, match="corrupt or truncated"):
        load_bi_encoder(str(path))


def test_pickle_weights_are_refused(tmp_path, dpr_dir):
    import shutil

    path = tmp_path / "pickled"
    shutil.copytree(dpr_dir, path)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(LirError, match="safetensors alone"):
        load_bi_encoder(str(path))


def test_weights_of_another_model_are_refused(tmp_path, dpr_dir):
    import shutil

    path = tmp_path / "other"
    shutil.copytree(dpr_dir, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(LirError, match="lack"):
        load_bi_encoder(str(path))
