"""Fine-tuning: losses fall, saved checkpoints load back and export, resumes are exact, configs parse, `lir fit`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lir.cli import main
from lir.errors import LirError
from lir.train.checkpoints import load_model
from lir.train.cross_module import CrossEncoderModule
from lir.train.data import RankSample, RunDataset, TupleDataset
from lir.train.datamodule import LirDataModule
from lir.train.fit_module import BiEncoderFitModule, CrossEncoderFitModule, SparseFitModule
from lir.train.losses import RankNet
from lir.train.module import BiEncoderModule
from tests import builders, cross_builders

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("single-vector", "multi-vector", "sparse", "cross-encoder")
CONFIGS = [REPO / "train" / "configs" / f"{family}.yaml" for family in FAMILIES]
QUERIES = ["vitamin d and infections", "fever in children", "influenza in mice", "memory t cells"]
DOCS = [
    "Vitamin D supplementation reduced acute respiratory infections in adults.",
    "Fever in children is most often caused by viral infections.",
    "Mice lacking the interferon receptor fail to control influenza.",
    "Memory CD8 T cells restore protection against the virus.",
]
SAMPLES = [
    RankSample(str(i), q, (), (DOCS[i], DOCS[(i + 1) % 4], DOCS[(i + 2) % 4]), (1.0, 0.0, 0.0))
    for i, q in enumerate(QUERIES)
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fit")
    return {
        "dpr": builders.lightning_ir_dpr_dir(root / "dpr"),
        "col": builders.lightning_ir_col_dir(root / "col"),
        "splade": builders.lightning_ir_splade_dir(root / "splade"),
        "mono": cross_builders.lightning_ir_mono_dir(root / "mono", pooling="mean"),
        "monopool": cross_builders.lightning_ir_mono_dir(root / "monopool", scoring="mono", bert_pool=True),
        "setenc": cross_builders.lightning_ir_set_encoder_dir(root / "setenc", add_extra_token=True),
    }


MODULES = {
    "dpr": (BiEncoderFitModule, {"loss_function": RankNet()}),
    "col": (BiEncoderFitModule, {}),
    "splade": (SparseFitModule, {"query_flops_weight": 1e-3, "doc_flops_weight": 1e-3}),
    "mono": (CrossEncoderFitModule, {}),
    "monopool": (CrossEncoderFitModule, {}),
    "setenc": (CrossEncoderFitModule, {}),
}


def build(checkpoints: dict[str, Path], name: str, **kwargs):
    module_class, defaults = MODULES[name]
    return module_class(str(checkpoints[name]), **(defaults | kwargs))


@pytest.mark.parametrize("name", ["dpr", "col", "splade", "mono", "setenc"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(checkpoints, name):
    torch.manual_seed(0)
    module = build(checkpoints, name)
    batch = module.collator(SAMPLES)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)

    def loss() -> float:
        module.eval()
        with torch.no_grad():
            return float(module.loss(batch))

    before = loss()
    for _ in range(10):
        module.train()
        optimizer.zero_grad()
        module.loss(batch).backward()
        optimizer.step()
    assert loss() < 0.9 * before


def scores(loaded, queries=QUERIES, docs=DOCS) -> torch.Tensor:
    if loaded.model.family == "cross-encoder":
        module = CrossEncoderModule(loaded)
        return torch.stack([module.score(query, docs).scores for query in queries])
    return BiEncoderModule(loaded).score_matrix(queries, docs)


@pytest.mark.parametrize("name", list(MODULES))
def test_a_trained_model_saves_and_loads_back_with_identical_scores(checkpoints, name, tmp_path):
    module = build(checkpoints, name)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.loss(module.collator(SAMPLES)).backward()
    optimizer.step()  # the saved weights differ from the source's
    module.model.eval()
    saved = load_model(str(module.save_pretrained(tmp_path / "saved")))
    assert type(saved.model) is type(module.model)
    assert saved.model.config == module.model.config
    torch.testing.assert_close(scores(saved), scores(module.loaded), rtol=0, atol=1e-6)
    assert not torch.allclose(scores(saved), scores(load_model(str(checkpoints[name]))))


LENGTHS = {"query_length": 16, "doc_length": 48}
NEW_MODELS = {
    "dpr": {"model_type": "lir-dpr", "embedding_dim": 8} | LENGTHS,
    "col": {"model_type": "col", "embedding_dim": 8, "query_expansion": True} | LENGTHS,
    "splade": {"model_type": "splade"} | LENGTHS,
    "splade-static-query": {"model_type": "splade", "query_weighting": "static", "query_expansion": False} | LENGTHS,
    "mono": {"model_type": "mono", "scoring_strategy": "mono"} | LENGTHS,
    "mono-bert-pool": {"model_type": "mono", "pooling_strategy": "bert_pool", "linear_bias": True} | LENGTHS,
}
FAMILIES = {"lir-dpr": "single-vector", "col": "multi-vector", "splade": "sparse", "mono": "cross-encoder"}


@pytest.mark.parametrize("kind", list(NEW_MODELS))
def test_a_new_model_on_a_backbone_saves_and_loads_back(checkpoints, kind, tmp_path):
    torch.manual_seed(0)
    config = NEW_MODELS[kind]
    module_class = CrossEncoderFitModule if config["model_type"] == "mono" else BiEncoderFitModule
    module = module_class(str(checkpoints["dpr"]), config=config)
    assert module.model.family == FAMILIES[config["model_type"]]
    module.model.eval()
    saved = load_model(str(module.save_pretrained(tmp_path / kind)))
    torch.testing.assert_close(scores(saved), scores(module.loaded), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"embedding_dim": 8}, "a new model needs a model_type: one of lir-dpr, col, splade, mono (not None)"),
        ({"model_type": "coil"}, "a new model needs a model_type"),
        ({"model_type": "col", "embeding_dim": 8}, "a new col model has no setting 'embeding_dim'"),
        ({"model_type": "lir-dpr", "projection": "mlp"}, "unknown projection 'mlp'"),
        ({"model_type": "mono", "scoring_strategy": "listwise"}, "unknown scoring_strategy 'listwise'"),
        ({"model_type": "lir-dpr", "pooling_strategy": "last"}, "a new lir-dpr model: "),
    ],
)
def test_a_new_model_with_settings_lir_does_not_know_is_refused_in_one_line(checkpoints, config, message):
    with pytest.raises(LirError) as error:
        BiEncoderFitModule(str(checkpoints["dpr"]), config=config)
    assert message in str(error.value)
    assert "\n" not in str(error.value) and "lir-init-" not in str(error.value)


@pytest.mark.parametrize("name", ["col", "setenc"])
def test_validation_reranks_the_runs_and_reports_ndcg(checkpoints, name, tmp_path):
    candidates = tmp_path / "candidates.tsv"
    rows = [f"{i}\t{q}\t{d}\t{DOCS[d]}" for i, q in enumerate(QUERIES[:3]) for d in (i, (i + 1) % 4, (i + 2) % 4)]
    candidates.write_text("qid\tquery\tdocid\tpassage\n" + "\n".join(rows) + "\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{i} 0 {i} 1\n" for i in range(3)))
    runs = [RunDataset(str(candidates), qrels=str(qrels)), RunDataset(str(candidates), qrels=str(qrels), depth=2)]
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module = build(checkpoints, name)
    results = trainer.validate(module, LirDataModule(inference_datasets=runs, inference_batch_size=2))
    assert sorted(results[0]) == ["nDCG@10/0", "nDCG@10/1"]  # one per run, logged at the epoch's end
    assert all(0 < value <= 1 for value in results[0].values())


class Recorder(Callback):
    """(global step, query ids, learning rate) of every training batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[str], float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.batches.append((trainer.global_step, list(batch.query_ids), lr))


