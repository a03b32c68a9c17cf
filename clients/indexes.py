"""What every lir index folder shares, and `open_index` to read any of them.

An index folder holds its arrays (`.npy`, or a Faiss file), `doc_ids.json` (the id of each row) and
`index.json`: the format (`lir-dense-index`, `lir-multi-vector-index`, `lir-sparse-index`,
`lir-coil-index`), the version, what built it, and the SHA-256 of every other file. Folders are written
atomically (a staging folder renamed into place) and verified on load: a file that does not match its checksum is
refused. Arrays are memory-mapped on load.

The modules that load Faiss first set `OMP_WAIT_POLICY=PASSIVE` unless it is set: by default Faiss's
OpenMP threads spin after each call and starve numpy's BLAS threads (and onnxruntime's), which
alternate with them in multi-vector search (re-scoring) and retrieval. Measured on 2 cores: 2x the
latency of a multi-vector query, Faiss k-means 20x slower after numpy work. It only takes effect when
Faiss is not loaded yet (set it in the environment otherwise).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lir.errors import LirError
from lir.files import (
    FolderSwap,
    atomic_write_text,
    confined,
    json_checksum,
    owned_by,
    read_json,
    sha256_file,
    split_target,
)
from lir.trec import check_id

if TYPE_CHECKING:
    from lir.clients.coil_index import CoilIndex
    from lir.clients.dense_index import DenseIndex
    from lir.clients.multi_vector_index import MultiVectorIndex
    from lir.clients.plaid_index import PlaidIndex
    from lir.clients.qdrant_index import QdrantIndex
    from lir.clients.seismic_index import SeismicIndex
    from lir.clients.sparse_index import SparseIndex

INFO_FILE, IDS_FILE = "index.json", "doc_ids.json"
FORMATS = (
    "lir-dense-index",
    "lir-multi-vector-index",
    "lir-plaid-index",
    "lir-sparse-index",
    "lir-seismic-index",
    "lir-coil-index",
    "lir-qdrant-index",
)
is_index = owned_by(INFO_FILE, FORMATS)
"""Whether a folder is a lir index (only those are replaced by --overwrite)."""
QDRANT_SCHEMES = ("qdrant://", "qdrant+https://", "qdrant+local://")  # index targets that are Qdrant collections


def check_doc_ids(doc_ids: Sequence[str], count: int, what: str) -> list[str]:
    """The doc ids as a list, refused when they are not one per document or repeat."""
    if len(doc_ids) != count:
        raise LirError(f"{len(doc_ids)} doc ids for {count} {what}")
    ids = list(doc_ids)
    seen: set[str] = set()
    for position, doc_id in enumerate(ids):
        check_doc_id(doc_id, position, seen)
    return ids


def check_doc_id(doc_id: object, position: int, seen: set[str]) -> None:
    """Refuse the doc id of document #`position` when it is not a valid id or is in `seen`; add it to `seen`."""
    if not isinstance(doc_id, str):
        raise LirError(f"document #{position}: doc id {doc_id!r} is not a string")
    check_id(doc_id, "doc id", f"document #{position}")
    if doc_id in seen:
        raise LirError(f"the corpus repeats doc id {doc_id!r} (#{position})")
    seen.add(doc_id)


def check_index_output(output: str | Path, overwrite: bool, sources: Sequence[str] = ()) -> None:
    """Refuse, before any encoding, an output that is not a new folder or a lir index (with `overwrite`), that
    cannot be written, or that holds one of the `sources` read to build it (the corpus); a Qdrant collection
    URL is checked on its server."""
    if str(output).startswith(QDRANT_SCHEMES):
        from lir.clients.qdrant_index import check_qdrant_output

        return check_qdrant_output(str(output), overwrite)
    parent, name = split_target(output, "an index")
    target = FolderSwap(parent, overwrite).check(name, is_index, "an index")
    for source in sources:
        path = Path(source)
        if path.exists() and path.resolve().is_relative_to(target.resolve()):
            raise LirError(f"{source} lies inside the output {output}: it would be replaced by the index")


def save_index_folder(
    directory: str | Path, info: dict[str, Any], writers: dict[str, Callable[[Path], None]], overwrite: bool = False
) -> Path:
    """Write an index folder atomically: each `writers[name](path)` writes one file, then index.json
    records `info`, the checksum of every file and its own checksum. An existing folder is replaced (with
    `overwrite`) only when it is a lir index, and stays as it was until the new one is complete."""
    parent, name = split_target(directory, "an index")
    with FolderSwap(parent, overwrite) as swap:
        staging = swap.stage(name, is_index, "an index")
        for file, write in writers.items():
            write(staging / file)
        record = info | {"sha256": {file: sha256_file(staging / file) for file in writers}}
        atomic_write_text(
            staging / INFO_FILE, json.dumps(record | {"checksum": json_checksum(record)}, indent=2) + "\n"
        )
    return Path(directory)


def write_doc_ids(doc_ids: list[str]) -> Callable[[Path], None]:
    return lambda path: atomic_write_text(path, json.dumps(doc_ids))


def write_array(array: np.ndarray) -> Callable[[Path], None]:
    """A writer of one `.npy` file (memory-mapped inputs are streamed, not copied)."""

    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())

    return write


