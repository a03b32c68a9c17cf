"""lir-export for sparse models (Lightning IR SPLADE): graph, top-k, manifest."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import onnxruntime as ort
import pytest

from lir.export.bundle import family_export
from lir.export.cli import lir_export
from lir.export.graphs import trace
from lir.export.limits import FP32_TOLERANCE, MIN_TERM_COSINE
from lir.export.sparse import SparseExport
from lir.manifest import load_manifest
from lir.train import BiEncoderModule
from lir.vectors import SparseVectors
from tests import builders
from tests.exported import TEXTS, run_encoder


@pytest.fixture(scope="module")
def exports(late_repository) -> dict[str, Path]:
    """The SPLADE export of the shared late repository."""
    return {"splade": late_repository / "splade"}


def test_sparse_manifest(exports):
    manifest = load_manifest(exports["splade"])
    assert (manifest.family, manifest.similarity, manifest.normalized) == ("sparse", "dot", False)
    assert (manifest.embedding_dim, manifest.top_k, manifest.aggregation, manifest.scorer) == (30522, 1024, None, None)
    assert manifest.encoders == {"query": "encoder", "doc": "encoder"} and set(manifest.graphs) == {"encoder"}
    graph = manifest.graphs["encoder"]
    assert [(t.name, t.dtype, t.shape) for t in graph.outputs] == [
        ("term_ids", "int64", ["batch", 1024]),
        ("weights", "float32", ["batch", 1024]),
    ]
    assert set(graph.variants) == {"fp32", "int8"}
    assert graph.variants["fp32"].max_abs_diff <= FP32_TOLERANCE
    assert graph.variants["int8"].agreement >= MIN_TERM_COSINE["int8"]
    assert graph.variants["int8"].effectiveness["measure"] == "nDCG@10"
    # the tiny random head activates about half the vocabulary: every probe text is truncated
    assert manifest.provenance["top_k_truncated"] == manifest.provenance["probe_texts"] == {"query": 64, "doc": 64}


def test_sparse_graph_equals_pytorch(exports, tmp_path):
    manifest = load_manifest(exports["splade"])
    module = BiEncoderModule(str(builders.lightning_ir_splade_dir(tmp_path / "splade")))
    for role in ("query", "doc"):
        term_ids, weights = run_encoder(exports["splade"], manifest, role, TEXTS)
        assert term_ids.dtype == np.int64 and weights.shape == (len(TEXTS), 1024)
        assert (np.diff(weights, axis=1) <= 0).all(), "the heaviest terms first"
        dense = module.encode(TEXTS, role).to_dense()
        for row, ids, values in zip(dense, term_ids, weights, strict=True):
            np.testing.assert_allclose(values, row[ids], atol=1e-5)  # the weights of the terms returned
            unreturned = np.delete(row, ids)
            assert unreturned.max() <= values.min() + 1e-5  # and no heavier term left out
        packed = SparseVectors.from_topk(term_ids, weights, manifest.embedding_dim)
        assert (packed.lengths == 1024).all() and (packed.weights > 0).all()


def test_sparse_top_k(tmp_path):
    module = BiEncoderModule(str(builders.lightning_ir_splade_dir(tmp_path / "ckpt")))
    family = SparseExport(module, top_k=8)
    assert family.manifest_fields()["top_k"] == 8 and family_export(module, top_k=10**6).top_k == 30522
    plan = family.plans()[0]
    assert [t.shape for t in plan.outputs] == [["batch", 8], ["batch", 8]]
    trace(plan, tmp_path / "encoder.onnx")
    encoder = module.encoders["doc"]
    input_ids, attention_mask = encoder.batch(encoder.encode(TEXTS))
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    term_ids, weights = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
    expected = module.forward_batch(input_ids, attention_mask, "doc")[0].topk(8)
    np.testing.assert_array_equal(term_ids, expected.indices.numpy())
    np.testing.assert_allclose(weights, expected.values.numpy(), atol=1e-5)
    rows = {"doc": family.expected_rows(input_ids, attention_mask, "doc", [0] * len(TEXTS))}
    assert family.warnings(rows)[0].startswith("4 of 4 probe texts have more than 8 nonzero terms")
    assert lir_export.make_context("lir-export", ["--model", "m", "--top-k", "8"]).params["top_k"] == 8
    assert "--top-k" in lir_export.get_help(lir_export.make_context("lir-export", ["--model", "m"]))
    with pytest.raises(click.BadParameter):
        lir_export.make_context("lir-export", ["--model", "m", "--top-k", "0"])
