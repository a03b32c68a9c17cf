"""Streaming, resumable `lir index`: a corpus read, encoded and written in blocks of documents, the index
built from the finished blocks.

Memory holds one block of texts and encodings at a time (`block_docs` documents), plus the doc ids. A run
writes into a work folder beside the output, `OUTPUT.lir-blocks`:

- `run.json`: what its blocks encode — the corpus (its document count and the SHA-256 of its ids and texts
  in order), the model's fingerprint, the doc graph's checksum and variant, the index spec, the block and
  batch sizes;
- `block-000012/`: one finished block (corpus documents 12 x block_docs on): one `.npy` per array of its
  encodings and `block.json` with its doc ids, the checksum of every file and its own. A block is written in
  a staging folder and renamed: it is whole or absent, whenever the run is killed.

`--resume` continues a killed run: run.json must record this run (else a one-line refusal naming what
differs), every finished block must match its checksums (else refused), and only the missing blocks are
encoded. The index is then built by the family's own builder (`build_index`) from the blocks joined into
memory-mapped arrays, so it is the index an uninterrupted run writes: same doc ids, vectors and results.
Faiss specs that train (IVF, PQ; multi-vector token indexes; PLAID centroids) sample the whole corpus,
not its first blocks: all the blocks are on disk when the index is built. The work folder is removed once
the index is saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from lir.clients.engine import Engine
from lir.clients.indexes import check_doc_id, check_index_output, load_array, write_array
from lir.clients.multi_vector_index import parse_spec as parse_multi_vector_spec
from lir.clients.plaid_index import parse_spec as parse_plaid_spec
from lir.clients.qdrant_index import is_qdrant_url, target_spec
from lir.clients.qdrant_index import parse_spec as parse_qdrant_spec
from lir.clients.retriever import DEFAULT_SPECS, build_index, check_sparse_spec, spec_head
from lir.coil import CoilVectors
from lir.errors import LirError
from lir.files import atomic_write_text, json_checksum, read_json, sha256_file
from lir.vectors import Encoded, MultiVectors, SparseVectors

WORK_SUFFIX = ".lir-blocks"
RUN_FILE, BLOCK_FILE, JOINED = "run.json", "block.json", ".joined"
RUN_FORMAT, BLOCK_FORMAT = "lir-index-run", "lir-index-block"
DEFAULT_BLOCK_DOCS = 1024
ARRAYS = {  # family → the arrays of a block: lengths [n] (tokens per document) and the encodings
    "single-vector": ("embeddings",),
    "multi-vector": ("lengths", "vectors"),
    "sparse": ("lengths", "term_ids", "weights"),
    "coil": ("lengths", "cls", "vectors", "token_ids"),
}
PER_DOCUMENT = ("lengths", "embeddings", "cls")
"""The arrays with one row per document; the others have one row per token (or term)."""


@dataclass
class CorpusScan:
    """What one pass over the corpus found: its documents, those with text in each block, the first empty
    one, and the checksum of its ids and texts."""

    count: int
    blocks: list[int]
    first_empty: str | None
    sha256: str

    @property
    def kept(self) -> int:
        return sum(self.blocks)


def scan_corpus(docs: Iterable[tuple[str, str]], block_docs: int) -> CorpusScan:
    """Check the doc ids (valid, none repeated), count the documents with text per block of `block_docs`
    and checksum the corpus, before any encoding."""
    seen: set[str] = set()
    digest = hashlib.sha256()
    blocks: list[int] = []
    first_empty = None
    for position, (doc_id, text) in enumerate(hashed(docs, digest)):
        check_doc_id(doc_id, position, seen)
        if position % block_docs == 0:
            blocks.append(0)
        if text.strip():
            blocks[-1] += 1
        elif first_empty is None:
            first_empty = doc_id
    return CorpusScan(len(seen), blocks, first_empty, digest.hexdigest())


def hashed(docs: Iterable[tuple[str, str]], digest: Any) -> Iterator[tuple[str, str]]:
    """The documents, each added to `digest` (its id and text, length-prefixed) as it passes."""
    for doc_id, text in docs:
        for part in (doc_id, text):
            data = str(part).encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little") + data)
        yield doc_id, text


def check_spec(engine: Engine, spec: str | None) -> None:
    """Refuse an index spec before the corpus is encoded (the builders check it again)."""
    family = engine.family
    if spec is None:
        return
    if spec_head(spec) == "qdrant":
        parse_qdrant_spec(spec, family)
    elif family == "sparse":
        check_sparse_spec(spec)
    elif family == "coil" and spec != "exact":
        raise LirError(f"{spec!r} is not a COIL index spec (exact: inverted lists, exact scores)")
    elif family == "multi-vector" and spec_head(spec) == "plaid":
        parse_plaid_spec(spec)
    elif family in ("single-vector", "multi-vector"):
        factory = spec if family == "single-vector" else parse_multi_vector_spec(spec)[0]
        if factory != "exact" or family == "single-vector":
            try:
                faiss.index_factory(int(engine.embedding_dim), factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError:
                raise LirError(
                    f"{spec!r} is not a Faiss index factory string (e.g. Flat, HNSW32, IVF1024,Flat)"
                ) from None


def work_folder(output: str | Path) -> Path:
    """The work folder of the blocks of an index being written to `output`: beside it, or for a Qdrant
    collection URL in the current folder, named after the URL."""
    if is_qdrant_url(str(output)):
        return Path.cwd() / (re.sub(r"[^A-Za-z0-9._-]+", "_", str(output)) + WORK_SUFFIX)
    return Path(os.path.abspath(output) + WORK_SUFFIX)


def run_record(engine: Engine, scan: CorpusScan, spec: str | None, block_docs: int, batch_size: int) -> dict[str, Any]:
    """What the blocks of a run are encodings of (run.json, without its checksum)."""
    return {
        "format": RUN_FORMAT,
        "version": 1,
        "corpus": {"documents": scan.count, "sha256": scan.sha256},
        "model": engine.fingerprint,
        "doc_graph": {"variant": engine.variant, "sha256": engine.doc_graph_sha256},
        "spec": spec or DEFAULT_SPECS[engine.family],
        "block_docs": block_docs,
        "batch_size": batch_size,  # int8 graphs quantize per batch: the batches are part of the encodings
    }


RECORD_PARTS = {
    "corpus": "the corpus",
    "model": "the model",
    "doc_graph": "the doc graph (variant)",
    "spec": "the index spec",
    "block_docs": "--block-docs",
    "batch_size": "--batch-size",
}


@contextlib.contextmanager
def open_work(work: Path, record: dict[str, Any], resume: bool, overwrite: bool) -> Iterator[Path]:
    """The work folder, locked for this run: new, or (with `resume`) that of the same run; removed on leaving
    normally, kept on an error or a kill when it holds a finished block (to be resumed)."""
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise LirError(f"{work} exists and is not a folder of index blocks")
    if work.exists() and any(work.iterdir()):
        with locked(work):
            found = read_run(work)
            differ = [what for key, what in RECORD_PARTS.items() if found.get(key) != record[key]]
            if resume and (differ or found != record):
                raise LirError(
                    f"{work} holds the blocks of another run ({', '.join(differ) or 'its record'} differ): "
                    "resume with the same corpus, model and options, or pass --overwrite to start again"
                )
            if not resume and not overwrite:
                raise LirError(
                    f"{work} holds the blocks of an interrupted run: pass --resume to continue it "
                    "(or --overwrite to start again)"
                )
            if not resume:
                shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    with locked(work):  # a second run is refused here, before it could remove anything
        try:
            if not (work / RUN_FILE).exists():
                atomic_write_text(work / RUN_FILE, json.dumps(record | {"checksum": json_checksum(record)}) + "\n")
            for stale in work.glob(".block-*"):  # staging folders of a killed run
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(work / JOINED, ignore_errors=True)
            yield work
        except BaseException:
            if not any(work.glob("block-*")):  # nothing to resume (a full disk at the first block): leave nothing
                shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def locked(work: Path) -> Iterator[None]:
    """An exclusive lock on the work folder, refused in one line while another run holds it."""
    fd = os.open(work, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LirError(f"another lir index is writing {work}") from None
        yield
    finally:
        os.close(fd)


def read_run(work: Path) -> dict[str, Any]:
    """run.json of a work folder, refused unless it is one, whole."""
    if not (work / RUN_FILE).is_file():
        raise LirError(f"{work} exists and is not a folder of index blocks (no {RUN_FILE})")
    found = read_json(work / RUN_FILE)
    checksum = found.pop("checksum", None)
    if found.get("format") != RUN_FORMAT or checksum != json_checksum(found):
        raise LirError(f"{work / RUN_FILE} does not match its checksum: delete {work} to start again")
    return found


def block_folder(work: Path, number: int) -> Path:
    return work / f"block-{number:06d}"


def block_arrays(encoded: Encoded) -> dict[str, np.ndarray]:
    """A block's encodings as the named arrays of its family (`ARRAYS`)."""
    if isinstance(encoded, np.ndarray):
        return {"embeddings": encoded}
    lengths = encoded.lengths.astype(np.int64)
    if isinstance(encoded, MultiVectors):
        return {"lengths": lengths, "vectors": encoded.vectors}
    if isinstance(encoded, SparseVectors):
        return {"lengths": lengths, "term_ids": encoded.term_ids, "weights": encoded.weights}
    return {"lengths": lengths, "cls": encoded.cls, "vectors": encoded.vectors, "token_ids": encoded.token_ids}


