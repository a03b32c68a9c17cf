"""Multi-vector (ColBERT) checkpoint loaders (Lightning IR col, colbert-ir), against hand-written references.

The references follow the file-level facts of `../shared/reference/checkpoint-formats.md` with plain
transformers and torch: transformers' BertTokenizerFast, BertModel, the projection and the late interaction
written out; nothing of lir is used to compute them.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast

from lir.train import BiEncoderModule, load_bi_encoder
from tests import builders
from tests.loader_checks import DOCS, QUERY, bert_tokenizer, one_line_error, variant

# --- references -------------------------------------------------------------------------------------


def _punctuation(tokenizer: BertTokenizerFast) -> set[int]:
    """ColBERT's skiplist: the ids of the punctuation characters the tokenizer keeps as one token."""
    encoded = [tokenizer.encode(c, add_special_tokens=False) for c in string.punctuation]
    return {ids[0] for ids in encoded if len(ids) == 1}


def _bert(path: Path, prefix: str = "") -> BertModel:
    """The backbone with exactly the checkpoint's backbone tensors (strict load)."""
    weights = load_file(str(path / "model.safetensors"))
    bert = BertModel(BertConfig.from_pretrained(path), add_pooling_layer=False).eval()
    own = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    bert.load_state_dict({k: v for k, v in own.items() if k in bert.state_dict()}, strict=True)
    return bert


def _maxsim(query: torch.Tensor, doc: torch.Tensor, mean: bool) -> float:
    """Late interaction of scored token vectors: best doc token per query token, summed or averaged."""
    best = (query @ doc.T).max(dim=1).values
    return float(best.mean() if mean else best.sum())


def _lightning_ir_col_reference(path: Path, markers: bool = False) -> dict:
    """webis/colbert's semantics: [CLS] (marker) text [SEP], query padded with attended [MASK] to its
    length; doc punctuation unscored; projection without bias, no normalization, mean of maxima."""
    config = json.loads((path / "config.json").read_text())
    q_len, d_len = config["query_length"], config["doc_length"]
    tokenizer = bert_tokenizer(path, markers)
    cls, sep, mask = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
    que, doc_marker = tokenizer.convert_tokens_to_ids(["[QUE]", "[DOC]"]) if markers else (None, None)

    def ids(text: str, length: int, marker: int | None) -> list[int]:
        body = tokenizer.encode(text, add_special_tokens=False)[: length - 2 - (marker is not None)]
        return [cls, *([marker] if marker is not None else []), *body, sep]

    query_ids = ids(QUERY, q_len, que)
    query_ids += [mask] * (q_len - len(query_ids))
    doc_ids = [ids(d, d_len, doc_marker) for d in DOCS]
    bert, projection = _bert(path), load_file(str(path / "model.safetensors"))["projection.weight"]
    skip = _punctuation(tokenizer)
    with torch.no_grad():
        query = bert(input_ids=torch.tensor([query_ids])).last_hidden_state[0] @ projection.T
        docs = []
        for seq in doc_ids:
            vectors = bert(input_ids=torch.tensor([seq])).last_hidden_state[0] @ projection.T
            docs.append(vectors[torch.tensor([t not in skip for t in seq])])
    return {
        "query_ids": query_ids,
        "doc_ids": doc_ids,
        "query": query,
        "docs": docs,
        "scores": [_maxsim(query, d, mean=True) for d in docs],
    }


def _colbert_ir_reference(path: Path) -> dict:
    """ColBERT's own code path (QueryTokenizer, DocTokenizer, ColBERT.query/doc, colbert_score)."""
    meta = json.loads((path / "artifact.metadata").read_text())
    tokenizer = bert_tokenizer(path)
    q_marker, d_marker = tokenizer.convert_tokens_to_ids([meta["query_token_id"], meta["doc_token_id"]])
    q = tokenizer(
        [". " + QUERY], padding="max_length", truncation=True, max_length=meta["query_maxlen"], return_tensors="pt"
    )
    q_ids, q_mask = q["input_ids"], q["attention_mask"]
    q_ids[:, 1] = q_marker
    q_ids[q_ids == tokenizer.pad_token_id] = tokenizer.mask_token_id
    d = tokenizer(
        [". " + x for x in DOCS],
        padding="longest",
        truncation="longest_first",
        max_length=meta["doc_maxlen"],
        return_tensors="pt",
    )
    d_ids, d_mask = d["input_ids"], d["attention_mask"]
    d_ids[:, 1] = d_marker
    skip = _punctuation(tokenizer)
    bert, linear = _bert(path, "bert."), load_file(str(path / "model.safetensors"))["linear.weight"]
    with torch.no_grad():
        query = torch.nn.functional.normalize(bert(q_ids, attention_mask=q_mask).last_hidden_state @ linear.T, dim=-1)
        docs = bert(d_ids, attention_mask=d_mask).last_hidden_state @ linear.T
    d_scored = d_mask.bool() & ~torch.isin(d_ids, torch.tensor(sorted(skip)))
    docs = torch.nn.functional.normalize(docs * d_scored.unsqueeze(-1), dim=-1)
    sims = torch.einsum("qd,ntd->nqt", query[0], docs).masked_fill(~d_scored.unsqueeze(1), -9999)
    return {
        "query_ids": q_ids[0].tolist(),
        "query_attention": q_mask[0].tolist(),
        "doc_ids": [row[m.bool()].tolist() for row, m in zip(d_ids, d_mask, strict=True)],
        "query": query[0],
        "docs": [v[m] for v, m in zip(docs, d_scored, strict=True)],
        "scores": sims.max(dim=-1).values.sum(-1).tolist(),
    }


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def col_dir(tmp_path_factory) -> Path:
    return builders.lightning_ir_col_dir(tmp_path_factory.mktemp("late") / "col")


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory) -> Path:
    return builders.colbert_ir_dir(tmp_path_factory.mktemp("late") / "colbert-ir")


