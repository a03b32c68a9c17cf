"""Documents, queries and qrels from local files (BEIR folder, JSONL, TSV, TREC qrels) or ir_datasets ids;
re-ranking candidates from a header TSV.

A spec string is a path when it exists, otherwise an ir_datasets id (`beir/scifact/test`). BEIR folders
take a split (`test`, `train`): queries are those judged in `qrels/<split>.tsv`. Document text follows
BEIR/MTEB: `title + " " + text`, stripped.

Every reader reads the file or fails in one LirError line naming `file:line`: the text is UTF-8 (a BOM and
`\\r\\n` line endings are fine), ids are ones a TREC run can hold and are unique within a corpus or a
queries file, queries are not empty (documents may be). ir_datasets is read offline: a dataset whose files
are not in IR_DATASETS_HOME fails at once, in one line, without trying the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lir.errors import LirError, one_line
from lir.trec import Qrels, check_id, read_lines, read_qrels, shown

ID_KEYS = ("_id", "id", "doc_id", "docid", "query_id", "qid")
JSON_TYPES = ((bool, "true or false"), (dict, "an object"), (list, "an array"), (str, "a string"))


def iter_docs(spec: str) -> Iterator[tuple[str, str]]:
    """(doc_id, text) pairs of a corpus spec."""
    path = Path(spec)
    if path.exists():
        yield from _read_texts(path / "corpus.jsonl" if path.is_dir() else path, "doc")
    else:
        for doc in irds_iter(spec, "docs"):
            yield check_id(doc.doc_id, "doc id", f"ir_datasets {spec}"), doc.default_text().strip()


def read_docs(spec: str, ids: Collection[str]) -> dict[str, str]:
    """doc_id → text of the documents `ids` only: local files are streamed keeping those, an ir_datasets
    corpus is looked up in its docs store. Ids not in the corpus are left out."""
    wanted = set(ids)
    if Path(spec).exists():
        return {doc_id: text for doc_id, text in iter_docs(spec) if doc_id in wanted}
    dataset = irds_dataset(spec, "docs")
    with _irds_errors(spec):
        found = dataset.docs_store().get_many(wanted)
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
    lines = read_lines(path)
    header = [name.strip().lower() for name in next(lines, (1, ""))[1].split("\t")]
    qid, query, docid, text = (_column(header, names, path) for names in CANDIDATE_COLUMNS)
    title = header.index("title") if "title" in header else None
    queries: dict[str, str] = {}
    candidates: Candidates = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        where, fields = f"{path}:{lineno}", line.split("\t")
        if len(fields) != len(header):
            raise LirError(f"{where}: {len(fields)} columns, the header names {len(header)}")
        passage = f"{fields[title]} {fields[text]}" if title is not None else fields[text]
        query_id, query_text = _checked("query", fields[qid], fields[query], where)
        queries.setdefault(query_id, query_text)
        candidates.setdefault(query_id, []).append((check_id(fields[docid], "doc id", where), passage.strip()))
    return queries, candidates


def _column(header: list[str], names: tuple[str, ...], path: str | Path) -> int:
    found = next((header.index(name) for name in names if name in header), None)
    if found is None:
        raise LirError(f"{path}:1: the header names no {names[0]} column (one of {', '.join(names)})")
    return found


def read_queries(spec: str, split: str | None = None) -> dict[str, str]:
    """query_id → text of a query spec; a BEIR folder keeps the queries judged in `split`."""
    path = Path(spec)
    if path.is_dir():
        queries = dict(_read_texts(path / "queries.jsonl", "query"))
        if split:
            judged = read_qrels(path / "qrels" / f"{split}.tsv")
            queries = {qid: text for qid, text in queries.items() if qid in judged}
        return queries
    if path.exists():
        return dict(_read_texts(path, "query"))
    where = f"ir_datasets {spec}"
    return dict(_checked("query", q.query_id, q.default_text(), where) for q in irds_iter(spec, "queries"))


def read_qrels_spec(spec: str, split: str | None = None) -> Qrels:
    """Qrels from a TREC/BEIR qrels file, a BEIR folder plus split, or an ir_datasets id."""
    path = Path(spec)
    if path.is_dir():
        if not split:
            raise LirError(f"{spec} is a BEIR folder: name the qrels split (e.g. --split test)")
        return read_qrels(path / "qrels" / f"{split}.tsv")
    if path.exists():
        return read_qrels(path)
    qrels: Qrels = {}
    for q in irds_iter(spec, "qrels"):
        qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
    return qrels


def _read_texts(path: Path, kind: str) -> Iterator[tuple[str, str]]:
    """(id, text) of each line of a JSONL (`.jsonl`) or TSV file of documents or queries (`kind`)."""
    parse = _parse_json if path.suffix == ".jsonl" else _parse_tsv
    seen: set[str] = set()
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        item_id, text = _checked(kind, *parse(line, where), where)
        if item_id in seen:
            raise LirError(f"{where}: {kind} id {shown(item_id)} appears twice (it is on an earlier line too)")
        seen.add(item_id)
        yield item_id, text


def _checked(kind: str, item_id: str, text: str, where: str) -> tuple[str, str]:
    """(id, text) once the id is one a TREC run can hold and, for a query, the text is not empty."""
    check_id(item_id, f"{kind} id", where)
    if kind == "query" and not text.strip():
        raise LirError(f"{where}: query {shown(item_id)} is empty")
    return item_id, text


def _parse_json(line: str, where: str) -> tuple[str, str]:
    """(id, `title text`) of a JSONL line: an object with an id (a string or an integer) under one of
    ID_KEYS, and `title` and `text` strings or null (or left out)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LirError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # more digits than int() takes; nesting deeper than Python's stack
        raise LirError(f"{where}: not valid JSON for lir ({one_line(str(exc))})") from None
    if not isinstance(record, dict):
        raise LirError(f"{where}: expected a JSON object with an id and a text, found {_json_type(record)}")
    key = next((key for key in ID_KEYS if key in record), None)
    if key is None:
        raise LirError(f"{where}: the JSON object has no id (one of {', '.join(ID_KEYS)})")
    item_id = record[key]
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
        raise LirError(f"{where}: {key!r} must be a string or an integer, found {_json_type(item_id)}")
    title, text = (_text_field(record, name, where) for name in ("title", "text"))
    return str(item_id), f"{title} {text}".strip()


