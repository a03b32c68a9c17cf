"""Distillation: a teacher's run (TREC, with scores) as training targets, margin-MSE / KL on them under `lir fit`,
and bad teacher data as one-line errors naming file and line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from lir.cli import main
from lir.errors import LirError
from lir.train.checkpoints import load_model
from lir.train.cross_module import CrossEncoderModule
from lir.train.data import RunDataset, TupleDataset, held_out
from lir.train.fit_module import CrossEncoderFitModule
from lir.train.losses import KLDivergence, MarginMSE
from lir.trec import read_qrels
from tests import builders, cross_builders

REPO = Path(__file__).resolve().parents[1]
QUERIES = {"q0": "vitamin d and infections", "q1": "fever in children", "q2": "influenza in mice"}
DOCS = {
    "d0": "Vitamin D supplementation reduced acute respiratory infections in adults.",
    "d1": "Fever in children is most often caused by viral infections.",
    "d2": "Mice lacking the interferon receptor fail to control influenza.",
    "d3": "Memory CD8 T cells restore protection against the virus.",
}
TEACHER = {  # the teacher's scores, as `lir rerank` writes them (not in rank order in the file)
    "q0": {"d0": 9.0, "d1": 2.5, "d2": -1.0, "d3": 0.5},
    "q1": {"d0": 1.0, "d1": 7.5, "d2": 3.0, "d3": -2.0},
    "q2": {"d0": -0.5, "d1": 0.0, "d2": 6.0, "d3": 4.5},
}


def write_run(path: Path, run: dict[str, dict[str, float]]) -> Path:
    path.write_text("".join(f"{q} Q0 {d} 0 {s} teacher\n" for q, scores in run.items() for d, s in scores.items()))
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def texts(tmp_path) -> tuple[Path, Path]:
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"_id": q, "text": t} for q, t in QUERIES.items()])
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"_id": d, "text": t} for d, t in DOCS.items()])
    return queries, docs


def test_a_teacher_run_gives_each_sampled_candidate_its_score(tmp_path, texts):
    run = write_run(tmp_path / "teacher.trec", TEACHER)
    dataset = RunDataset(str(run), *map(str, texts), sample_size=3, sampling_strategy="top_and_random", targets="score")
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample.doc_ids[0] == max(TEACHER[sample.query_id], key=TEACHER[sample.query_id].get)
        assert sample.targets == tuple(TEACHER[sample.query_id][d] for d in sample.doc_ids)
        assert list(sample.targets) == sorted(sample.targets, reverse=True)  # rank order: the anchor first


def test_bad_teacher_runs_name_the_file_and_line(tmp_path, texts):
    queries, docs = map(str, texts)
    good = "q0 Q0 d0 1 2.0 t\n"
    cases = {
        "missing score": (good + "q0 Q0 d1 2 t\n", r"teacher.trec:2: a run line needs 6 columns, found 5"),
        "not finite": (good + "q0 Q0 d1 2 nan t\n", r"teacher.trec:2: score 'nan' is not a finite number"),
        "not a number": (good + "q0 Q0 d1 2 high t\n", r"teacher.trec:2: score 'high' is not a number"),
        "too few": (
            good + "q0 Q0 d1 2 1.0 t\nq1 Q0 d0 1 1.0 t\nq0 Q0 d2 3 0.5 t\n",
            r"teacher.trec:3: query 'q1' has 1 candidates, fewer than the 2 sample_size asks for",
        ),
    }
    for text, message in cases.values():
        (tmp_path / "teacher.trec").write_text(text)
        with pytest.raises(LirError, match=message):
            RunDataset(str(tmp_path / "teacher.trec"), queries, docs, sample_size=2, targets="score")
    # without teacher scores a short query is still just dropped
    assert len(RunDataset(str(tmp_path / "teacher.trec"), queries, docs, sample_size=2, targets="rank")) == 1


def test_scored_tuples_and_their_errors(tmp_path, texts):
    good = {"query": "q", "docs": ["a", "b", "c"], "scores": [3, 1.5, -2]}
    path = write_jsonl(tmp_path / "tuples.jsonl", [good])
    assert TupleDataset(str(path), targets="score", num_docs=2)[0].targets == (3.0, 1.5)
    cases = [
        ({"query": "q", "docs": ["a", "b"]}, {}, r"tuples.jsonl:2: no scores: targets 'score' need scores"),
        ('{"query": "q", "docs": ["a", "b"], "scores": [1, NaN]}', {}, r"tuples.jsonl:2: scores must be .* finite"),
        ({"query": "q", "docs": ["a", "b"], "scores": [1, "x"]}, {}, r"tuples.jsonl:2: scores must be .* finite"),
        ({"query": "q", "docs": ["a", "b"], "scores": [1, 0]}, {"num_docs": 3}, r"tuples.jsonl:2: 2 docs, fewer"),
    ]
    for record, options, message in cases:
        with pytest.raises(LirError, match=message):
            TupleDataset(str(write_jsonl(path, [good, record])), targets="score", **options)


def margin_mse(student: dict[str, list[float]], teacher: dict[str, list[float]]) -> float:
    terms = [
        ((s[0] - s[j]) - (t[0] - t[j])) ** 2 for q in teacher for s, t in [(student[q], teacher[q])] for j in (1, 2, 3)
    ]
    return sum(terms) / len(terms)


def kl_divergence(student: dict[str, list[float]], teacher: dict[str, list[float]], temperature: float) -> float:
    def log_softmax(values: list[float]) -> list[float]:
        top = max(values)
        norm = top + math.log(sum(math.exp(v - top) for v in values))
        return [v - norm for v in values]

    total = 0.0
    for q in teacher:
        p, log_q = log_softmax([t / temperature for t in teacher[q]]), log_softmax(student[q])
        total += sum(math.exp(a) * (a - b) for a, b in zip(p, log_q, strict=True))
    return total / len(teacher)


LOSSES = {
    "margin-mse": ({"class_path": "lir.train.losses.MarginMSE"}, lambda s, t: margin_mse(s, t)),
    "kl": (
        {"class_path": "lir.train.losses.KLDivergence", "init_args": {"temperature": 0.5}},
        lambda s, t: kl_divergence(s, t, 0.5),
    ),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_lir_fit_distills_a_cross_encoder_from_a_teacher_run(tmp_path, texts, name):
    checkpoint = cross_builders.lightning_ir_mono_dir(tmp_path / "mono")
    config = json.loads((checkpoint / "config.json").read_text())  # no dropout: step 0's loss is exact
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (checkpoint / "config.json").write_text(json.dumps(config))
    run = write_run(tmp_path / "teacher.trec", TEACHER)
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q0 0 d0 1\nq1 0 d1 1\nq2 0 d3 1\n")
    assert [held_out(q, 0.5) for q in TEACHER] == [True, False, False]  # validate on q0, train on q1 and q2
    loss_function, expected_loss = LOSSES[name]
    texts_of = {"queries": str(texts[0]), "docs": str(texts[1])}
    fit = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 6,
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path / "fit"),
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
        },
        "model": {
            "class_path": "lir.train.fit_module.CrossEncoderFitModule",
            "init_args": {"model_name_or_path": str(checkpoint), "loss_function": loss_function},
        },
        "data": {
            "class_path": "lir.train.datamodule.LirDataModule",
            "init_args": {
                "train_dataset": {
                    "class_path": "lir.train.data.RunDataset",
                    "init_args": {"run": str(run), **texts_of, "sample_size": 4, "targets": "score", "hold_out": 0.5},
                },
                "inference_datasets": [
                    {
                        "class_path": "lir.train.data.RunDataset",
                        "init_args": {"run": str(run), **texts_of, "qrels": str(qrels), "hold_out": 0.5, "held": True},
                    }
                ],
                "train_batch_size": 2,  # every training query in each batch: every step sees the same batch
            },
        },
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-2}},
        "huggingface_checkpoint": {"dirpath": str(tmp_path / "hf")},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit))
    pairs = CrossEncoderModule(load_model(str(checkpoint)))
    ranked = {q: sorted(scores, key=lambda d: (-scores[d], d)) for q, scores in TEACHER.items()}
    trained = ("q1", "q2")
    student = {q: pairs.score(QUERIES[q], [DOCS[d] for d in ranked[q]]).scores.tolist() for q in trained}
    teacher = {q: [TEACHER[q][d] for d in ranked[q]] for q in trained}

    assert main(["fit", "--config", str(tmp_path / "fit.yaml")]) == 0
    with open(next(tmp_path.glob("lightning_logs/version_0/metrics.csv")), newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["loss"]) for row in rows if row.get("loss")]
    assert len(losses) == 6
    validated = [float(row["nDCG@10"]) for row in rows if row.get("nDCG@10")]  # the held-out query, each epoch
    assert len(validated) == 6 and all(0 < value <= 1 for value in validated)
    assert losses[0] == pytest.approx(expected_loss(student, teacher), rel=1e-4)
    assert losses[-1] < 0.75 * losses[0]  # it learns the teacher's margins
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "mono"


def test_the_distillation_config_parses(tmp_path, scifact, monkeypatch):
    from lir.train.fit_cli import LirCLI

    judged = sorted(read_qrels(scifact / "qrels" / "train.tsv"))
    queries = [q for q in judged if not held_out(q, 0.1)][:2] + [q for q in judged if held_out(q, 0.1)][:1]
    with open(scifact / "corpus.jsonl", encoding="utf-8") as corpus:
        doc_ids = [json.loads(line)["_id"] for line, _ in zip(corpus, range(10), strict=False)]
    run = write_run(tmp_path / "teacher.trec", {q: {d: 10.0 - i for i, d in enumerate(doc_ids)} for q in queries})
    config = yaml.safe_load((REPO / "train" / "configs" / "distill-cross-encoder.yaml").read_text())
    data = config["data"]["init_args"]
    for dataset in [data["train_dataset"], *data["inference_datasets"]]:
        dataset["init_args"] |= {"run": str(run), "queries": str(scifact), "docs": str(scifact)}
    data["inference_datasets"][0]["init_args"]["qrels"] = str(scifact)
    (tmp_path / "distill.yaml").write_text(yaml.safe_dump(config))
    backbone = builders.lightning_ir_dpr_dir(tmp_path / "dpr")
    monkeypatch.chdir(REPO)
    cli = LirCLI(
        ["--config", str(tmp_path / "distill.yaml"), "--model.init_args.model_name_or_path", str(backbone)], run=False
    )
    assert type(cli.model) is CrossEncoderFitModule and cli.model.model.family == "cross-encoder"
    assert isinstance(cli.model.loss_function, MarginMSE)
    train, (validation,) = cli.datamodule.train_dataset, cli.datamodule.inference_datasets
    assert len(train) == 2 and train.targets == "score"
    assert [q for q, _ in validation.ranked] == queries[2:]
    assert validation.qrels.keys() == {q for q in judged if held_out(q, 0.1)}  # the held-out part of train only
    sample = train[0]
    assert len(sample.doc_ids) == 8 and sample.targets[0] == 10.0
    assert sample.targets == tuple(10.0 - doc_ids.index(d) for d in sample.doc_ids)
    batch = cli.model.collator([train[0], train[1]])
    assert torch.equal(batch.targets, torch.tensor([train[0].targets, train[1].targets]))


def test_hold_out_splits_scifact_train_into_disjoint_parts(scifact):
    tuples = str(REPO / "train" / "configs" / "scifact-train-tuples.jsonl")
    fit, held = (TupleDataset(tuples, str(scifact), str(scifact), hold_out=0.1, held=h, num_docs=1) for h in (0, 1))
    fit_ids, held_ids = {s.query_id for s in fit.samples}, {s.query_id for s in held.samples}
    assert not fit_ids & held_ids and len(fit_ids | held_ids) == 809 and 60 <= len(held_ids) <= 100
    assert all(held_out(q, 0.1) for q in held_ids) and len(fit) + len(held) == 919
    with pytest.raises(LirError, match=r"hold_out 1.5 must be in \[0, 1\)"):
        TupleDataset(tuples, hold_out=1.5)
    with pytest.raises(LirError, match="above 0 to keep the held-out queries"):
        RunDataset(tuples, held=True)


def test_the_kl_temperature_must_be_positive():
    with pytest.raises(LirError, match="the KL temperature must be positive, not 0"):
        KLDivergence(temperature=0)
