"""lir-export for multi-vector models (Lightning IR col, colbert-ir ColBERT): graphs, parity, manifest, Triton
configs (those of the SPLADE export beside them too)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lir.errors import LirError
from lir.export.bundle import export_model, verify
from lir.export.graphs import trace
from lir.export.limits import FP32_TOLERANCE, MIN_TOKEN_COSINE, ParityError
from lir.export.multi_vector import MultiVectorExport, ScorerGraph
from lir.export.parity import Reference, find_probe_data, load_probes
from lir.manifest import Manifest, load_manifest
from lir.tokenization import TextEncoder
from lir.train import BiEncoderModule
from lir.train.checkpoints import load_bi_encoder
from lir.train.multi_vector import MultiVectorModel
from lir.vectors import MultiVectors, maxsim
from tests import builders
from tests.exported import TEXTS, run_encoder, sessions


@pytest.fixture(scope="module")
def col_dir(tmp_path_factory) -> Path:
    return builders.lightning_ir_col_dir(tmp_path_factory.mktemp("ckpt") / "col")


@pytest.fixture(scope="module")
def col_export(tmp_path_factory, col_dir, scifact) -> Path:
    """The tiny Lightning IR ColBERT (dot, mean, attended [MASK], punctuation unscored), fp32 and int8,
    exported from the loaded model."""
    out = tmp_path_factory.mktemp("repo")
    loaded = load_bi_encoder(str(col_dir))
    return export_model(loaded, out, "col", int8=True, parity_data=str(scifact), log=lambda _: None)


@pytest.fixture(scope="module")
def exports(col_export, late_repository) -> dict[str, Path]:
    """Lightning IR ColBERT, colbert-ir ColBERT (cosine, markers, unattended [MASK]) and SPLADE exports."""
    return {"col": col_export, "colbert": late_repository / "colbert", "splade": late_repository / "splade"}


def test_multi_vector_manifests(exports, col_dir):
    col, colbert = load_manifest(exports["col"]), load_manifest(exports["colbert"])
    for manifest in (col, colbert):
        assert manifest.family == "multi-vector" and manifest.embedding_dim == 16
        assert manifest.encoders == {"query": "query_encoder", "doc": "doc_encoder"}
        assert manifest.scorer == "scorer" and manifest.top_k is None
        assert set(manifest.graphs) == {"query_encoder", "doc_encoder", "scorer"}
        for name in manifest.encoders.values():
            graph = manifest.graphs[name]
            assert [(t.name, t.dtype, t.shape) for t in graph.inputs] == [
                ("input_ids", "int64", ["batch", "sequence"]),
                ("attention_mask", "int64", ["batch", "sequence"]),
            ]
            assert [(t.name, t.dtype, t.shape) for t in graph.outputs] == [
                ("embeddings", "float32", ["batch", "sequence", 16]),
                ("scoring_mask", "bool", ["batch", "sequence"]),
            ]
            assert set(graph.variants) == {"fp32", "int8"}
            assert graph.variants["fp32"].max_abs_diff <= FP32_TOLERANCE
            assert graph.variants["int8"].agreement >= MIN_TOKEN_COSINE["int8"]
            assert graph.variants["fp32"].effectiveness["measure"] == "nDCG@10"
        scorer = manifest.graphs["scorer"]
        assert [(t.name, t.dtype) for t in scorer.inputs] == [
            ("query_embeddings", "float32"),
            ("query_mask", "bool"),
            ("doc_embeddings", "float32"),
            ("doc_mask", "bool"),
        ]
        assert [(t.name, t.shape) for t in scorer.outputs] == [("scores", ["batch"])]
        assert set(scorer.variants) == {"fp32"} and scorer.variants["fp32"].max_abs_diff <= FP32_TOLERANCE
        same = {manifest.graphs[g].variants["int8"].effectiveness["value"] for g in manifest.encoders.values()}
        assert len(same) == 1, "one effectiveness per variant, measured with both encoders"
    assert (col.similarity, col.normalized, col.aggregation) == ("dot", False, "mean")
    assert (col.query.max_length, col.query.expansion_token, col.query.attend_expansion) == (16, "[MASK]", True)
    assert col.doc.max_length == 48 and col.provenance["source_format"] == "lightning-ir"
    assert col.provenance["source"] == str(col_dir), "exported from the loaded model, named by its source"
    assert col.provenance["fused"] is True
    assert (colbert.similarity, colbert.normalized, colbert.aggregation) == ("cosine", True, "sum")
    assert (colbert.query.marker, colbert.doc.marker, colbert.query.attend_expansion) == (
        "[unused0]",
        "[unused1]",
        False,
    )
    assert Manifest.from_dict(col.to_dict()) == col


@pytest.mark.parametrize("name, checkpoint", [("col", "col_dir"), ("colbert", None)])
def test_multi_vector_graphs_equal_pytorch(exports, request, tmp_path, name, checkpoint):
    source = request.getfixturevalue(checkpoint) if checkpoint else builders.colbert_ir_dir(tmp_path / "colbert")
    manifest = load_manifest(exports[name])
    module = BiEncoderModule(str(source))
    masks = {}
    for role in ("query", "doc"):
        vectors, masks[role] = run_encoder(exports[name], manifest, role, TEXTS)
        expected = module.encode(TEXTS, role)
        got = MultiVectors.from_list([v[m] for v, m in zip(vectors, masks[role], strict=True)], 16)
        np.testing.assert_array_equal(got.offsets, expected.offsets)
        want = expected.vectors
        if manifest.similarity == "cosine":
            want = want / np.linalg.norm(want, axis=1, keepdims=True)
            np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(got.vectors, want, atol=1e-4)
    assert masks["query"].dtype == bool and masks["query"].all(), "queries are expanded to 16 scored tokens"
    assert masks["query"].shape == (len(TEXTS), 16)
    doc = TextEncoder.from_manifest(exports[name], manifest, "doc").encode(TEXTS[3:])[0]
    punctuation = [i for i, token in enumerate(doc) if module.loaded.tokenizer.id_to_token(token) in set(";():!")]
    assert len(punctuation) == 5 and not masks["doc"][3, punctuation].any(), "punctuation is not scored"


def test_scorer_equals_pair_scores_and_maxsim(exports, col_dir):
    manifest = load_manifest(exports["col"])
    module = BiEncoderModule(str(col_dir))
    graphs = sessions(exports["col"], manifest)
    queries, docs = TEXTS[:2] * 2, TEXTS
    q_vectors, q_mask = run_encoder(exports["col"], manifest, "query", queries)
    d_vectors, d_mask = run_encoder(exports["col"], manifest, "doc", docs)
    scores = graphs["scorer"].run(
        None,
        {"query_embeddings": q_vectors, "query_mask": q_mask, "doc_embeddings": d_vectors, "doc_mask": d_mask},
    )[0]
    with torch.inference_mode():
        expected = module.model.pair_scores(*(torch.from_numpy(x) for x in (q_vectors, q_mask, d_vectors, d_mask)))
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5, atol=1e-5)
    packed = MultiVectors.from_list([v[m] for v, m in zip(d_vectors, d_mask, strict=True)], 16)
    for i in range(len(queries)):
        by_maxsim = maxsim(q_vectors[i][q_mask[i]], packed, manifest.aggregation)[i]
        assert by_maxsim == pytest.approx(scores[i], rel=1e-5, abs=1e-5)


def test_parity_failure_leaves_nothing(col_dir, tmp_path, scifact):
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_model(str(col_dir), tmp_path, "strict", tolerance=0.0, parity_data=str(scifact), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_fusion_falls_back_to_the_plain_graph(col_dir, tmp_path, scifact, monkeypatch):
    def broken(source: Path, target: Path, *_) -> bool:
        raise LirError("the optimizer does not know this graph")

    monkeypatch.setattr("lir.export.bundle.optimize_encoder", broken)
    messages: list[str] = []
    exported = export_model(str(col_dir), tmp_path, "plain", parity_data=str(scifact), log=messages.append)
    provenance = load_manifest(exported).provenance
    assert provenance["fused"] is False
    assert set(provenance["fusion_fallback"]) == {"query_encoder", "doc_encoder"}
    assert any("kept the unfused graph" in m for m in messages)
    assert sorted(p.name for p in exported.iterdir() if p.suffix == ".onnx") == [
        "doc_encoder.onnx",
        "query_encoder.onnx",
        "scorer.onnx",
    ]


def test_a_wrong_scorer_is_refused(col_dir, tmp_path, scifact):
    module = BiEncoderModule(str(col_dir))
    family = MultiVectorExport(module)
    reference = Reference.compute(family, load_probes(find_probe_data(str(scifact))))
    plan = family.plans()[-1]
    model = module.model
    summing = MultiVectorModel(model.backbone, dataclasses.replace(model.config, aggregation="sum"), model.projection)
    plan.module = ScorerGraph(summing)  # the model averages over query tokens
    trace(plan, tmp_path / "scorer.onnx")
    with pytest.raises(ParityError, match="scorer graph differs from PyTorch"):
        verify(reference, plan, tmp_path / "scorer.onnx", "fp32")


def test_a_wrong_scoring_mask_is_refused(col_dir):
    family = MultiVectorExport(BiEncoderModule(str(col_dir)))
    row = (np.array([True, True, False]), np.ones((2, 4), np.float32))
    with pytest.raises(ParityError, match="scoring mask differs"):
        family.compare((np.array([True, True, True]), np.ones((3, 4), np.float32)), row)
    with pytest.raises(ParityError, match="padding"):
        family.graph_rows([np.ones((1, 4, 2), np.float32), np.array([[True, True, False, True]])], [3])


def _config(path: Path) -> str:
    return path.read_text()


def test_triton_configs(exports):
    for name, directory in exports.items():
        manifest = load_manifest(directory)
        endpoint = _config(directory / "config.pbtxt")
        assert f'key: "family" value: {{ string_value: "{manifest.family}" }}' in endpoint
        assert _config(directory / "configs" / "onnxruntime.pbtxt").count("KIND_GPU") == 1
        for graph_name, graph in manifest.graphs.items():
            model = directory.parent / f"{name}.{graph_name}"
            link = model / "1" / "model.onnx"
            assert os.path.realpath(link) == str((directory / graph.variants["fp32"].file).resolve())
            for config in (_config(model / "config.pbtxt"), _config(model / "configs" / "onnxruntime.pbtxt")):
                for tensor in graph.inputs + graph.outputs:
                    assert f'name: "{tensor.name}"' in config
                    if tensor.dtype == "bool":
                        assert f'name: "{tensor.name}" data_type: TYPE_BOOL dims: [ -1 ]' in config
    col = _config(exports["col"] / "config.pbtxt")
    assert '{ name: "EMBEDDINGS" data_type: TYPE_FP32 dims: [ -1, 16 ] }' in col
    assert '{ name: "SCORING_MASK" data_type: TYPE_BOOL dims: [ -1 ] }' in col
    assert 'key: "aggregation" value: { string_value: "mean" }' in col
    splade = _config(exports["splade"] / "config.pbtxt")
    assert '{ name: "TERM_IDS" data_type: TYPE_INT64 dims: [ -1 ] }' in splade
    assert '{ name: "WEIGHTS" data_type: TYPE_FP32 dims: [ -1 ] }' in splade
    assert 'key: "aggregation"' not in splade
    scorer = _config(exports["col"].parent / "col.scorer" / "configs" / "onnxruntime.pbtxt")
    assert '{ name: "query_embeddings" data_type: TYPE_FP32 dims: [ -1, 16 ] }' in scorer
    assert '{ name: "scores" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } }' in scorer
    encoder = _config(exports["splade"].parent / "splade.encoder" / "config.pbtxt")
    assert '{ name: "term_ids" data_type: TYPE_INT64 dims: [ 1024 ] }' in encoder
