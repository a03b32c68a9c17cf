"""The torch-free core: manifest validation, TREC IO, metrics, collections, atomic files."""

from __future__ import annotations

import json
import math

import pytest

from lir.collections import iter_docs, read_qrels_spec, read_queries
from lir.errors import LirError
from lir.files import atomic_write_text
from lir.manifest import load_manifest
from lir.metrics import evaluate
from lir.trec import read_qrels, read_run, write_run


def test_run_round_trip_ranks_by_score(tmp_path):
    run = {"q1": {"a": 0.5, "b": 2.0, "c": 1.0}, "q2": {"x": -1.0}}
    write_run(tmp_path / "run.trec", run, system="sys")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 2.000000 sys" and lines[2].startswith("q1 Q0 a 3")
    assert read_run(tmp_path / "run.trec") == run


def test_bad_run_and_qrels_lines(tmp_path):
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1\n")
    with pytest.raises(LirError, match="6 columns"):
        read_run(tmp_path / "bad.trec")
    (tmp_path / "bad.qrels").write_text("q1 0 d1 yes\n")
    with pytest.raises(LirError, match="not a qrels line"):
        read_qrels(tmp_path / "bad.qrels")


def test_ndcg_against_hand_computation():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"z": 1}}
    run = {"q1": {"a": 3.0, "x": 2.0, "b": 1.0}}  # q2 unanswered counts as 0
    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    got = evaluate(run, qrels, ["nDCG@10", "RR@10"])
    assert got["nDCG@10"] == pytest.approx((dcg / ideal) / 2)
    assert got["RR@10"] == pytest.approx(0.5)
    with pytest.raises(LirError, match="unknown measure"):
        evaluate(run, qrels, ["nDCG@ten"])


def test_scifact_collections(scifact):
    docs = dict(iter_docs(str(scifact)))
    assert len(docs) == 5183
    queries = read_queries(str(scifact), "test")
    qrels = read_qrels_spec(str(scifact), "test")
    assert len(queries) == 300 and set(queries) == set(qrels)
    with pytest.raises(LirError, match="name the qrels split"):
        read_qrels_spec(str(scifact))


def test_local_tsv_and_jsonl(tmp_path):
    (tmp_path / "docs.tsv").write_text("d1\thello\nd2\ttitle\tbody\n")
    assert list(iter_docs(str(tmp_path / "docs.tsv"))) == [("d1", "hello"), ("d2", "title body")]
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "why"}\n')
    assert read_queries(str(tmp_path / "q.jsonl")) == {"1": "why"}
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(LirError, match="broken.jsonl:1"):
        list(iter_docs(str(tmp_path / "broken.jsonl")))
    with pytest.raises(LirError, match="neither an existing file or folder nor an ir_datasets id"):
        list(iter_docs("no/such-dataset"))


def test_manifest_validation(tiny_export, tmp_path):
    data = json.loads((tiny_export / "manifest.json").read_text())
    for change, message in (
        ({"family": "quantum"}, "unknown family"),
        ({"similarity": "l7"}, "similarity"),
        ({"format_version": 99}, "v99, expected v2: export the model again"),
        ({"encoders": {"query": "nope", "doc": "encoder"}}, "names no graph"),
    ):
        (tmp_path / "manifest.json").write_text(json.dumps(data | change))
        with pytest.raises(LirError, match=message):
            load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(LirError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(LirError, match="does not exist"):
        load_manifest(tmp_path / "missing")


def test_atomic_write_replaces_whole_files(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "one")
    atomic_write_text(tmp_path / "f.txt", "two")
    assert (tmp_path / "f.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_ir_datasets_ids_load_offline(tmp_path, scifact):
    import os
    import subprocess
    import sys

    home = tmp_path / "irds"
    subprocess.run(
        ["bash", str(scifact.parent / "make_ir_datasets_home.sh"), str(home)], check=True, capture_output=True
    )
    code = (
        "from lir.collections import iter_docs, read_queries, read_qrels_spec\n"
        "docs = dict(iter_docs('beir/scifact'))\n"
        "print(len(docs), len(read_queries('beir/scifact/test')), len(read_qrels_spec('beir/scifact/test')))"
    )
    env = os.environ | {"IR_DATASETS_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["5183", "300", "300"]
