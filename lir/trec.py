"""TREC run and qrels files: read, write (atomically), and the `Run` mapping used everywhere."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lir.errors import LirError
from lir.files import atomic_write_text

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
    """Read a TREC run file (6 whitespace-separated columns)."""
    run: Run = {}
    for lineno, fields in _rows(path):
        if len(fields) != 6:
            raise LirError(f"{path}:{lineno}: a run line needs 6 columns, found {len(fields)}")
        try:
            run.setdefault(fields[0], {})[fields[2]] = float(fields[4])
        except ValueError:
            raise LirError(f"{path}:{lineno}: score {fields[4]!r} is not a number") from None
    return run


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (`qid iter docid rel`) or a BEIR qrels TSV (`query-id corpus-id score`)."""
    qrels: Qrels = {}
    for lineno, fields in _rows(path):
        if fields[:2] == ["query-id", "corpus-id"]:
            continue
        try:
            if len(fields) == 4:
                qrels.setdefault(fields[0], {})[fields[2]] = int(fields[3])
            elif len(fields) == 3:
                qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
            else:
                raise ValueError
        except ValueError:
            raise LirError(f"{path}:{lineno}: not a qrels line (qid iter docid rel or qid docid rel)") from None
    return qrels


def _rows(path: str | os.PathLike):
    file = Path(path)
    if not file.is_file():
        raise LirError(f"{file} does not exist")
    with open(file, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            fields = line.split()
            if fields:
                yield lineno, fields