def encodings(family: str, arrays: dict[str, np.ndarray], dim: int) -> Encoded:
    """The inverse of `block_arrays`."""
    if family == "single-vector":
        return arrays["embeddings"]
    offsets = np.zeros(len(arrays["lengths"]) + 1, np.int64)
    np.cumsum(arrays["lengths"], out=offsets[1:])
    if family == "multi-vector":
        return MultiVectors(arrays["vectors"], offsets)
    if family == "sparse":
        return SparseVectors(arrays["term_ids"], arrays["weights"], offsets, dim)
    return CoilVectors(arrays["cls"], arrays["vectors"], arrays["token_ids"], offsets)


def write_block(work: Path, number: int, run: str, doc_ids: list[str], arrays: dict[str, np.ndarray]) -> None:
    """Write a finished block atomically: its arrays and block.json (doc ids, checksums), then one rename."""
    final = block_folder(work, number)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=work))
    try:
        for name, array in arrays.items():
            write_array(np.ascontiguousarray(array))(staging / f"{name}.npy")
        record = {
            "format": BLOCK_FORMAT,
            "version": 1,
            "run": run,
            "block": number,
            "doc_ids": doc_ids,
            "arrays": {name: {"dtype": str(a.dtype), "shape": list(a.shape)} for name, a in arrays.items()},
            "sha256": {f"{name}.npy": sha256_file(staging / f"{name}.npy") for name in arrays},
        }
        atomic_write_text(staging / BLOCK_FILE, json.dumps(record | {"checksum": json_checksum(record)}))
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_block(work: Path, number: int, run: str, family: str, expected: int) -> dict[str, Any]:
    """block.json of a finished block, refused in one line unless the block is whole (every file matches its
    checksum), of this run, and holds the `expected` documents."""
    folder = block_folder(work, number)
    record = read_json(folder / BLOCK_FILE) if (folder / BLOCK_FILE).is_file() else {}
    checksum = record.pop("checksum", None)
    hint = f"delete {folder} to encode it again"
    if record.get("format") != BLOCK_FORMAT or checksum != json_checksum(record):
        raise LirError(f"{folder / BLOCK_FILE} is missing or does not match its checksum: {hint}")
    if record.get("run") != run or record.get("block") != number or set(record["arrays"]) != set(ARRAYS[family]):
        raise LirError(f"{folder} is not a block of this run: {hint}")
    for name, spec in record["arrays"].items():
        if not (folder / f"{name}.npy").is_file():
            raise LirError(f"{folder / name}.npy is missing: the block is not whole, {hint}")
        if sha256_file(folder / f"{name}.npy") != record["sha256"].get(f"{name}.npy"):
            raise LirError(f"{folder / name}.npy does not match its checksum: the block is corrupted, {hint}")
        rows = spec["shape"][0]
        if name in PER_DOCUMENT and rows != expected:
            raise LirError(f"{folder} holds {rows} documents where the corpus has {expected}: {hint}")
    if len(record["doc_ids"]) != expected:
        raise LirError(f"{folder} holds {len(record['doc_ids'])} doc ids where the corpus has {expected}: {hint}")
    return record


