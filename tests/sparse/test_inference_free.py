"""Inference-free sparse retrieval: a Lightning IR SPLADE with static query weights exports a document graph
and a query weight table; queries are encoded from the tokenizer and the table alone (no query graph, no
model call), and every path (embedded engine, `lir index`/`lir search`) scores like Lightning IR."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lir.cli import main
from lir.clients.onnx_engine import OnnxEngine
from lir.errors import LirError
from lir.manifest import load_manifest
from lir.trec import read_run
from tests.reference import build, reference_scores

DOCS = {
    "d1": "Paris is the capital and largest city of France.",
    "d2": "The Eiffel tower is in Paris, France, Paris!",
    "d3": "Photosynthesis: plants use light to make food.",
    "d4": "Cats sleep a lot; dogs, less.",
}
QUERIES = {"q1": "what is the capital of france?", "q2": "how do plants make food"}


@pytest.fixture(scope="module")
def inference_free(reference_backbone, scifact, tmp_path_factory):
    """(Lightning IR's scores of every query against every document, the export's directory)."""
    from lir.export.bundle import export_model

    checkpoint = tmp_path_factory.mktemp("ckpt") / "splade-if"
    module = build(
        reference_backbone, checkpoint, "SpladeConfig", {"query_weighting": "static", "query_expansion": False}
    )
    expected = reference_scores(module, list(QUERIES.values()), [list(DOCS.values())] * len(QUERIES))
    directory = export_model(str(checkpoint), tmp_path_factory.mktemp("repo"), "splade-if", parity_data=str(scifact))
    return expected.reshape(len(QUERIES), len(DOCS)), directory


def test_the_export_has_no_query_graph(inference_free):
    _, directory = inference_free
    manifest = load_manifest(directory)
    assert manifest.encoders == {"doc": "encoder"} and set(manifest.graphs) == {"encoder"}
    weights = manifest.term_weights["query"]
    assert weights.file == "query_weights.npy" and (directory / weights.file).is_file()
    assert manifest.query.special_tokens is False and manifest.doc.special_tokens is True
    engine = OnnxEngine(directory)
    assert set(engine._sessions) == {"encoder"}  # queries never reach onnxruntime


def test_the_embedded_engine_scores_like_lightning_ir(inference_free):
    expected, directory = inference_free
    engine = OnnxEngine(directory)
    queries, docs = engine.encode(list(QUERIES.values()), "query"), engine.encode(list(DOCS.values()), "doc")
    np.testing.assert_allclose(queries.to_dense() @ docs.to_dense().T, expected, rtol=1e-4, atol=1e-4)
    assert (queries.weights < 0).any(), "static weights may be negative and must be kept"


def test_index_and_search_rank_like_lightning_ir(inference_free, tmp_path):
    expected, directory = inference_free
    corpus, queries = tmp_path / "corpus.jsonl", tmp_path / "queries.tsv"
    corpus.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCS.items()))
    queries.write_text("".join(f"{i}\t{t}\n" for i, t in QUERIES.items()))
    index, run = tmp_path / "index", tmp_path / "run.trec"
    assert main(["index", "--engine", str(directory), "--corpus", str(corpus), "--output", str(index)]) == 0
    assert main(["search", "--index", str(index), "--queries", str(queries), "--output", str(run), "-k", "4"]) == 0
    found = read_run(run)
    for row, qid in enumerate(QUERIES):
        scores = {did: expected[row, col] for col, did in enumerate(DOCS) if expected[row, col] != 0}
        assert list(found[qid]) == sorted(scores, key=lambda d: -scores[d])
        np.testing.assert_allclose([found[qid][d] for d in scores], list(scores.values()), rtol=1e-4, atol=1e-4)


def test_a_corrupted_weight_table_is_refused(inference_free, tmp_path):
    import shutil

    _, directory = inference_free
    copy = shutil.copytree(directory, tmp_path / "copy")
    table = np.load(copy / "query_weights.npy")
    table[0] += 1
    np.save(copy / "query_weights.npy", table)
    with pytest.raises(LirError, match="does not match its checksum") as error:
        OnnxEngine(copy)
    assert "\n" not in str(error.value)