# --- Lightning IR col -------------------------------------------------------------------------------


def _check_multi_vector(module: BiEncoderModule, reference: dict) -> None:
    assert module.tokenize([QUERY], "query")[0] == reference["query_ids"]
    assert module.tokenize(DOCS, "doc") == reference["doc_ids"]
    query = module.encode([QUERY], "query")
    np.testing.assert_allclose(query[0], reference["query"].numpy(), atol=1e-5)
    docs = module.encode(DOCS, "doc")
    for i, expected in enumerate(reference["docs"]):
        np.testing.assert_allclose(docs[i], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(module.score(QUERY, DOCS).scores.numpy(), reference["scores"], rtol=1e-5, atol=1e-5)


def test_lightning_ir_col_matches_webis_colbert_semantics(col_dir):
    module = BiEncoderModule(str(col_dir))
    assert module.family == "multi-vector" and module.loaded.source_format == "lightning-ir"
    config = module.model.config
    assert (config.similarity, config.normalize, config.aggregation) == ("dot", False, "mean")
    assert (config.query_length, config.doc_length, module.model.embedding_dim) == (16, 48, 16)
    assert module.model.projection.bias is None
    reference = _lightning_ir_col_reference(col_dir)
    _check_multi_vector(module, reference)
    # the long document is cut at 48 tokens and ends with [SEP]; its punctuation is not scored
    long_doc = module.tokenize(DOCS, "doc")[2]
    assert len(long_doc) == 48 and long_doc[-1] == 102
    scored = module.encode(DOCS, "doc").lengths
    assert scored[2] == 48 - sum(t in (1006, 1007, 1012) for t in long_doc) < 48
    # expansion: [MASK] up to 16 tokens, attended and scored; a long query has none
    ids, attention = module.encoders["query"].batch(module.tokenize([QUERY], "query"))
    assert ids[0].tolist().count(103) == 16 - len(bert_tokenizer(col_dir)(QUERY)["input_ids"]) and attention.all()
    assert module.encode([QUERY], "query").lengths.tolist() == [16]
    long_query = module.tokenize(["word " * 100], "query")[0]
    assert len(long_query) == 16 and long_query[-1] == 102 and 103 not in long_query


def test_lightning_ir_col_old_keys_side_file_and_markers(tmp_path):
    path = builders.lightning_ir_col_dir(tmp_path / "old", old_keys=True, markers=True, side_file=True)
    config = json.loads((path / "config.json").read_text())
    assert "doc_mask_scoring_tokens" not in config and "normalization_strategy" not in config
    module = BiEncoderModule(str(path))
    assert module.tokenize([QUERY], "query")[0][:2] == [101, 30522]
    assert module.tokenize(DOCS, "doc")[0][:2] == [101, 30523]
    _check_multi_vector(module, _lightning_ir_col_reference(path, markers=True))


def test_lightning_ir_col_settings_from_the_config(tmp_path, col_dir):
    path = variant(
        col_dir,
        tmp_path / "variant",
        config={
            "query_expansion": False,
            "query_mask_scoring_tokens": ["[CLS]", "?"],
            "doc_mask_scoring_tokens": None,
            "normalization_strategy": "l2",
            "query_aggregation_function": "sum",
            "similarity_function": "cosine",
        },
    )
    module = BiEncoderModule(str(path))
    config = module.model.config
    assert (config.query_unscored_ids, config.doc_unscored_ids) == ([101, 1029], [])
    assert (config.normalize, config.aggregation, config.similarity) == (True, "sum", "cosine")
    query_ids = module.tokenize([QUERY], "query")[0]
    assert 103 not in query_ids and module.encode([QUERY], "query").lengths.tolist() == [len(query_ids) - 2]
    assert module.encode(DOCS, "doc").lengths.tolist() == [len(ids) for ids in module.tokenize(DOCS, "doc")]


def test_old_bi_encoder_without_pooling_is_multi_vector(tmp_path, col_dir):
    path = variant(col_dir, tmp_path / "old", config={"model_type": "bi-encoder", "pooling_strategy": None})
    assert load_bi_encoder(str(path)).model.family == "multi-vector"


# --- colbert-ir -------------------------------------------------------------------------------------


def test_colbert_ir_layout_matches_colbert(colbert_dir):
    module = BiEncoderModule(str(colbert_dir))
    assert module.family == "multi-vector" and module.loaded.source_format == "colbert"
    config = module.model.config
    assert (config.normalize, config.aggregation, config.attend_to_query_expansion) == (True, "sum", False)
    assert (config.query_length, config.doc_length) == (16, 40)
    reference = _colbert_ir_reference(colbert_dir)
    _check_multi_vector(module, reference)
    ids, attention = module.encoders["query"].batch(module.tokenize([QUERY], "query"))
    assert ids[0, :2].tolist() == [101, 1] and module.tokenize(DOCS, "doc")[0][:2] == [101, 2]
    assert attention[0].tolist() == reference["query_attention"] and 0 in reference["query_attention"]
    _, scoring = module.forward_batch(ids, attention, "query")
    assert scoring.all()  # unattended [MASK] tokens still score
    assert len(module.tokenize(DOCS, "doc")[2]) == 40


def test_colbert_ir_defaults_without_metadata(tmp_path, colbert_dir):
    path = tmp_path / "bare"
    shutil.copytree(colbert_dir, path)
    (path / "artifact.metadata").unlink()
    config = load_bi_encoder(str(path)).model.config
    assert (config.query_length, config.doc_length, config.query_marker, config.doc_marker) == (
        32,
        180,
        "[unused0]",
        "[unused1]",
    )
    assert config.attend_to_query_expansion is False and config.doc_unscored_ids


def test_colbert_ir_refusals(tmp_path, colbert_dir):
    path = variant(colbert_dir, tmp_path / "no-linear", weights={"linear.weight": None})
    one_line_error(path, "lack linear.weight")
    path = tmp_path / "l2"
    shutil.copytree(colbert_dir, path)
    meta = json.loads((path / "artifact.metadata").read_text())
    (path / "artifact.metadata").write_text(json.dumps(meta | {"similarity": "l2"}))
    one_line_error(path, "similarity 'l2' is not supported")
    (path / "artifact.metadata").write_text(json.dumps(meta | {"dim": 128}))
    one_line_error(path, "dim 128")


def test_col_refusals(tmp_path, col_dir):
    one_line_error(variant(col_dir, tmp_path / "a", weights={"projection.weight": None}), "lack projection.weight")
    one_line_error(
        variant(col_dir, tmp_path / "b", weights={"extra.weight": torch.zeros(2)}), "belong to nothing lir knows"
    )
    one_line_error(
        variant(col_dir, tmp_path / "c", config={"query_aggregation_function": "harmonic_mean"}),
        "unknown aggregation 'harmonic_mean'",
    )
    one_line_error(variant(col_dir, tmp_path / "d", config={"embedding_dim": 128}), "embedding_dim 128")
    one_line_error(variant(col_dir, tmp_path / "e", config={"similarity_function": "l2"}), "similarity 'l2'")
    one_line_error(
        variant(col_dir, tmp_path / "f", config={"doc_mask_scoring_tokens": ["zzyzx"]}), "not a single token"
    )
    one_line_error(variant(col_dir, tmp_path / "g", config={"model_type": "mono"}), "is a cross-encoder")
    one_line_error(variant(col_dir, tmp_path / "h", config={"model_type": "coil"}), "query_expansion .* COIL")


# --- the real MiniLM backbone -----------------------------------------------------------------------


def test_minilm_colbert_matches_reference(tmp_path):
    path = builders.minilm_colbert_dir(tmp_path / "colbert")
    module = BiEncoderModule(str(path))
    config = module.model.config
    assert (config.query_length, config.doc_length, module.model.embedding_dim) == (32, 256, 128)
    reference = _lightning_ir_col_reference(path)
    minilm = BertModel.from_pretrained(builders.minilm_dir(), add_pooling_layer=False).eval()
    with torch.no_grad():  # the backbone the builder copied is all-MiniLM-L6-v2's
        ids = torch.tensor([reference["query_ids"]])
        projection = load_file(str(path / "model.safetensors"))["projection.weight"]
        expected = minilm(input_ids=ids).last_hidden_state[0] @ projection.T
    np.testing.assert_allclose(reference["query"].numpy(), expected.numpy(), atol=1e-5)
    _check_multi_vector(module, reference)
