"""One test per input defect of the readers: each file a user can hand lir reads, or fails in one line
naming the file and line (or the id): no traceback, nothing silently lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lir.collections import iter_docs, read_candidates, read_docs, read_qrels_spec, read_queries
from lir.errors import LirError
from lir.trec import read_qrels, read_run


def _docs(path):
    return list(iter_docs(str(path)))


def _queries(path):
    return read_queries(str(path))


def _qrels(path):
    return read_qrels_spec(str(path))


READERS = {
    "corpus.jsonl": (_docs, '{"_id": "d1", "title": "T", "text": "x"}\n{"_id": "d2", "text": "y"}\n'),
    "docs.tsv": (_docs, "d1\tx\nd2\tT\ty\n"),
    "queries.jsonl": (_queries, '{"_id": "q1", "text": "why"}\n{"_id": "q2", "text": "how"}\n'),
    "queries.tsv": (_queries, "q1\twhy\nq2\thow\n"),
    "run.trec": (read_run, "q1 Q0 d1 1 2.5 sys\nq1 Q0 d2 2 1.5 sys\n"),
    "qrels.txt": (_qrels, "q1 0 d1 1\nq2 0 d2 0\n"),
    "qrels.tsv": (_qrels, "query-id\tcorpus-id\tscore\nq1\td1\t1\n"),
    "candidates.tsv": (read_candidates, "qid\tquery\tdocid\tpassage\nq1\twhy\td1\tx\n"),
}


def _refused(read, path, data: bytes | str, *parts: str) -> str:
    """The one-line LirError that reading `data` from `path` raises; it names each of `parts`."""
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    with pytest.raises(LirError) as caught:
        read(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    for part in parts:
        assert part in message, message
    return message


def _second_line(content: str, change) -> bytes:
    lines = content.encode().splitlines(keepends=True)
    return b"".join([lines[0], change(lines[1]), *lines[2:]])


@pytest.mark.parametrize("name", READERS)
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, name):
    read, content = READERS[name]
    data = _second_line(content, lambda line: line[:2] + b"\xff\xfe" + line[2:])
    _refused(read, tmp_path / name, data, f"{name}:2: not valid UTF-8")


@pytest.mark.parametrize("name", READERS)
def test_nul_bytes_name_the_line(tmp_path, name):
    read, content = READERS[name]
    data = _second_line(content, lambda line: line[:2] + b"\x00" + line[2:])
    _refused(read, tmp_path / name, data, f"{name}:2:", "NUL")


@pytest.mark.parametrize("name", READERS)
def test_a_utf8_bom_is_accepted(tmp_path, name):
    read, content = READERS[name]
    (tmp_path / name).write_bytes(content.encode())
    expected = read(tmp_path / name)
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + content.encode())
    assert read(tmp_path / name) == expected


@pytest.mark.parametrize("name", READERS)
def test_crlf_line_endings_read_as_lf(tmp_path, name):
    read, content = READERS[name]
    (tmp_path / name).write_bytes(content.encode())
    expected = read(tmp_path / name)
    (tmp_path / name).write_bytes(content.replace("\n", "\r\n").encode())
    assert read(tmp_path / name) == expected


def test_a_lone_surrogate_in_a_document_is_refused(tmp_path):
    line = '{"_id": "d1", "text": "broken \\ud800 text"}\n'
    _refused(_docs, tmp_path / "corpus.jsonl", line, "corpus.jsonl:1:", "'text'", "surrogate")


@pytest.mark.parametrize("value", ["5", "null", '"an id"', '["id", "text"]', "true", "3.5"])
def test_a_jsonl_line_that_is_no_object_is_refused(tmp_path, value):
    content = '{"_id": "d1", "text": "x"}\n' + value + "\n"
    _refused(_docs, tmp_path / "corpus.jsonl", content, "corpus.jsonl:2: expected a JSON object")


@pytest.mark.parametrize("value", ['{"a": 1}', "[1]", "true", "null", "1.5", "NaN"])
def test_an_id_that_is_no_string_or_integer_is_refused(tmp_path, value):
    line = '{"_id": ' + value + ', "text": "x"}\n'
    _refused(_docs, tmp_path / "corpus.jsonl", line, "corpus.jsonl:1:", "'_id' must be a string or an integer")


@pytest.mark.parametrize("field", ["title", "text"])
@pytest.mark.parametrize("value", ['{"a": 1}', '["x"]', "true", "7"])
def test_a_text_that_is_no_string_is_refused(tmp_path, field, value):
    line = '{"_id": "d1", "' + field + '": ' + value + "}\n"
    _refused(_docs, tmp_path / "corpus.jsonl", line, "corpus.jsonl:1:", f"'{field}' must be a string or null")


def test_integer_ids_and_null_texts_are_read(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": 7, "title": null, "text": "x"}\n{"_id": "d2", "text": null}\n')
    assert _docs(tmp_path / "corpus.jsonl") == [("7", "x"), ("d2", "")]


BAD_IDS = [
    ("corpus.jsonl", '{"_id": "d 1", "text": "x"}\n', 1, "'d 1'"),
    ("corpus.jsonl", '{"_id": "", "text": "x"}\n', 1, "''"),
    ("corpus.jsonl", '{"_id": "d\\t1", "text": "x"}\n', 1, "'d\\t1'"),
    ("corpus.jsonl", '{"_id": "d\\u00a01", "text": "x"}\n', 1, "'d\\xa01'"),
    ("corpus.jsonl", '{"_id": "d\\u200b", "text": "x"}\n', 1, "'d\\u200b'"),
    ("corpus.jsonl", '{"_id": "d\\n", "text": "x"}\n', 1, "'d\\n'"),
    ("docs.tsv", "d1 \tx\n", 1, "'d1 '"),
    ("queries.jsonl", '{"_id": "q 1", "text": "why"}\n', 1, "'q 1'"),
    ("queries.tsv", "q1\twhy\n\twhy\n", 2, "''"),
    ("run.trec", "q1 Q0 d\x01 1 1.0 s\n", 1, "'d\\x01'"),
    ("qrels.txt", "q\u200b1 0 d1 1\n", 1, "'q\\u200b1'"),
    ("candidates.tsv", "qid\tquery\tdocid\tpassage\nq1\twhy\td 1\tx\n", 2, "'d 1'"),
]


@pytest.mark.parametrize("name, content, lineno, shown", BAD_IDS)
def test_ids_a_trec_run_cannot_hold_are_refused(tmp_path, name, content, lineno, shown):
    _refused(READERS[name][0], tmp_path / name, content, f"{name}:{lineno}:", shown)


@pytest.mark.parametrize(
    "name, content",
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "y"}\n{"_id": "d1", "text": "z"}\n'),
        ("corpus.jsonl", '{"_id": "1", "text": "x"}\n{"_id": "d2", "text": "y"}\n{"_id": 1, "text": "z"}\n'),
        ("docs.tsv", "d1\tx\nd2\ty\nd1\tz\n"),
        ("queries.jsonl", '{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "y"}\n{"_id": "d1", "text": "z"}\n'),
        ("queries.tsv", "d1\tx\nd2\ty\nd1\tz\n"),
    ],
)
def test_duplicate_ids_are_refused_at_the_second(tmp_path, name, content):
    message = _refused(READERS[name][0], tmp_path / name, content, f"{name}:3:", "twice")
    assert "'d1'" in message or "'1'" in message


def test_duplicate_ids_in_a_beir_folder_are_refused(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "why"}\n{"_id": "q1", "text": "how"}\n')
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n')
    with pytest.raises(LirError, match=r"corpus\.jsonl:2: .*'d1'"):
        read_docs(str(tmp_path), ["d1"])
    with pytest.raises(LirError, match=r"queries\.jsonl:2: .*'q1'"):
        read_queries(str(tmp_path), "test")


@pytest.mark.parametrize(
    "name, content, lineno",
    [
        ("queries.jsonl", '{"_id": "q0", "text": "why"}\n{"_id": "q1", "text": "  "}\n', 2),
        ("queries.jsonl", '{"_id": "q1"}\n', 1),
        ("queries.jsonl", '{"_id": "q1", "text": null}\n', 1),
        ("queries.tsv", "q1\t \t\n", 1),
        ("candidates.tsv", "qid\tquery\tdocid\tpassage\nq1\t \td1\tx\n", 2),
    ],
)
def test_empty_queries_are_refused_naming_the_id(tmp_path, name, content, lineno):
    _refused(READERS[name][0], tmp_path / name, content, f"{name}:{lineno}:", "query 'q1' is empty")


def test_empty_documents_are_read(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1"}\n{"_id": "d2", "title": " ", "text": ""}\n')
    assert _docs(tmp_path / "corpus.jsonl") == [("d1", ""), ("d2", "")]


@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-Infinity", "1e999"])
def test_run_scores_must_be_finite(tmp_path, score):
    content = f"q1 Q0 d1 1 1.0 s\nq1 Q0 d2 2 {score} s\n"
    _refused(read_run, tmp_path / "run.trec", content, "run.trec:2:", f"score {score!r} is not a finite number")


def test_qrels_grades_that_are_no_integer_name_the_line(tmp_path):
    _refused(read_qrels, tmp_path / "qrels.txt", "q1 0 d1 1\nq1 0 d2 " + "9" * 5000 + "\n", "qrels.txt:2:")


def test_huge_json_numbers_name_the_line(tmp_path):
    line = '{"_id": ' + "9" * 5000 + ', "text": "x"}\n'
    _refused(_docs, tmp_path / "corpus.jsonl", line, "corpus.jsonl:1: not valid JSON")


def test_deeply_nested_json_names_the_line(tmp_path):
    _refused(_docs, tmp_path / "corpus.jsonl", "[" * 100_000 + "\n", "corpus.jsonl:1:")


def _python(code: str, home) -> subprocess.CompletedProcess:
    env = os.environ | {"IR_DATASETS_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


NO_NETWORK = (
    "import socket\n"
    "def refuse(*args, **kwargs): raise SystemExit('the network was used')\n"
    "socket.socket.connect = refuse\n"
    "socket.getaddrinfo = refuse\n"
)


def test_an_ir_datasets_id_not_downloaded_fails_in_one_line_without_the_network(tmp_path):
    code = NO_NETWORK + (
        "from lir.collections import read_queries\n"
        "from lir.errors import LirError\n"
        "try:\n"
        "    read_queries('beir/nfcorpus/test')\n"
        "except LirError as exc:\n"
        "    print(exc)\n"
    )
    start = time.perf_counter()
    done = _python(code, tmp_path / "irds")
    assert time.perf_counter() - start < 60
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "ir_datasets logged"
    assert len(done.stdout.splitlines()) == 1, done.stdout
    assert "ir_datasets beir/nfcorpus/test is not available offline" in done.stdout
    assert f"IR_DATASETS_HOME={tmp_path / 'irds'}" in done.stdout


def test_the_cli_says_in_one_line_that_an_ir_datasets_id_is_not_downloaded(tmp_path):
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 1.0 s\n")
    env = os.environ | {"IR_DATASETS_HOME": str(tmp_path / "irds")}
    args = ["evaluate", "--run", str(tmp_path / "run.trec"), "--qrels", "beir/nfcorpus/test"]
    done = subprocess.run([sys.executable, "-m", "lir.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "not available offline" in done.stderr


def test_a_broken_ir_datasets_file_fails_in_one_line(tmp_path):
    (tmp_path / "irds" / "beir" / "scifact").mkdir(parents=True)
    (tmp_path / "irds" / "beir" / "scifact" / "source.zip").write_bytes(b"not a zip file")
    code = NO_NETWORK + (
        "from lir.collections import iter_docs\n"
        "from lir.errors import LirError\n"
        "try:\n"
        "    next(iter_docs('beir/scifact'))\n"
        "except LirError as exc:\n"
        "    print(exc)\n"
    )
    done = _python(code, tmp_path / "irds")
    assert done.returncode == 0, done.stderr
    assert not any(noise in done.stderr for noise in ("Traceback", "[INFO]", "[WARNING]")), done.stderr
    assert len(done.stdout.splitlines()) == 1 and done.stdout.startswith("ir_datasets beir/scifact: "), done.stdout


def test_an_offline_ir_datasets_home_still_reads(tmp_path, scifact):
    home = tmp_path / "irds"
    script = scifact.parent / "make_ir_datasets_home.sh"
    subprocess.run(["bash", str(script), str(home)], check=True, capture_output=True)
    code = NO_NETWORK + (
        "from lir.collections import read_docs, read_queries\n"
        "docs = read_docs('beir/scifact', ['4983', 'missing'])\n"
        "print(len(docs), len(read_queries('beir/scifact/test')))\n"
    )
    done = _python(code, home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "300"]