def fit(checkpoints: dict[str, Path], tuples: Path, root: Path, ckpt_path: Path | None = None) -> Recorder:
    recorder = Recorder()
    saver = ModelCheckpoint(dirpath=root / "ckpt", filename="{step}", every_n_train_steps=2, save_top_k=-1)
    trainer = Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, saver],
        default_root_dir=root,
    )
    torch.manual_seed(0)
    module = build(checkpoints, "dpr", warmup_steps=2)
    data = LirDataModule(TupleDataset(str(tuples)), train_batch_size=2, seed=3)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return recorder


def test_a_resumed_fit_continues_at_the_same_step_with_the_same_batches(checkpoints, tmp_path):
    tuples = tmp_path / "tuples.jsonl"
    lines = [{"query_id": str(i), "query": q, "docs": [DOCS[i], DOCS[(i + 1) % 4]]} for i, q in enumerate(QUERIES)]
    lines += [
        {"query_id": "4", "query": "t cells", "docs": DOCS[2:]},
        {"query_id": "5", "query": "d", "docs": DOCS[:2]},
    ]
    tuples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    full = fit(checkpoints, tuples, tmp_path / "full").batches  # 3 batches an epoch: steps 0-2, then 3-4
    assert [step for step, _, _ in full] == [0, 1, 2, 3, 4]
    assert sorted(q for _, ids, _ in full[:3] for q in ids) == [str(i) for i in range(6)]
    assert [ids for _, ids, _ in full[3:]] != [ids for _, ids, _ in full[:2]]  # reshuffled for the second epoch
    for step in (2, 4):  # mid-epoch, and one batch into the second epoch
        resumed = fit(checkpoints, tuples, tmp_path / f"from-{step}", tmp_path / "full" / "ckpt" / f"step={step}.ckpt")
        assert [(s, ids) for s, ids, _ in resumed.batches] == [(s, ids) for s, ids, _ in full[step:]]
        assert [lr for _, _, lr in resumed.batches] == pytest.approx([lr for _, _, lr in full[step:]])


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_each_example_config_parses(checkpoints, config, monkeypatch):
    from lir.train.fit_cli import LirCLI

    monkeypatch.chdir(REPO)
    cli = LirCLI(["--config", str(config), "--model.init_args.model_name_or_path", str(checkpoints["dpr"])], run=False)
    expected = {"sparse": SparseFitModule, "cross-encoder": CrossEncoderFitModule}.get(config.stem, BiEncoderFitModule)
    assert type(cli.model) is expected
    assert cli.model.model.family == config.stem
    assert cli.config["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert len(cli.datamodule.train_dataset) > 800
    assert cli.trainer.max_steps == yaml.safe_load(config.read_text())["trainer"]["max_steps"]


def test_lir_fit_trains_a_multi_vector_model_that_exports_with_parity(checkpoints, tmp_path, monkeypatch, scifact):
    from lir.export.bundle import export_model

    monkeypatch.chdir(REPO)
    config = REPO / "train" / "configs" / "multi-vector.yaml"
    output = tmp_path / "hf"
    args = ["fit", "--config", str(config), "--model.init_args.model_name_or_path", str(checkpoints["dpr"])]
    args += [
        "--trainer.max_steps=2",
        "--data.init_args.train_batch_size=2",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    args += ["--huggingface_checkpoint.dirpath", str(output), "--huggingface_checkpoint.every_n_train_steps=1"]
    assert main(args) == 0
    assert json.loads((output / "config.json").read_text())["model_type"] == "col"
    assert sorted(path.name for path in output.glob("step-*")) == ["step-1", "step-2"]
    assert list(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    exported = export_model(str(output), tmp_path / "repo", "colbert", parity_data=str(scifact), log=lambda _: None)
    assert json.loads((exported / "manifest.json").read_text())["family"] == "multi-vector"


def test_lir_fit_help_lists_the_config_option(capsys):
    assert main(["fit", "--help"]) == 0  # LightningCLI's SystemExit becomes the return value
    assert "--config" in capsys.readouterr().out
