"""`make gpu-check` on a machine without a CUDA GPU: one line saying so, exit 0, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = shutil.which("nvidia-smi") is not None and "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA machine runs the whole check (make gpu-check)")
def test_without_a_cuda_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1, done.stdout
    assert done.stdout.startswith("gpu-check: no CUDA GPU here (")
    assert done.stdout.rstrip().endswith("); nothing to check")
    assert not any(tmp_path.iterdir())
