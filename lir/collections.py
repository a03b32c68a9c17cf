"""Documents, queries and qrels from local files (BEIR folder, JSONL, TSV, TREC qrels) or ir_datasets ids;
re-ranking candidates from a header TSV.

A spec string is a path when it exists, otherwise an ir_datasets id (`beir/scifact/test`). BEIR folders
take a split (`test`, `train`): queries are those judged in `qrels/<split>.tsv`. Document text follows
BEIR/MTEB: `title + " " + text`, stripped.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

from lir.errors import LirError
from lir.trec import Qrels, read_qrels

ID_KEYS = ("_id", "id", "doc_id", "docid", "query_id", "qid")


def iter_docs(spec: str) -> Iterator[tuple[str, str]]:
    """(doc_id, text) pairs of a corpus spec."""
    path = Path(spec)
    if path.is_dir():
        yield from _iter_jsonl(_require(path / "corpus.jsonl"))
    elif path.is_file():
        yield from _iter_jsonl(path) if path.suffix == ".jsonl" else _iter_tsv(path)
    else:
        for doc in irds_dataset(spec, "docs").docs_iter():
            yield doc.doc_id, doc.default_text().strip()


def read_docs(spec: str, ids: Collection[str]) -> dict[str, str]:
    """doc_id → text of the documents `ids` only: local files are streamed keeping those, an ir_datasets
    corpus is looked up in its docs store. Ids not in the corpus are left out."""
    wanted = set(ids)
    if Path(spec).exists():
        return {doc_id: text for doc_id, text in iter_docs(spec) if doc_id in wanted}
    found = irds_dataset(spec, "docs").docs_store().get_many(wanted)
    return {doc_id: doc.default_text().strip() for doc_id, doc in found.items()}


Candidates = dict[str, list[tuple[str, str]]]
"""query_id → its candidates (doc_id, text), best first."""
CANDIDATE_COLUMNS = (
    ("qid", "query_id", "query-id"),
    ("query", "query_text"),
    ("docid", "doc_id", "pid", "corpus-id"),
    ("passage", "text", "doc_text", "document"),
)
"""The header names accepted for the query id, query text, doc id and passage columns."""


def read_candidates(path: str | Path) -> tuple[dict[str, str], Candidates]:
    """Queries and their candidates from a TSV whose header names the query id, query, doc id and passage
    columns (e.g. `qid query docid rank score passage`; a `title` column goes before the passage). Each
    query's candidates are taken in file order, best first."""
    file = _require(Path(path))
    csv.field_size_limit(sys.maxsize)
    queries: dict[str, str] = {}
    candidates: Candidates = {}
    with open(file, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.strip().lower() for name in next(reader, [])]
        qid, query, docid, text = (_column(header, names, file) for names in CANDIDATE_COLUMNS)
        title = header.index("title") if "title" in header else None
        for lineno, fields in enumerate(reader, 2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise LirError(f"{file}:{lineno}: {len(fields)} columns, the header names {len(header)}")
            passage = f"{fields[title]} {fields[text]}" if title is not None else fields[text]
            queries.setdefault(fields[qid], fields[query])
            candidates.setdefault(fields[qid], []).append((fields[docid], passage.strip()))
    return queries, candidates


def _column(header: list[str], names: tuple[str, ...], file: Path) -> int:
    found = next((header.index(name) for name in names if name in header), None)
    if found is None:
        raise LirError(f"{file}: the header names no {names[0]} column (one of {', '.join(names)})")
    return found


def read_queries(spec: str, split: str | None = None) -> dict[str, str]:
    """query_id → text of a query spec; a BEIR folder keeps the queries judged in `split`."""
    path = Path(spec)
    if path.is_dir():
        queries = dict(_iter_jsonl(_require(path / "queries.jsonl")))
        if split:
            judged = read_qrels(_require(path / "qrels" / f"{split}.tsv"))
            queries = {qid: text for qid, text in queries.items() if qid in judged}
        return queries
    if path.is_file():
        return dict(_iter_jsonl(path) if path.suffix == ".jsonl" else _iter_tsv(path))
    return {q.query_id: q.default_text() for q in irds_dataset(spec, "queries").queries_iter()}


def read_qrels_spec(spec: str, split: str | None = None) -> Qrels:
    """Qrels from a TREC/BEIR qrels file, a BEIR folder plus split, or an ir_datasets id."""
    path = Path(spec)
    if path.is_dir():
        if not split:
            raise LirError(f"{spec} is a BEIR folder: name the qrels split (e.g. --split test)")
        return read_qrels(_require(path / "qrels" / f"{split}.tsv"))
    if path.is_file():
        return read_qrels(path)
    qrels: Qrels = {}
    for q in irds_dataset(spec, "qrels").qrels_iter():
        qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
    return qrels


def _require(path: Path) -> Path:
    if not path.is_file():
        raise LirError(f"{path} does not exist")
    return path


def _iter_jsonl(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = next(k for k in ID_KEYS if k in record)
            except (json.JSONDecodeError, StopIteration):
                raise LirError(f"{path}:{lineno}: expected a JSON object with an id and a text") from None
            text = f"{record.get('title') or ''} {record.get('text') or ''}".strip()
            yield str(record[key]), text


def _iter_tsv(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 2:
                yield fields[0], fields[1].strip()
            elif len(fields) == 3:
                yield fields[0], f"{fields[1]} {fields[2]}".strip()
            else:
                raise LirError(f"{path}:{lineno}: expected 'id<TAB>text' or 'id<TAB>title<TAB>text'")


def irds_dataset(spec: str, what: str):
    """An ir_datasets dataset that provides `what`, with one-line errors instead of tracebacks."""
    try:
        import ir_datasets
    except ImportError:  # pragma: no cover - ir_datasets is a core dependency
        raise LirError(f"{spec} is not a path, and ir_datasets is not installed") from None
    try:
        dataset = ir_datasets.load(spec)
    except KeyError:
        raise LirError(f"{spec} is neither an existing file or folder nor an ir_datasets id") from None
    if not getattr(dataset, f"has_{what}")():
        raise LirError(f"ir_datasets {spec} has no {what}")
    return dataset
