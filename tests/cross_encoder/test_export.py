"""lir-export for cross-encoders: every checkpoint layout, parity, variants, manifest, refusal, listwise graphs."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from lir.clients.onnx_engine import OnnxEngine
from lir.export.bundle import export_model, model_export, verify
from lir.export.cli import lir_export
from lir.export.limits import FP32_TOLERANCE, MIN_SCORE_CORRELATION, ParityError
from lir.export.parity import find_probe_data, load_probes
from lir.manifest import Manifest, load_manifest
from lir.tokenization import PairEncoder
from lir.train.checkpoints import load_model
from lir.train.cross_module import CrossEncoderModule
from tests import cross_builders, t5_builders

BUILDERS = {
    "rank-bias": lambda path: cross_builders.lightning_ir_mono_dir(path, linear_bias=True),
    "mono-bert-pool": lambda path: cross_builders.lightning_ir_mono_dir(path, scoring="mono", bert_pool=True),
    "monoelectra": cross_builders.monoelectra_dir,
    "setenc-int": lambda path: cross_builders.lightning_ir_set_encoder_dir(path, add_extra_token=True),
    "hf-rank": cross_builders.hf_sequence_classification_dir,
    "monobert": cross_builders.castorini_monobert_dir,
    "rankt5": t5_builders.t5_cross_encoder_dir,
}
"""Every layout not in the shared `cross_repository` (a Lightning IR mono with mono scoring and a set-encoder)."""
QUERIES = ["what causes fever in children?", "vitamin d deficiency"]


@pytest.fixture(scope="module")
def docs(scifact) -> list[str]:
    records = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:10]]
    return [f"{r['title']} {r['text']}" for r in records]


@pytest.fixture(scope="module")
def monot5(tmp_path_factory, scifact) -> tuple[Path, Path]:
    """A tiny monoT5 checkpoint and its export with the int8 and fp16 variants."""
    checkpoint = t5_builders.t5_cross_encoder_dir(tmp_path_factory.mktemp("ckpt") / "monot5")
    out = tmp_path_factory.mktemp("repo")
    return checkpoint, export_model(
        str(checkpoint), out, "monot5", int8=True, fp16=True, parity_data=str(scifact), log=lambda _: None
    )


def _pairs(docs: list[str]) -> tuple[list[str], list[str], list[int]]:
    """Each query with every document (long abstracts truncated), grouped by query."""
    queries = [q for q in QUERIES for _ in docs]
    return queries, docs * len(QUERIES), [i for i in range(len(QUERIES)) for _ in docs]


def _assert_scores_match(exported: Path, checkpoint: Path, docs: list[str], t5_scoring: str | None = None) -> None:
    queries, texts, groups = _pairs(docs)
    expected = CrossEncoderModule(load_model(str(checkpoint), t5_scoring=t5_scoring)).score_pairs(
        queries, texts, groups
    )
    got = OnnxEngine(exported).score_pairs(queries, texts, groups, batch_size=7)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_every_layout_exports_with_parity(layout, tmp_path, scifact, docs):
    checkpoint = BUILDERS[layout](tmp_path / layout)
    t5_scoring = "rank" if layout == "rankt5" else None
    exported = export_model(
        str(checkpoint), tmp_path / "repo", layout, parity_data=str(scifact), t5_scoring=t5_scoring, log=lambda _: None
    )
    manifest = load_manifest(exported)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert (manifest.family, manifest.encoders, manifest.similarity, manifest.embedding_dim) == (
        "cross-encoder",
        {},
        None,
        None,
    )
    fp32 = manifest.graphs[manifest.scorer].variants["fp32"]
    assert fp32.max_abs_diff <= FP32_TOLERANCE and fp32.agreement > 0.99
    assert fp32.effectiveness["measure"] == "nDCG@10"
    assert manifest.pair.listwise == (layout == "setenc-int")
    assert (manifest.pair.token_types is None) == (layout == "rankt5")
    assert manifest.provenance["scoring"] == ("mono" if layout in ("mono-bert-pool", "monobert") else "rank")
    _assert_scores_match(exported, checkpoint, docs, t5_scoring)


@pytest.mark.parametrize("name", ["mono", "setenc"])
def test_shared_exports_match_pytorch(cross_repository, cross_checkpoints, docs, name):
    manifest = load_manifest(cross_repository / name)
    assert [t.name for t in manifest.graphs["scorer"].inputs] == list(manifest.pair.inputs)
    assert ("groups" in manifest.pair.inputs) == (name == "setenc")
    assert manifest.provenance["fused"] is True  # BERT backbones: onnxruntime's fusions kept
    _assert_scores_match(cross_repository / name, cross_checkpoints[name], docs)


def test_numeric_variants(monot5, docs):
    checkpoint, exported = monot5
    manifest = load_manifest(exported)
    variants = manifest.graphs["scorer"].variants
    assert set(variants) == {"fp32", "int8", "fp16"}
    for kind in ("int8", "fp16"):
        assert variants[kind].agreement >= MIN_SCORE_CORRELATION[kind]
        assert variants[kind].effectiveness["value"] >= 0
    assert manifest.provenance["scoring"] == "mono" and manifest.pair.template[-2:] == ["Relevant:", "</s>"]
    queries, texts, groups = _pairs(docs)
    expected = OnnxEngine(exported).score_pairs(queries, texts, groups)
    got = OnnxEngine(exported, variant="int8").score_pairs(queries, texts, groups)
    assert np.corrcoef(got, expected)[0, 1] > 0.8


def test_a_broken_scorer_is_refused(cross_repository, cross_checkpoints, scifact, tmp_path):
    model = onnx.load(str(cross_repository / "mono" / "scorer.onnx"))
    for weight in model.graph.initializer:  # every projection and feed-forward matrix off by 5 %
        values = numpy_helper.to_array(weight)
        if values.dtype == np.float32 and values.ndim == 2 and values.shape[0] < 1000:
            weight.CopyFrom(numpy_helper.from_array(values * 1.05, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    family = model_export(load_model(str(cross_checkpoints["mono"])))
    reference = family.reference(load_probes(find_probe_data(str(scifact))))
    with pytest.raises(ParityError, match="scorer graph differs from PyTorch"):
        verify(reference, family.plans()[0], broken, "fp32")


def test_parity_failure_leaves_nothing(cross_checkpoints, tmp_path, scifact):
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_model(
            str(cross_checkpoints["mono"]),
            tmp_path,
            "strict",
            tolerance=0.0,
            parity_data=str(scifact),
            log=lambda _: None,
        )
    assert list(tmp_path.iterdir()) == []


def test_listwise_scores_do_not_depend_on_candidate_order(cross_repository, docs):
    directory = cross_repository / "setenc"
    manifest = load_manifest(directory)
    pairs = PairEncoder.from_manifest(directory, manifest)
    session = ort.InferenceSession(str(directory / "scorer.onnx"), providers=["CPUExecutionProvider"])

    def scores(queries: list[str], texts: list[str], groups: list[int]) -> np.ndarray:
        feeds = pairs.batch(pairs.encode(queries, texts)) | {"groups": np.array(groups, np.int64)}
        return session.run(None, feeds)[0]

    alone = [scores([q] * 5, docs[:5], [0] * 5) for q in QUERIES]
    order = np.array([3, 0, 4, 1, 2])
    permuted = scores([QUERIES[0]] * 5, [docs[i] for i in order], [7] * 5)
    np.testing.assert_allclose(permuted, alone[0][order], atol=1e-5)
    together = scores([QUERIES[0]] * 5 + [QUERIES[1]] * 3, docs[:5] + docs[:3], [0] * 5 + [1] * 3)
    np.testing.assert_allclose(
        together, np.concatenate([alone[0], scores([QUERIES[1]] * 3, docs[:3], [0] * 3)]), atol=1e-5
    )
    assert np.abs(alone[0][:3] - scores([QUERIES[0]] * 3, docs[:3], [0] * 3)).max() > 1e-6, "the group was not seen"


def test_triton_configs(cross_repository):
    mono = (cross_repository / "mono" / "config.pbtxt").read_text()
    assert "max_batch_size: 256" in mono and '"QUERY"' in mono and '"DOC"' in mono and '"SCORES"' in mono
    assert 'key: "family" value: { string_value: "cross-encoder" }' in mono
    assert 'key: "listwise" value: { string_value: "false" }' in mono
    assert "PairScorerModel" in (cross_repository / "mono" / "1" / "model.py").read_text()
    setenc = cross_repository / "setenc"
    assert 'key: "listwise" value: { string_value: "true" }' in (setenc / "config.pbtxt").read_text()
    assert 'value: { string_value: "cuda" }' in (setenc / "configs" / "onnxruntime.pbtxt").read_text()
    graph = (cross_repository / "setenc.scorer" / "configs" / "onnxruntime.pbtxt").read_text()
    assert "dynamic_batching" not in graph and '"groups"' in graph  # the onnxruntime backend would mix groups
    assert "dynamic_batching" in (cross_repository / "mono.scorer" / "configs" / "onnxruntime.pbtxt").read_text()


def test_cli_t5_scoring():
    def parsed(*args: str) -> dict:
        return lir_export.make_context("lir-export", ["--model", "m", *args]).params

    assert parsed("--t5-scoring", "rank")["t5_scoring"] == "rank"
    assert parsed()["t5_scoring"] is None
    with pytest.raises(click.BadParameter):
        parsed("--t5-scoring", "t5")
