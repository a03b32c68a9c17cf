"""lir-export: parity with PyTorch, variants, refusal of broken graphs and bad checkpoints, atomicity."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lir.clients.onnx_engine import OnnxEngine
from lir.errors import LirError
from lir.export.bundle import export_model, verify_graph
from lir.export.limits import ParityError
from lir.export.parity import find_probe_data, load_probes
from lir.manifest import load_manifest
from lir.train import BiEncoderModule


def test_manifest_records_everything(tiny_export):
    manifest = load_manifest(tiny_export)
    assert (manifest.family, manifest.similarity, manifest.embedding_dim, manifest.normalized) == (
        "single-vector",
        "cosine",
        16,
        True,
    )
    assert manifest.query.max_length == manifest.doc.max_length == 64
    graph = manifest.graphs[manifest.encoders["query"]]
    assert [t.name for t in graph.inputs] == ["input_ids", "attention_mask"]
    assert graph.outputs[0].shape == ["batch", 16]
    assert set(graph.variants) == {"fp32", "int8", "fp16"}
    assert graph.variants["fp32"].max_abs_diff <= 1e-4
    assert graph.variants["int8"].agreement >= 0.95 and graph.variants["fp16"].agreement >= 0.999
    assert graph.variants["fp32"].effectiveness["measure"] == "nDCG@10"
    assert manifest.provenance["source_format"] == "sentence-transformers"
    assert {"torch", "onnxruntime", "transformers"} <= set(manifest.provenance["versions"])
    assert not [p for p in tiny_export.parent.iterdir() if p.name.startswith(".")], "staging left behind"


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_each_variant_runs_embedded(tiny_export, st_dir, scifact, variant):
    texts = [line[:3000] for line in (scifact / "corpus.jsonl").read_text().splitlines()[:20]]
    reference = BiEncoderModule(str(st_dir)).encode(texts, "doc")
    got = OnnxEngine(tiny_export, variant=variant).encode_docs(texts)
    cosine = (got * reference).sum(1)
    assert cosine.min() > (0.9999 if variant == "fp32" else 0.95)


def test_a_broken_graph_is_refused(tiny_export, st_dir, scifact, tmp_path):
    model = onnx.load(str(tiny_export / "encoder.onnx"))
    for weight in model.graph.initializer:  # every projection and feed-forward matrix off by 5 %
        values = numpy_helper.to_array(weight)
        if values.dtype == np.float32 and values.ndim == 2 and values.shape[0] < 1000:
            weight.CopyFrom(numpy_helper.from_array(values * 1.05, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    module = BiEncoderModule(str(st_dir))
    probes = load_probes(find_probe_data(str(scifact)))
    with pytest.raises(ParityError, match="differs from PyTorch"):
        verify_graph(module, broken, probes, "fp32", measure_effectiveness=False)


def test_lightning_ir_export_matches_pytorch(dpr_dir, tmp_path, scifact):
    exported = export_model(str(dpr_dir), tmp_path, "dpr", parity_data=str(scifact), log=lambda _: None)
    manifest = load_manifest(exported)
    assert (manifest.similarity, manifest.normalized, manifest.query.max_length) == ("dot", False, 16)
    queries = ["what causes fever", "Aspirin and heart attacks " * 20]
    module = BiEncoderModule(str(dpr_dir))
    engine = OnnxEngine(exported)
    np.testing.assert_allclose(engine.encode_queries(queries), module.encode(queries, "query"), atol=1e-4)


def _export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lir.export.cli", *args], capture_output=True, text=True)


def test_corrupt_weights_exit_nonzero_and_write_nothing(dpr_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(dpr_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:1000] + b"\0" * 100)
    repo = tmp_path / "repo"
    done = _export_cli("--model", str(bad), "--output", str(repo), "--name", "bad")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith("lir-export: error:") and "corrupt or truncated" in done.stderr
    assert not (repo / "bad").exists()
    assert not repo.exists() or not list(repo.iterdir())


def test_existing_export_is_not_overwritten(tiny_export):
    done = _export_cli("--model", "unused", "--output", str(tiny_export.parent), "--name", tiny_export.name)
    assert done.returncode == 1 and "already exists" in done.stderr


def test_export_refusal_mid_way_leaves_nothing(st_dir, tmp_path, scifact):
    with pytest.raises(ParityError):
        export_model(str(st_dir), tmp_path, "strict", tolerance=0.0, parity_data=str(scifact), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_is_detected(tiny_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    with open(copy / "encoder.onnx", "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\x01" * 8)
    with pytest.raises(LirError, match="checksum"):
        OnnxEngine(copy)


def test_missing_variant_is_named(tmp_path, dpr_dir, scifact):
    exported = export_model(str(dpr_dir), tmp_path, "dpr", parity_data=str(scifact), log=lambda _: None)
    with pytest.raises(LirError, match="no int8 variant"):
        OnnxEngine(exported, variant="int8")
