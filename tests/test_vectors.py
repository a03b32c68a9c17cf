"""The core's packed encodings, scoring rules and expansion rules, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from lir.errors import LirError
from lir.manifest import TextRules
from lir.tokenization import TextEncoder
from lir.vectors import Collector, MultiVectors, SparseVectors, maxsim, padded_outputs, sparse_dot
from tests.builders import minilm_dir


def _tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))


def test_maxsim_against_loops():
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 0, 7, 1, 2)]
    query = rng.normal(size=(4, 8)).astype(np.float32)
    packed = MultiVectors.from_list(docs, 8)
    expected = [sum(max(float(q @ t) for t in d) for q in query) if len(d) else 0.0 for d in docs]
    np.testing.assert_allclose(maxsim(query, packed), expected, rtol=1e-5)
    np.testing.assert_allclose(maxsim(query, packed, "mean"), np.array(expected) / 4, rtol=1e-5)
    np.testing.assert_allclose(maxsim(query, packed, chunk_tokens=2), expected, rtol=1e-5)  # chunked path
    reduce = {"max": max, "sum": sum, "mean": lambda sims: sum(sims) / len(sims)}
    for doc_agg in ("max", "sum", "mean"):
        for query_agg in ("sum", "mean", "max"):
            per_token = [[reduce[doc_agg]([float(q @ t) for t in d]) for q in query] if len(d) else [0.0] for d in docs]
            want = [reduce[query_agg](row) if query_agg != "mean" else sum(row) / 4 for row in per_token]
            got = maxsim(query, packed, query_agg, doc_agg, chunk_tokens=3)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{query_agg}/{doc_agg}")
    with pytest.raises(LirError, match="aggregation"):
        maxsim(query, packed, "min")


def test_sparse_from_topk_and_dot():
    term_ids = np.array([[7, 2, 9, 0], [4, 4, 1, 3]])
    weights = np.array([[0.5, 0.25, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]], np.float32)
    packed = SparseVectors.from_topk(term_ids, weights, 10)
    assert packed.row(0)[0].tolist() == [0, 2, 7] and packed.row(0)[1].tolist() == [1.0, 0.25, 0.5]
    assert packed.lengths.tolist() == [3, 1]
    dense = packed.to_dense()
    assert dense[1, 4] == 2.0 and dense.sum() == pytest.approx(3.75)
    query = (np.array([0, 4, 7]), np.array([2.0, 1.0, 4.0], np.float32))
    np.testing.assert_allclose(sparse_dot(query, packed), [2.0 + 2.0, 2.0])


@pytest.mark.parametrize("family", ["single-vector", "multi-vector", "sparse"])
def test_collector_restores_input_order_and_padding_inverts_it(family):
    rng = np.random.default_rng(1)
    if family == "single-vector":
        encoded = rng.normal(size=(5, 4)).astype(np.float32)
    elif family == "multi-vector":
        encoded = MultiVectors.from_list([rng.normal(size=(n, 4)).astype(np.float32) for n in (2, 0, 3, 1, 4)], 4)
    else:
        encoded = SparseVectors.from_topk(rng.integers(0, 50, (5, 6)), rng.random((5, 6)).astype(np.float32), 50)
    collector = Collector(family, 5, 50 if family == "sparse" else 4)
    collector.add(np.array([4, 1]), padded_outputs(encoded, 0, 2))
    collector.add(np.array([0, 3, 2]), padded_outputs(encoded, 2, 5))
    got = collector.result()
    order = [2, 1, 4, 3, 0]  # row r of the result holds input row order[r]
    for row, source in enumerate(order):
        if family != "sparse":
            np.testing.assert_array_equal(got[row], encoded[source])
        else:
            np.testing.assert_array_equal(got.row(row)[0], encoded.row(source)[0])


def test_incomplete_collector_is_an_error():
    collector = Collector("multi-vector", 2, 4)
    collector.add([0], {"embeddings": np.zeros((1, 3, 4), np.float32), "scoring_mask": np.ones((1, 3), bool)})
    with pytest.raises(LirError):
        collector.result()


def test_query_expansion_pads_with_mask_and_controls_attention():
    tokenizer = _tokenizer()
    mask_id = tokenizer.token_to_id("[MASK]")
    attended = TextEncoder(tokenizer, TextRules(12, marker="[unused0]", expansion_token="[MASK]"), 0, "query")
    ids = attended.encode(["what is late interaction?", "a " * 40])
    assert [len(s) for s in ids] == [12, 12]
    assert ids[0][:2] == [tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[unused0]")]
    assert ids[0][-1] == mask_id and ids[1][-1] == tokenizer.token_to_id("[SEP]")  # truncated: no room to expand
    _, mask = attended.batch(ids)
    assert mask.all()
    unattended = TextEncoder(tokenizer, TextRules(12, expansion_token="[MASK]", attend_expansion=False), 0, "query")
    ids = unattended.encode(["short query"])
    input_ids, mask = unattended.batch(ids)
    assert mask[0].tolist() == [int(t != mask_id) for t in ids[0]] and mask[0].sum() == 4
    own = unattended.encode(["a [MASK] query"])  # the text's own mask token stays attended (as in Lightning IR)
    _, mask = unattended.batch(own + ids)
    assert own[0][2] == mask_id and mask[0].tolist() == [1] * 5 + [0] * 7 and mask[1].sum() == 4