def block_array(work: Path, number: int, name: str, spec: dict[str, Any]) -> np.ndarray:
    """One array of a block read by `read_block`, memory-mapped, of the dtype and shape it records."""
    array = load_array(block_folder(work, number), f"{name}.npy", spec["dtype"], len(spec["shape"]))
    if list(array.shape) != spec["shape"]:
        raise LirError(f"{block_folder(work, number) / name}.npy does not hold the shape its block.json records")
    return array


def corpus_blocks(docs: Iterable[tuple[str, str]], block_docs: int) -> Iterator[list[tuple[str, str]]]:
    """The documents with text of consecutive runs of `block_docs` corpus documents."""
    stream = iter(docs)
    while chunk := list(islice(stream, block_docs)):
        yield [(doc_id, text) for doc_id, text in chunk if text.strip()]


def join_blocks(work: Path, records: list[dict[str, Any]], family: str) -> dict[str, np.ndarray]:
    """The arrays of all blocks end to end, copied into memory-mapped files one block at a time."""
    folder = work / JOINED
    folder.mkdir()
    joined = {}
    for name in ARRAYS[family]:
        specs = [record["arrays"][name] for record in records]
        dtype, shape = np.dtype(specs[0]["dtype"]), (sum(s["shape"][0] for s in specs), *specs[0]["shape"][1:])
        if shape[0] == 0:
            joined[name] = np.empty(shape, dtype)
            continue
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        start = 0
        for number, spec in enumerate(specs):
            part = block_array(work, number, name, spec)
            out[start : start + len(part)] = part
            start += len(part)
            del part
        out.flush()
        del out
        joined[name] = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    return joined


