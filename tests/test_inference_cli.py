"""`lir index|search|re-rank --config`: the PyTorch path writes what the clients write from the model's export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lir.cli import main
from lir.clients.dense_index import DenseIndex
from lir.clients.indexes import INFO_FILE, open_index
from lir.clients.multi_vector_index import MultiVectorIndex
from lir.train.fit_cli import LirCLI  # imported here: Lightning's log handler then writes to pytest's stderr
from lir.train.inference import IndexCallback, ReRankCallback, SearchCallback
from lir.trec import Run, read_run
from tests import builders, cross_builders

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
QUERIES = {"q1": "cancer and smoking", "q2": "protein folding", "q3": "vitamin d and infections"}
BUILDERS = {
    "dpr": builders.lightning_ir_dpr_dir,
    "col": builders.lightning_ir_col_dir,
    "splade": builders.lightning_ir_splade_dir,
    "mono": cross_builders.lightning_ir_mono_dir,
    "setenc": cross_builders.lightning_ir_set_encoder_dir,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, scifact) -> dict[str, tuple[Path, Path]]:
    """Each tiny checkpoint and its fp32 export (sparse: every vocabulary term, so nothing is cut)."""
    from lir.export.bundle import export_model

    root = tmp_path_factory.mktemp("inference")
    found = {}
    for name, build in BUILDERS.items():
        checkpoint = build(root / "ckpt" / name)
        exported = export_model(str(checkpoint), root / "repo", name, top_k=30522, log=lambda _: None)
        found[name] = (checkpoint, exported)
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory, scifact) -> dict[str, Path]:
    """40 SciFact documents, three queries, qrels and a first-stage run of 8 candidates per query."""
    root = tmp_path_factory.mktemp("data")
    lines = (scifact / "corpus.jsonl").read_text().splitlines()[:40]
    ids = [json.loads(line)["_id"] for line in lines]
    files = {name: root / name for name in ("corpus.jsonl", "queries.tsv", "qrels.txt", "first.trec")}
    files["corpus.jsonl"].write_text("\n".join(lines) + "\n")
    files["queries.tsv"].write_text("".join(f"{qid}\t{text}\n" for qid, text in QUERIES.items()))
    files["qrels.txt"].write_text("".join(f"{qid} 0 {ids[i]} 1\n" for i, qid in enumerate(QUERIES)))
    ranked = [
        f"{qid} Q0 {ids[(3 * i + r) % 40]} {r + 1} {10 - r} bm25" for i, qid in enumerate(QUERIES) for r in range(8)
    ]
    files["first.trec"].write_text("\n".join(ranked) + "\n")
    return files


def config(path: Path, checkpoint: Path, callback: str, args: dict, dataset: str, data_args: dict) -> Path:
    """A LightningCLI config (JSON is YAML) with one inference callback and one inference dataset."""
    module = "CrossEncoderFitModule" if checkpoint.name in ("mono", "setenc") else "BiEncoderFitModule"
    content = {
        "trainer": {"callbacks": [{"class_path": f"lir.train.inference.{callback}", "init_args": args}]},
        "model": {
            "class_path": f"lir.train.fit_module.{module}",
            "init_args": {"model_name_or_path": str(checkpoint), "evaluation_metrics": ["nDCG@10", "R@100"]},
        },
        "data": {
            "class_path": "lir.train.datamodule.LirDataModule",
            "init_args": {"inference_datasets": [{"class_path": f"lir.train.data.{dataset}", "init_args": data_args}]},
        },
    }
    path.write_text(json.dumps(content))
    return path


def index_arrays(directory: Path) -> list[np.ndarray]:
    """The encodings an index holds, comparable across builds: vectors, token vectors and offsets, or the
    [N, V] impacts."""
    index = open_index(directory)
    if isinstance(index, DenseIndex):
        return [index.index.reconstruct_n(0, index.index.ntotal)]
    if isinstance(index, MultiVectorIndex):
        return [np.asarray(index.vectors), np.asarray(index.offsets)]
    dense = np.zeros((len(index.doc_ids), index.info["dim"]), np.float32)
    for term in range(len(index.term_offsets) - 1):
        span = slice(index.term_offsets[term], index.term_offsets[term + 1])
        dense[index.postings_docs[span], term] = index.postings_impacts[span]
    return [dense]


def assert_same_ranking(got: Run, expected: Run) -> None:
    """Same queries, same scores rank by rank, and the same documents except where scores tie."""
    assert got.keys() == expected.keys()
    for qid, scores in expected.items():
        want = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        have = sorted(got[qid].items(), key=lambda item: (-item[1], item[0]))
        assert len(have) == len(want)
        np.testing.assert_allclose([s for _, s in have], [s for _, s in want], rtol=0, atol=TOLERANCE)
        for rank, ((doc, score), (want_doc, _)) in enumerate(zip(have, want, strict=True)):
            tied = [s for _, s in want[max(rank - 1, 0) : rank + 2] if abs(s - score) <= TOLERANCE]
            assert doc == want_doc or len(tied) > 1, (qid, rank)
            if doc in scores:
                assert abs(scores[doc] - score) <= TOLERANCE


@pytest.mark.parametrize("name", ["dpr", "col", "splade"])
def test_index_and_search_match_the_export(models, data, name, tmp_path, capsys):
    checkpoint, exported = models[name]
    onnx_index, torch_index = tmp_path / "onnx-index", tmp_path / "torch-index"
    corpus, queries = str(data["corpus.jsonl"]), str(data["queries.tsv"])
    assert main(["index", "--engine", f"onnx:{exported}", "--corpus", corpus, "--output", str(onnx_index)]) == 0
    index = {"index_dir": str(torch_index)}
    index_config = config(tmp_path / "index.yaml", checkpoint, "IndexCallback", index, "DocDataset", {"docs": corpus})
    assert main(["index", "--config", str(index_config)]) == 0
    assert "indexed 40 documents" in capsys.readouterr().out
    assert sorted(p.name for p in torch_index.iterdir()) == sorted(p.name for p in onnx_index.iterdir())
    info, onnx_info = (json.loads((d / INFO_FILE).read_text()) for d in (torch_index, onnx_index))
    assert info.keys() == onnx_info.keys() and info["format"] == onnx_info["format"]
    assert info["engine"] == {"url": str(checkpoint), "directory": None, "variant": "torch", "doc_graph_sha256": None}
    assert open_index(torch_index).doc_ids == open_index(onnx_index).doc_ids
    for got, expected in zip(index_arrays(torch_index), index_arrays(onnx_index), strict=True):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)

    onnx_run = tmp_path / "onnx.trec"
    search = ["search", "--index", str(onnx_index), "--queries", queries, "--output", str(onnx_run)]
    assert main([*search, "-k", "10"]) == 0
    search = {"index_dir": str(torch_index), "save_dir": str(tmp_path / "runs"), "k": 10}
    queries_args = {"queries": queries, "qrels": str(data["qrels.txt"])}
    search_config = config(tmp_path / "search.yaml", checkpoint, "SearchCallback", search, "QueryDataset", queries_args)
    capsys.readouterr()
    assert main(["search", "--config", str(search_config)]) == 0
    out = capsys.readouterr().out
    assert "searched 3 queries" in out and "nDCG@10" in out and "R@100" in out
    assert_same_ranking(read_run(tmp_path / "runs" / "queries.trec"), read_run(onnx_run))

    # the index records the PyTorch weights: the export's engine is refused
    refused = ["search", "--index", str(torch_index), "--engine", str(exported), "--queries", queries]
    assert main([*refused, "--output", str(tmp_path / "no.trec")]) == 1
    assert "the index was built with model" in capsys.readouterr().err
    assert not (tmp_path / "no.trec").exists()


@pytest.mark.parametrize("name", ["mono", "setenc"])
def test_re_rank_matches_the_export(models, data, name, tmp_path, capsys):
    checkpoint, exported = models[name]
    texts = {"queries": str(data["queries.tsv"]), "docs": str(data["corpus.jsonl"])}
    onnx_run = tmp_path / "onnx.trec"
    command = ["re-rank", "--engine", str(exported), "--run", str(data["first.trec"]), "--output", str(onnx_run)]
    assert main([*command, "--queries", texts["queries"], "--docs", texts["docs"]]) == 0
    rerank = {"save_dir": str(tmp_path), "run_name": "torch", "batch_size": 5}
    run_args = {"run": str(data["first.trec"]), **texts, "qrels": str(data["qrels.txt"])}
    rerank_config = config(tmp_path / "re-rank.yaml", checkpoint, "ReRankCallback", rerank, "RunDataset", run_args)
    capsys.readouterr()
    assert main(["re-rank", "--config", str(rerank_config)]) == 0
    assert "re-ranked 24 candidates of 3 queries" in capsys.readouterr().out
    got, expected = read_run(tmp_path / "torch.trec"), read_run(onnx_run)
    assert {qid: sorted(docs) for qid, docs in got.items()} == {qid: sorted(docs) for qid, docs in expected.items()}
    for qid, scores in expected.items():
        np.testing.assert_allclose([got[qid][d] for d in scores], list(scores.values()), rtol=0, atol=TOLERANCE)


def test_errors_are_one_line_with_exit_code_1(models, data, tmp_path, capsys):
    checkpoint = models["dpr"][0]
    docs = {"docs": str(data["corpus.jsonl"])}
    index_dir = tmp_path / "index"
    cases = [
        ("index", "SearchCallback", {"index_dir": str(index_dir)}, "DocDataset", docs,
         "lir index needs an IndexCallback in trainer.callbacks"),
        ("search", "SearchCallback", {"index_dir": str(index_dir)}, "DocDataset", docs,
         "lir search reads a QueryDataset in data inference_datasets, not a DocDataset"),
        ("re-rank", "ReRankCallback", {}, "QueryDataset", {"queries": str(data["queries.tsv"])},
         "lir re-rank reads a RunDataset in data inference_datasets, not a QueryDataset"),
    ]  # fmt: skip
    index_dir.mkdir()
    cases.append(("index", "IndexCallback", {"index_dir": str(index_dir)}, "DocDataset", docs, "already exists"))
    for command, callback, args, dataset, data_args, message in cases:
        path = config(tmp_path / "config.yaml", checkpoint, callback, args, dataset, data_args)
        capsys.readouterr()
        assert main([command, "--config", str(path)]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # Lightning logs INFO too
        assert len(errors) == 1 and errors[0].startswith(f"lir {command}: error: ") and message in errors[0], errors


def test_help_names_both_paths(capsys):
    assert main(["index", "--help"]) == 0 and "--config" in capsys.readouterr().out
    assert main(["re_rank", "--help"]) == 0 and "--trainer.callbacks" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["index", "search", "re-rank"])
def test_example_configs_parse(models, scifact, name, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(scifact.parent)  # the configs' ../shared/data
    (work / "runs" / "scifact-minilm.trec").write_text("1 Q0 4983 1 1.0 lir\n")
    monkeypatch.chdir(work)
    config_path = str(REPO / "train" / "configs" / f"{name}.yaml")
    cli = LirCLI(["--config", config_path, "--model.init_args.model_name_or_path", str(models["dpr"][0])], run=False)
    kind = {"index": IndexCallback, "search": SearchCallback, "re-rank": ReRankCallback}[name]
    assert [type(c) for c in cli.trainer.callbacks if isinstance(c, kind)] == [kind]
    assert len(cli.datamodule.inference_datasets) == 1