def read_index_info(
    directory: str | Path,
    fmt: str,
    names: Sequence[str] | Callable[[dict[str, Any]], Sequence[str]],
    verify: bool = True,
) -> dict[str, Any]:
    """index.json of a `fmt` folder (without its checksums), after checking that every file in `names`
    (or `names(info)`) is there and, with `verify`, matches its checksum."""
    folder = Path(directory)
    info = read_info(folder)
    if info.get("format") != fmt:
        raise LirError(f"{folder} holds a {info.get('format')!r} index, expected {fmt!r}")
    checksums = info.pop("sha256", None) or {}
    names = names(info) if callable(names) else names
    paths = [confined(folder, name, "index file") for name in names]
    for name, path in zip(names, paths, strict=True):
        if not path.is_file():
            raise LirError(f"{folder / name} is missing")
    for name, path in zip(names, paths, strict=True) if verify else ():
        if sha256_file(path) != checksums.get(name):
            raise LirError(f"{folder / name} does not match its checksum: the index is corrupted")
    return info


def read_info(folder: Path) -> dict[str, Any]:
    """index.json of an index folder, refused unless its own checksum holds (an edited or damaged file)."""
    if not (folder / INFO_FILE).is_file():
        raise LirError(f"{folder} is not a lir index: no {INFO_FILE}")
    info = read_json(folder / INFO_FILE)
    checksum = info.pop("checksum", None)
    if checksum is None:
        raise LirError(f"{folder / INFO_FILE} has no checksum (written before lir 0.2?): rebuild the index")
    if checksum != json_checksum(info):
        raise LirError(f"{folder / INFO_FILE} does not match its checksum: edited or corrupted, rebuild the index")
    return info


def read_doc_ids(folder: Path, count: int) -> list[str]:
    try:
        doc_ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LirError(f"{folder / IDS_FILE} cannot be read ({exc})") from None
    if not isinstance(doc_ids, list) or len(doc_ids) != count or not all(isinstance(i, str) for i in doc_ids):
        raise LirError(f"{folder / IDS_FILE} does not hold the {count} doc ids of the index")
    return doc_ids


def load_array(folder: Path, name: str, dtype: Any, ndim: int, mmap: bool = True) -> np.ndarray:
    """One `.npy` file, memory-mapped, refused unless it has the expected dtype and rank."""
    try:
        array = np.load(folder / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LirError(f"{folder / name} cannot be read ({str(exc).strip().splitlines()[-1]})") from None
    if array.dtype != np.dtype(dtype) or array.ndim != ndim:
        raise LirError(f"{folder / name} holds {array.dtype} of shape {array.shape}, expected {ndim}-d {dtype}")
    return array


def check_offsets(offsets: np.ndarray, total: int, what: str) -> np.ndarray:
    """CSR offsets [N + 1] as int64: starting at 0, nondecreasing, ending at `total`."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets.dtype.kind not in "iu":
        raise LirError(f"{what} offsets must be a 1-d integer array of N + 1 entries")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] != 0 or offsets[-1] != total or (len(offsets) > 1 and np.any(np.diff(offsets) < 0)):
        raise LirError(f"{what} offsets must rise from 0 to {total} (the number of rows)")
    return offsets


def parse_parameters(spec: str) -> dict[str, str]:
    """`name=value,name=value` → {name: value}, with a one-line error for anything else."""
    params: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise LirError(f"{part!r} is not a search parameter (name=value)")
        params[name.strip()] = value.strip()
    return params


def positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise LirError(f"search parameter {name} must be a positive integer, not {value!r}")
    return number


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the `k` highest scores, best first; equal scores in row order (as a stable argsort)."""
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.int64)
    if k == n:
        return np.argsort(-scores, kind="stable")
    threshold = scores[np.argpartition(-scores, k - 1)[:k]].min()
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)[: k - len(above)]
    chosen = np.concatenate([above, tied])
    return chosen[np.argsort(-scores[chosen], kind="stable")]


def open_index(
    directory: str | Path, verify: bool = True
) -> DenseIndex | MultiVectorIndex | PlaidIndex | SparseIndex | SeismicIndex | CoilIndex | QdrantIndex:
    """Load any lir index folder, by the format its index.json records, or a Qdrant collection by its URL."""
    from lir.clients.coil_index import CoilIndex
    from lir.clients.dense_index import DenseIndex
    from lir.clients.multi_vector_index import MultiVectorIndex
    from lir.clients.plaid_index import PlaidIndex
    from lir.clients.qdrant_index import QdrantIndex
    from lir.clients.seismic_index import SeismicIndex
    from lir.clients.sparse_index import SparseIndex

    if str(directory).startswith(QDRANT_SCHEMES):
        return QdrantIndex.connect(str(directory))
    folder = Path(directory)
    fmt = read_info(folder).get("format")
    for cls in (DenseIndex, MultiVectorIndex, PlaidIndex, SparseIndex, SeismicIndex, CoilIndex, QdrantIndex):
        if fmt == cls.FORMAT:
            return cls.load(folder, verify=verify)
    raise LirError(f"{folder} holds an index of unknown format {fmt!r}")