BlockEncoding = Callable[[Iterable[tuple[int, list[str]]], int], Iterator[tuple[int, dict[str, np.ndarray]]]]
"""Encodes blocks: (block number, texts) in, (block number, `block_arrays`) out in any order; the batch size."""


def local_encoding(engine: Engine) -> BlockEncoding:
    """Blocks encoded one after the other by `engine`, in this process."""

    def encode(blocks: Iterable[tuple[int, list[str]]], batch_size: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for number, texts in blocks:
            yield number, block_arrays(engine.encode_docs(texts, batch_size=batch_size))

    return encode


def stream_index(
    engine: Engine,
    corpus: Callable[[], Iterable[tuple[str, str]]],
    output: str | Path,
    built_by: dict[str, str | None],
    spec: str | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
    block_docs: int = DEFAULT_BLOCK_DOCS,
    resume: bool = False,
    progress: bool = True,
    encode_blocks: BlockEncoding | None = None,
) -> str:
    """Encode the documents of `corpus()` (a fresh iterator of (doc_id, text) at each call: it is read twice)
    in blocks of `block_docs`, build the index of the engine's family from them (`spec` as in `build_index`),
    record `built_by` and save it to `output`; returns the summary line. See the module for the work folder
    and `resume`. Empty documents are left out and counted, as `write_index` does. `encode_blocks` encodes
    the missing blocks elsewhere (Ray actors, lir.clients.ray_index); by default `engine` encodes them here."""
    check_index_output(output, overwrite)
    spec = target_spec(output, spec)
    check_spec(engine, spec)
    scan = scan_corpus(corpus(), block_docs)
    if scan.count == 0:
        raise LirError("the corpus holds no documents: nothing to index")
    if scan.kept == 0:
        raise LirError(f"all {scan.count} documents are empty: nothing to index")
    record = run_record(engine, scan, spec, block_docs, batch_size)
    run = json_checksum(record)
    family = engine.family
    with open_work(work_folder(output), record, resume, overwrite) as work:
        finished = {n for n in range(len(scan.blocks)) if block_folder(work, n).exists()}
        for number in sorted(finished):  # refused before any encoding unless whole and of this run
            read_block(work, number, run, family, scan.blocks[number])
        resumed = sum(scan.blocks[number] for number in finished)
        encoded = 0
        start, digest = time.perf_counter(), hashlib.sha256()
        pending: dict[int, list[str]] = {}  # block number → its doc ids, while its texts are being encoded

        def missing() -> Iterator[tuple[int, list[str]]]:
            for number, chunk in enumerate(corpus_blocks(hashed(corpus(), digest), block_docs)):
                if number not in finished:
                    pending[number] = [doc_id for doc_id, _ in chunk]
                    yield number, [text for _, text in chunk]

        with tqdm(total=scan.kept, initial=resumed, desc="indexing", unit="doc", disable=not progress) as bar:
            for number, arrays in (encode_blocks or local_encoding(engine))(missing(), batch_size):
                doc_ids = pending.pop(number)
                write_block(work, number, run, doc_ids, arrays)
                encoded += len(doc_ids)
                bar.update(len(doc_ids))
        seconds = time.perf_counter() - start
        if digest.hexdigest() != scan.sha256:
            raise LirError("the corpus changed while it was indexed: index it again with --overwrite")
        records = [read_block(work, number, run, family, count) for number, count in enumerate(scan.blocks)]
        docs = encodings(family, join_blocks(work, records, family), int(engine.embedding_dim))
        index = build_index(engine, docs, [doc_id for r in records for doc_id in r["doc_ids"]], spec)
        index.info["engine"] = built_by | {"doc_graph_sha256": engine.doc_graph_sha256}
        index.info["empty_docs_skipped"] = scan.count - scan.kept
        index.save(output, overwrite=overwrite)
        del index, docs
    skipped = scan.count - scan.kept
    note = f", skipped {skipped} empty (e.g. {scan.first_empty!r})" if skipped else ""
    note += f", {resumed} resumed from finished blocks" if resumed else ""
    return (
        f"indexed {scan.kept} documents in {seconds:.1f} s ({encoded / max(seconds, 1e-9):.1f} docs/s, "
        f"{built_by['variant']}{note}) → {output}"
    )