def _text_field(record: dict[str, Any], name: str, where: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LirError(f"{where}: {name!r} must be a string or null, found {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LirError(
            f"{where}: {name!r} holds a lone surrogate escape (\\ud800-\\udfff), which is no Unicode text: refused"
        ) from None
    return value


def _json_type(value: object) -> str:
    return "null" if value is None else next((name for kind, name in JSON_TYPES if isinstance(value, kind)), "a number")


def _parse_tsv(line: str, where: str) -> tuple[str, str]:
    fields = line.split("\t")
    if len(fields) not in (2, 3):
        raise LirError(f"{where}: expected 'id<TAB>text' or 'id<TAB>title<TAB>text', found {len(fields)} columns")
    return fields[0], " ".join(fields[1:]).strip()


class _Refused(Exception):
    """A download that lir refused: it reads ir_datasets offline."""


def _refuse_download(source: object, *args: object, **kwargs: object) -> None:
    raise _Refused(getattr(source, "url", None) or getattr(source, "uri", None) or repr(source))


def _ir_datasets(spec: str) -> Any:
    """ir_datasets, offline and quiet: each source that would use the network raises _Refused at once, and
    its progress and download logs stay out of lir's one-line errors."""
    try:
        import ir_datasets
        from ir_datasets.util import download
    except ImportError:  # pragma: no cover - ir_datasets is a core dependency
        raise LirError(f"{spec} is not a path, and ir_datasets is not installed") from None
    for source in (download.RequestsDownload, download.GoogleDriveDownload, download.GoogleCloudBucketStream):
        source.stream = _refuse_download
    ir_datasets.log.easy().logger().setLevel(logging.ERROR)
    return ir_datasets


def irds_dataset(spec: str, what: str) -> Any:
    """An ir_datasets dataset that provides `what`, read offline, with one-line errors instead of tracebacks."""
    ir_datasets = _ir_datasets(spec)
    with _irds_errors(spec):
        try:
            dataset = ir_datasets.load(spec)
        except KeyError:
            raise LirError(f"{spec} is neither an existing file or folder nor an ir_datasets id") from None
        if not getattr(dataset, f"has_{what}")():
            raise LirError(f"ir_datasets {spec} has no {what}")
    return dataset


def irds_iter(spec: str, what: str) -> Iterator[Any]:
    """The records of an ir_datasets dataset's `what` (docs, queries, qrels, docpairs, scoreddocs): a file
    that is not downloaded, or any other failure of ir_datasets, is one LirError line."""
    dataset = irds_dataset(spec, what)
    with _irds_errors(spec):
        yield from getattr(dataset, f"{what}_iter")()


@contextmanager
def _irds_errors(spec: str) -> Iterator[None]:
    """Any failure of ir_datasets inside as one LirError line; a file it lacks is named."""
    try:
        yield
    except LirError:
        raise
    except Exception as exc:
        from ir_datasets.util import home_path

        home, missing = home_path(), _missing(exc)
        if missing is not None:
            raise LirError(
                f"ir_datasets {spec} is not available offline: IR_DATASETS_HOME={home} lacks {missing}; "
                "download it where the network is reachable (lir never downloads)"
            ) from None
        failure = one_line(str(exc)) or "no message"
        raise LirError(
            f"ir_datasets {spec}: reading IR_DATASETS_HOME={home} failed: {type(exc).__name__}: {failure}"
        ) from exc


def _missing(exc: object, depth: int = 0) -> str | None:
    """The refused download (its URL) or the absent file (its path) that `exc` is or holds: ir_datasets
    re-raises it, chains it, or lists it in `RuntimeError('All download sources failed', [(source, error)])`."""
    if isinstance(exc, (_Refused, FileNotFoundError)):
        return str(getattr(exc, "filename", None) or exc)
    if isinstance(exc, BaseException):
        inner: tuple[object, ...] = (exc.__cause__, exc.__context__, *exc.args)
    elif isinstance(exc, (list, tuple)):
        inner = tuple(exc)
    else:
        return None
    found = (_missing(item, depth + 1) for item in inner) if depth < 4 else ()
    return next((missing for missing in found if missing is not None), None)
