"""Multi-vector (ColBERT) and sparse (SPLADE) checkpoint loaders, against hand-written references.

The references follow the file-level facts of `../shared/reference/checkpoint-formats.md` with plain
transformers and torch: transformers' BertTokenizerFast, BertModel / BertForMaskedLM, the projection and
the late interaction or max pooling written out; nothing of lir is used to compute them.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

from lir.errors import LirError
from lir.train import BiEncoderModule, load_bi_encoder
from tests import builders

QUERY = "What is the capital of Germany?"
DOCS = ["Berlin is the capital of Germany; it has 3.7 million inhabitants!", "Paris.", "Berlin (Germany). " * 30]


# --- references -------------------------------------------------------------------------------------


def _tokenizer(path: Path, markers: bool = False) -> BertTokenizerFast:
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    if markers:
        tokenizer.add_tokens(["[QUE]", "[DOC]"], special_tokens=True)
    return tokenizer


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
    tokenizer = _tokenizer(path, markers)
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
    tokenizer = _tokenizer(path)
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
    tokenizer = _tokenizer(path)
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
def col_dir(tmp_path_factory) -> Path:
    return builders.lightning_ir_col_dir(tmp_path_factory.mktemp("late") / "col")


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory) -> Path:
    return builders.colbert_ir_dir(tmp_path_factory.mktemp("late") / "colbert-ir")


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory) -> Path:
    return builders.lightning_ir_splade_dir(tmp_path_factory.mktemp("late") / "splade")


def _variant(source: Path, target: Path, config: dict | None = None, weights: dict | None = None) -> Path:
    """A copy of `source` with config fields replaced and tensors replaced (None: removed)."""
    shutil.copytree(source, target)
    if config:
        data = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps(data | config))
    if weights:
        tensors = load_file(str(target / "model.safetensors"))
        for name, value in weights.items():
            if value is None:
                del tensors[name]
            else:
                tensors[name] = value
        save_file(tensors, str(target / "model.safetensors"))
    return target


def _one_line_error(path: Path, match: str) -> None:
    with pytest.raises(LirError, match=match) as caught:
        load_bi_encoder(str(path))
    assert "\n" not in str(caught.value)


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
    assert ids[0].tolist().count(103) == 16 - len(_tokenizer(col_dir)(QUERY)["input_ids"]) and attention.all()
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
    path = _variant(
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
    path = _variant(col_dir, tmp_path / "old", config={"model_type": "bi-encoder", "pooling_strategy": None})
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
    path = _variant(colbert_dir, tmp_path / "no-linear", weights={"linear.weight": None})
    _one_line_error(path, "lack linear.weight")
    path = tmp_path / "l2"
    shutil.copytree(colbert_dir, path)
    meta = json.loads((path / "artifact.metadata").read_text())
    (path / "artifact.metadata").write_text(json.dumps(meta | {"similarity": "l2"}))
    _one_line_error(path, "similarity 'l2' is not supported")
    (path / "artifact.metadata").write_text(json.dumps(meta | {"dim": 128}))
    _one_line_error(path, "dim 128")


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
    _one_line_error(_variant(splade_dir, tmp_path / "a", weights={"projection.norm.weight": None}), "lack an MLM head")
    _one_line_error(
        _variant(splade_dir, tmp_path / "b", weights={"projection.decoder.bias": None}), "lack projection.decoder.bias"
    )
    _one_line_error(
        _variant(splade_dir, tmp_path / "c", weights={"extra.weight": torch.zeros(2)}), "belong to nothing lir knows"
    )
    _one_line_error(_variant(splade_dir, tmp_path / "d", config={"pooling_strategy": "cls"}), "pooling 'cls'")
    _one_line_error(_variant(splade_dir, tmp_path / "e", config={"sparsification_strategy": "softplus"}), "'softplus'")
    static = {"query_weighting": "static", "query_expansion": False}  # without its table
    _one_line_error(_variant(splade_dir, tmp_path / "g", config=static), "lack query_weights.weight")
    _one_line_error(_variant(splade_dir, tmp_path / "h", config={"query_weighting": "idf"}), "'idf'")
    untied = torch.randn(30522, 32)
    path = _variant(splade_dir, tmp_path / "f", weights={"projection.decoder.weight": untied})
    _one_line_error(path, "differs from the word embeddings")


def test_col_refusals(tmp_path, col_dir):
    _one_line_error(_variant(col_dir, tmp_path / "a", weights={"projection.weight": None}), "lack projection.weight")
    _one_line_error(
        _variant(col_dir, tmp_path / "b", weights={"extra.weight": torch.zeros(2)}), "belong to nothing lir knows"
    )
    _one_line_error(
        _variant(col_dir, tmp_path / "c", config={"query_aggregation_function": "harmonic_mean"}),
        "unknown aggregation 'harmonic_mean'",
    )
    _one_line_error(_variant(col_dir, tmp_path / "d", config={"embedding_dim": 128}), "embedding_dim 128")
    _one_line_error(_variant(col_dir, tmp_path / "e", config={"doc_expansion": True}), "document \\[MASK\\] expansion")
    _one_line_error(
        _variant(col_dir, tmp_path / "f", config={"doc_mask_scoring_tokens": ["zzyzx"]}), "not a single token"
    )
    _one_line_error(_variant(col_dir, tmp_path / "g", config={"model_type": "mono"}), "is a cross-encoder")
    _one_line_error(_variant(col_dir, tmp_path / "h", config={"model_type": "coil"}), "query_expansion .* COIL")


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
