"""TREC run and qrels files: read, write (atomically), and the `Run` mapping used everywhere; the line
reader every text-file reader of lir shares, and the rule for the ids a TREC run can hold."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from lir.errors import LirError
from lir.files import atomic_write_text

MAX_LINE = 64 << 20
"""The longest line a reader takes (a document of 64 MiB): a device or binary file is refused, not held."""
Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def format_run(run: Mapping[str, Mapping[str, float]], system: str = "lir") -> str:
    """TREC run text: `qid Q0 docid rank score system`, ranked by score (ties by doc id)."""
    lines = []
    for qid, scores in run.items():
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        lines.extend(f"{qid} Q0 {did} {rank} {score:.6f} {system}" for rank, (did, score) in enumerate(ranked, 1))
    return "\n".join(lines) + ("\n" if lines else "")


def write_run(path: str | os.PathLike, run: Mapping[str, Mapping[str, float]], system: str = "lir") -> None:
    """Write a TREC run file atomically."""
    atomic_write_text(path, format_run(run, system))


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file (6 whitespace-separated columns; scores are finite numbers)."""
    run: Run = {}
    for where, fields in _rows(path):
        if len(fields) != 6:
            raise LirError(f"{where}: a run line needs 6 columns, found {len(fields)}")
        qid, docid = check_id(fields[0], "query id", where), check_id(fields[2], "doc id", where)
        run.setdefault(qid, {})[docid] = _score(fields[4], where)
    return run


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (`qid iter docid rel`) or a BEIR qrels TSV (`query-id corpus-id score`)."""
    qrels: Qrels = {}
    for where, fields in _rows(path):
        if fields[:2] == ["query-id", "corpus-id"]:
            continue
        if len(fields) not in (3, 4):
            raise LirError(f"{where}: not a qrels line (qid iter docid rel or qid docid rel)")
        qid, docid = check_id(fields[0], "query id", where), check_id(fields[-2], "doc id", where)
        qrels.setdefault(qid, {})[docid] = _grade(fields[-1], where)
    return qrels


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, without the line ending (`\\n` or `\\r\\n`); a BOM at the
    start is dropped. A line that is not UTF-8 or holds a NUL byte is a LirError naming `path:line`."""
    file = Path(path)
    if not file.exists() or file.is_dir():
        raise LirError(f"{file} {'is a folder, not a file' if file.is_dir() else 'does not exist'}")
    with open(file, "rb") as handle:
        for lineno, raw in enumerate(iter(lambda: handle.readline(MAX_LINE + 1), b""), 1):
            if len(raw) > MAX_LINE:
                raise LirError(f"{file}:{lineno}: a line longer than {MAX_LINE >> 20} MiB (not a text file?)")
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise LirError(f"{file}:{lineno}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})") from None
            if "\0" in line:
                raise LirError(f"{file}:{lineno}: holds a NUL byte (binary data, or UTF-16 text?)")
            yield lineno, line.removesuffix("\n").removesuffix("\r")


def check_id(value: str, what: str, where: str) -> str:
    """`value`, once it is an id a TREC run can hold: not empty, no whitespace, only printable characters;
    otherwise a LirError at `where` naming it."""
    if not value:
        problem = "is empty"
    elif value.split() != [value]:
        problem = "holds whitespace"
    elif not value.isprintable():
        problem = "holds an unprintable character"
    else:
        return value
    raise LirError(f"{where}: {what} {shown(value)} {problem}, which a TREC run cannot hold")


def shown(value: str, limit: int = 60) -> str:
    """`value` for a message: its repr (escapes keep it one line), cut to `limit` characters."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}…"


def _rows(path: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
    for lineno, line in read_lines(path):
        fields = line.split()
        if fields:
            yield f"{path}:{lineno}", fields


def _score(text: str, where: str) -> float:
    try:
        score = float(text)
    except ValueError:
        raise LirError(f"{where}: score {shown(text)} is not a number") from None
    if not math.isfinite(score):
        raise LirError(f"{where}: score {shown(text)} is not a finite number")
    return score


def _grade(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LirError(f"{where}: not a qrels line: relevance {shown(text)} is not an integer") from None
