"""Property tests of every reader: for any bytes, and for well-formed files with bad bytes, random JSON values,
random columns and huge or non-finite numbers injected, a reader either succeeds with data that holds the
readers' rules or raises a one-line LirError naming the file; never another exception."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lir.collections import iter_docs, read_candidates, read_docs, read_qrels_spec, read_queries
from lir.errors import LirError
from lir.trec import read_run

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BAD_BYTES = [b"\xff", b"\x00", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r", b"\n", b"\t", b" ", b"\x0b", b'"']
HUGE = ["9" * 5000, "1e999", "-1e999", "NaN", "Infinity", "-0", "0x10", "1_000", "\u0661", "9" * 400]


def _valid_id(value: str) -> bool:
    return value.split() == [value] and value.isprintable()


def _texts_ok(pairs) -> None:
    """(id, text) pairs as the readers promise them: valid ids, texts that encode to UTF-8."""
    for item_id, text in pairs:
        assert _valid_id(item_id), item_id
        text.encode("utf-8")


def _docs(path: Path) -> None:
    docs = list(iter_docs(str(path)))
    _texts_ok(docs)
    assert len({doc_id for doc_id, _ in docs}) == len(docs)
    assert read_docs(str(path), [doc_id for doc_id, _ in docs[:3]]) == dict(docs[:3])


def _queries(path: Path, split: str | None = None) -> None:
    queries = read_queries(str(path), split)
    _texts_ok(queries.items())
    assert all(text.strip() for text in queries.values())


def _qrels(path: Path, split: str | None = None) -> None:
    for qid, judged in read_qrels_spec(str(path), split).items():
        assert _valid_id(qid) and all(_valid_id(did) and isinstance(grade, int) for did, grade in judged.items())


def _run(path: Path) -> None:
    for qid, scores in read_run(path).items():
        assert _valid_id(qid) and all(_valid_id(did) and math.isfinite(score) for did, score in scores.items())


def _candidates(path: Path) -> None:
    queries, candidates = read_candidates(path)
    _texts_ok(queries.items())
    assert set(queries) == set(candidates) and all(text.strip() for text in queries.values())
    for ranked in candidates.values():
        _texts_ok(ranked)


def _check(read, path: Path, data: bytes, named: Path | None = None) -> None:
    """`read(path)` with `data` in `named` (default: `path`) succeeds, or fails in one LirError line naming
    that file."""
    (named or path).write_bytes(data)
    try:
        read(path)
    except LirError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert str(named or path) in message, message


@st.composite
def corrupted(draw, line: st.SearchStrategy[str]) -> bytes:
    """Lines from `line`, joined by `\\n` or `\\r\\n`, maybe after a BOM, with a few bad bytes injected."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = draw(st.sampled_from(["", "\ufeff"])) + end.join(draw(st.lists(line, max_size=6))) + end
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from(BAD_BYTES))
    return bytes(data)


ODD_TEXT = st.text(max_size=8) | st.sampled_from(["", " ", "\t", "\u00a0", "\u200b", "a b", "\x1c", "\u2028"])
NUMBERS = st.integers() | st.floats() | st.sampled_from([10**400, -(10**30)])
JSON_TEXT = ODD_TEXT | st.sampled_from(["\ud800", "x\udfffy"])  # lone surrogates: JSON escapes them
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=6,
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        key: JSON_VALUES | st.sampled_from(["d1", "d2", "q1", 1, 2]) for key in ("_id", "id", "qid", "title", "text")
    },
)
JSON_LINES = st.one_of(
    st.builds(json.dumps, RECORDS, ensure_ascii=st.booleans()),
    st.builds(json.dumps, JSON_VALUES),
    st.sampled_from(HUGE).map(lambda number: '{"_id": ' + number + ', "text": "x"}'),
    st.sampled_from(["[" * 5000, "{", '{"_id": "d1", "text": "x"} trailing', ""]),
    ODD_TEXT,
)
CELLS = ODD_TEXT | st.sampled_from(["d1", "d2", "q1", "Q0", "1", "0", "2.5", "sys", *HUGE])
TSV_LINES = st.lists(CELLS, max_size=7).map("\t".join)
TEXT_LINES = TSV_LINES | st.lists(CELLS, min_size=2, max_size=3).map("\t".join)
SPACED_LINES = st.lists(CELLS, max_size=8).map(" ".join) | TSV_LINES
RUN_LINES = SPACED_LINES | st.tuples(CELLS, CELLS, NUMBERS.map(repr) | CELLS).map(
    lambda cells: f"{cells[0]} Q0 {cells[1]} 1 {cells[2]} sys"
)
QRELS_LINES = SPACED_LINES | st.just("query-id\tcorpus-id\tscore") | st.tuples(CELLS, CELLS, CELLS).map("\t".join)
HEADERS = st.sampled_from(["qid\tquery\tdocid\tpassage", "qid\tquery\tdocid\trank\tscore\ttitle\tpassage", "qid"])
CANDIDATE_LINES = TSV_LINES | st.lists(CELLS, min_size=4, max_size=4).map("\t".join)

FILE_READERS = [
    ("corpus.jsonl", _docs, JSON_LINES),
    ("docs.tsv", _docs, TEXT_LINES),
    ("queries.jsonl", _queries, JSON_LINES),
    ("queries.tsv", _queries, TEXT_LINES),
    ("qrels.txt", _qrels, QRELS_LINES),
    ("run.trec", _run, RUN_LINES),
    ("candidates.tsv", _candidates, TSV_LINES),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name, read, lines", FILE_READERS, ids=[name for name, *_ in FILE_READERS])
def test_any_bytes(folder, name, read, lines):
    @FUZZ
    @given(data=st.binary(max_size=300))
    def check(data):
        _check(read, folder / name, data)

    check()


@pytest.mark.parametrize("name, read, lines", FILE_READERS, ids=[name for name, *_ in FILE_READERS])
def test_corrupted_lines(folder, name, read, lines):
    @FUZZ
    @given(data=corrupted(lines))
    def check(data):
        _check(read, folder / name, data)

    check()


@FUZZ
@given(header=HEADERS, data=corrupted(CANDIDATE_LINES))
def test_candidates_with_a_header(folder, header, data):
    _check(_candidates, folder / "candidates.tsv", header.encode() + b"\n" + data)


BEIR_FILES = {
    "corpus.jsonl": '{"_id": "d1", "title": "T", "text": "x"}\n',
    "queries.jsonl": '{"_id": "q1", "text": "why"}\n',
    "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
}
BEIR_READERS = [
    ("corpus.jsonl", JSON_LINES),
    ("queries.jsonl", JSON_LINES),
    ("qrels/test.tsv", QRELS_LINES),
]


def _beir(path: Path) -> None:
    _docs(path)
    _queries(path, "test")
    _qrels(path, "test")


@pytest.mark.parametrize("name, lines", BEIR_READERS, ids=[name for name, _ in BEIR_READERS])
def test_beir_folder(folder, name, lines):
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    for other, content in BEIR_FILES.items():
        (beir / other).write_text(content)

    @FUZZ
    @given(data=corrupted(lines) | st.binary(max_size=200))
    def check(data):
        _check(_beir, beir, data, beir / name)

    check()
