"""Sparse (SPLADE) checkpoint loaders (Lightning IR's layouts, naver's BertForMaskedLM), against hand-written
references: transformers' BertForMaskedLM, log(1 + ReLU) and max pooling written out; nothing of lir is used
to compute them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from lir.train import BiEncoderModule
from tests import builders
from tests.loader_checks import DOCS, QUERY, bert_tokenizer, one_line_error, variant

# --- references -------------------------------------------------------------------------------------


def _masked_lm(path: Path, renames: dict[str, str]) -> BertForMaskedLM:
    """BertForMaskedLM holding a checkpoint's weights, its head tensors renamed to Hugging Face's names."""
    weights = load_file(str(path / "model.safetensors"))
    state = {}
    for key, value in weights.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key if key.startswith(("bert.", "cls.")) else f"bert.{key}"] = value
    model = BertForMaskedLM(BertConfig.from_pretrained(path)).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"} and not unexpected
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight  # tied
    return model


LIGHTNING_IR_HEAD = {
    "projection.dense": "cls.predictions.transform.dense",
    "projection.norm": "cls.predictions.transform.LayerNorm",
    "projection.LayerNorm": "cls.predictions.transform.LayerNorm",
    "projection.decoder.bias": "cls.predictions.bias",
    "projection.bias": "cls.predictions.bias",
}


def _splade_reference(model: BertForMaskedLM, path: Path, texts: list[str], length: int) -> torch.Tensor:
    """SPLADE: MLM logits → log(1 + ReLU) → max over all tokens ([CLS]/[SEP] included)."""
    tokenizer = bert_tokenizer(path)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=length, return_tensors="pt")["input_ids"]
            rows.append(torch.log1p(torch.relu(model(input_ids=ids).logits[0])).max(dim=0).values)
    return torch.stack(rows)


def _dense(sparse) -> np.ndarray:
    out = np.zeros((len(sparse.offsets) - 1, sparse.dim), np.float32)
    for row in range(len(out)):
        start, end = sparse.offsets[row], sparse.offsets[row + 1]
        out[row, sparse.term_ids[start:end]] = sparse.weights[start:end]
    return out


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory) -> Path:
    return builders.lightning_ir_splade_dir(tmp_path_factory.mktemp("late") / "splade")


# --- SPLADE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["current", "layernorm", "maskedlm"])
def test_lightning_ir_splade_layouts_match_masked_lm(tmp_path, layout):
    path = builders.lightning_ir_splade_dir(tmp_path / layout, layout)
    module = BiEncoderModule(str(path))
    assert module.family == "sparse" and module.model.embedding_dim == 30522
    assert (module.model.config.query_length, module.model.config.doc_length) == (16, 48)
    model = _masked_lm(path, LIGHTNING_IR_HEAD)
    docs = _splade_reference(model, path, DOCS, 48)
    np.testing.assert_allclose(_dense(module.encode(DOCS, "doc")), docs.numpy(), atol=1e-5)
    query = _splade_reference(model, path, [QUERY], 16)
    np.testing.assert_allclose(_dense(module.encode([QUERY], "query")), query.numpy(), atol=1e-5)
    np.testing.assert_allclose(module.score(QUERY, DOCS).scores.numpy(), (query @ docs.T)[0].numpy(), rtol=1e-5)
    assert len(module.tokenize(DOCS, "doc")[2]) == 48


def test_naver_splade_matches_transformers(tmp_path):
    path = builders.naver_splade_dir(tmp_path / "naver")
    module = BiEncoderModule(str(path))
    assert module.family == "sparse" and module.loaded.source_format == "huggingface"
    assert (module.model.config.query_length, module.model.config.doc_length) == (32, 512)
    model = BertForMaskedLM.from_pretrained(path).eval()
    docs = _splade_reference(model, path, DOCS, 512)
    np.testing.assert_allclose(_dense(module.encode(DOCS, "doc")), docs.numpy(), atol=1e-5)
    query = _splade_reference(model, path, [QUERY], 32)
    np.testing.assert_allclose(module.score(QUERY, DOCS).scores.numpy(), (query @ docs.T)[0].numpy(), rtol=1e-5)


def test_splade_refusals(tmp_path, splade_dir):
    one_line_error(variant(splade_dir, tmp_path / "a", weights={"projection.norm.weight": None}), "lack an MLM head")
    one_line_error(
        variant(splade_dir, tmp_path / "b", weights={"projection.decoder.bias": None}), "lack projection.decoder.bias"
    )
    one_line_error(
        variant(splade_dir, tmp_path / "c", weights={"extra.weight": torch.zeros(2)}), "belong to nothing lir knows"
    )
    one_line_error(variant(splade_dir, tmp_path / "d", config={"pooling_strategy": "cls"}), "pooling 'cls'")
    one_line_error(variant(splade_dir, tmp_path / "e", config={"sparsification_strategy": "softplus"}), "'softplus'")
    static = {"query_weighting": "static", "query_expansion": False}  # without its table
    one_line_error(variant(splade_dir, tmp_path / "g", config=static), "lack query_weights.weight")
    one_line_error(variant(splade_dir, tmp_path / "h", config={"query_weighting": "idf"}), "'idf'")
    untied = torch.randn(30522, 32)
    path = variant(splade_dir, tmp_path / "f", weights={"projection.decoder.weight": untied})
    one_line_error(path, "differs from the word embeddings")


# --- the real MiniLM backbone -----------------------------------------------------------------------


def test_minilm_splade_matches_reference_and_is_sparse(tmp_path, scifact):
    path = builders.minilm_splade_dir(tmp_path / "splade")
    module = BiEncoderModule(str(path))
    docs = [json.loads(line)["text"] for line in (scifact / "corpus.jsonl").read_text().splitlines()[:2]]
    query = json.loads((scifact / "queries.jsonl").read_text().splitlines()[0])["text"]
    encoded = module.encode(docs, "doc")
    expected = _splade_reference(_masked_lm(path, LIGHTNING_IR_HEAD), path, docs, 256)
    np.testing.assert_allclose(_dense(encoded), expected.numpy(), atol=1e-4)
    doc_terms, query_terms = np.diff(encoded.offsets), np.diff(module.encode([query], "query").offsets)
    assert all(50 <= n <= 500 for n in doc_terms) and 10 <= query_terms[0] <= 200, (doc_terms, query_terms)
