"""Data-parallel fitting: the epoch sampler shards per rank and resumes, and `lir fit` runs under DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback

from lir.errors import LirError
from lir.train.checkpoints import load_model
from lir.train.datamodule import EpochSampler, ResumableLoader
from lir.train.module import BiEncoderModule
from tests import builders

REPO = Path(__file__).resolve().parents[1]
QUERIES = ["vitamin d and infections", "fever in children", "influenza in mice", "memory t cells", "t cells"]
DOCS = ["Vitamin D reduced infections.", "Fever is often viral.", "Mice fail to control influenza.", "T cells."]


@pytest.mark.parametrize("count", [12, 13])
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_the_sampler_gives_each_rank_a_disjoint_share_that_together_cover_the_epoch(count, ranks):
    data = list(range(count))
    for epoch in (0, 1):
        shards = []
        for rank in range(ranks):
            sampler = EpochSampler(data, shuffle=True, seed=5, num_replicas=ranks, rank=rank)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler) == -(-count // ranks)  # every rank draws as many batches
        single = EpochSampler(data, shuffle=True, seed=5)
        single.set_epoch(epoch)
        order = list(single)
        drawn = [index for shard in shards for index in shard]
        assert sorted(set(drawn)) == data  # covering
        assert len(drawn) - len(set(drawn)) == len(drawn) - count  # only the padding repeats
        # batch k of all ranks is batch k of one process with `ranks` times the batch size
        batch = 2
        for k in range(len(shards[0]) // batch):
            together = {index for shard in shards for index in shard[k * batch : (k + 1) * batch]}
            assert together == set(order[k * batch * ranks : (k + 1) * batch * ranks])


def test_a_restored_loader_continues_each_rank_at_the_same_batch():
    data = list(range(11))
    full = {rank: list(EpochSampler(data, seed=1, num_replicas=2, rank=rank)) for rank in (0, 1)}
    for rank in (0, 1):
        loader = ResumableLoader(data, EpochSampler(data, seed=1, num_replicas=2, rank=rank), lambda: 2, batch_size=2)
        assert len(loader) == 3 and loader.state_dict() == {"epoch": 0, "batches": 2}
        loader.load_state_dict({"epoch": 0, "batches": 2})  # two batches of epoch 0 taken
        assert torch.cat(list(loader)).tolist() == full[rank][4:]
        assert torch.cat(list(loader)).tolist() == full[rank]  # the next pass is a whole epoch
        loader.load_state_dict({"epoch": 0, "batches": 3})  # saved at the epoch's end: epoch 1 afresh
        second = EpochSampler(data, seed=1, num_replicas=2, rank=rank)
        second.set_epoch(1)
        assert loader.sampler.epoch == 1 and torch.cat(list(loader)).tolist() == list(second)


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(LirError, match="rank 2 is not one of 2 ranks"):
        EpochSampler([0, 1], num_replicas=2, rank=2)


class BatchLog(Callback):
    """Appends (global step, query ids) of every training batch to `directory/rank-R.jsonl`."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"rank-{trainer.global_rank}.jsonl", "a") as log:
            log.write(json.dumps([trainer.global_step, list(batch.query_ids)]) + "\n")


def lir_fit_ddp(config: Path, root: Path, *args: str) -> dict[int, list]:
    """`lir fit --config` on two CPU ranks (DDP over gloo); each rank's logged batches."""
    command = [str(Path(sys.executable).parent / "lir"), "fit", "--config", str(config)]
    command += ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", *args]
    command += ["--trainer.callbacks+=tests.test_fit_ddp.BatchLog", f"--trainer.callbacks.directory={root / 'log'}"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {rank: [json.loads(line) for line in (root / "log" / f"rank-{rank}.jsonl").open()] for rank in (0, 1)}


def test_lir_fit_runs_data_parallel_and_resumes_at_the_same_step(tmp_path, scifact):
    from lir.export.bundle import export_model

    tuples = tmp_path / "tuples.jsonl"  # 10 queries: 5 a rank, 3 batches of 2 an epoch
    lines = [
        {"query_id": str(i), "query": f"{QUERIES[i % 5]} {i}", "docs": [DOCS[i % 4], DOCS[(i + 1) % 4]]}
        for i in range(10)
    ]
    tuples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    base = yaml.safe_load((REPO / "train" / "configs" / "multi-vector.yaml").read_text())
    base["model"]["init_args"]["model_name_or_path"] = str(builders.lightning_ir_dpr_dir(tmp_path / "dpr"))
    base["data"]["init_args"] |= {
        "train_batch_size": 2,
        "train_dataset": {"class_path": "lir.train.data.TupleDataset", "init_args": {"tuples": str(tuples)}},
    }
    base["trainer"] |= {"max_steps": 5, "enable_progress_bar": False, "enable_model_summary": False}
    saver = {"dirpath": str(tmp_path / "ckpt"), "filename": "{step}", "every_n_train_steps": 2, "save_top_k": -1}
    base["trainer"]["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": saver}]
    runs = {}
    for name, resume in (("full", []), ("resumed", ["--ckpt_path", str(tmp_path / "ckpt" / "step=2.ckpt")])):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(base | {"huggingface_checkpoint": {"dirpath": str(tmp_path / name)}}))
        runs[name] = lir_fit_ddp(config, tmp_path / name, "--trainer.default_root_dir", str(tmp_path / name), *resume)
    full, resumed = runs["full"], runs["resumed"]
    for rank in (0, 1):
        assert [step for step, _ in full[rank]] == [0, 1, 2, 3, 4]
        assert resumed[rank] == full[rank][2:]  # mid-epoch: the same steps, each rank the same batches
    epoch = [query for rank in (0, 1) for _, ids in full[rank][:3] for query in ids]
    assert sorted(epoch, key=int) == [str(i) for i in range(10)]  # disjoint shares that cover the epoch
    for name in runs:  # both runs' Lightning IR checkpoints load (weights differ: dropout's RNG is not checkpointed)
        scores = BiEncoderModule(load_model(str(tmp_path / name))).score_matrix(QUERIES, DOCS)
        assert scores.shape == (5, 4) and bool(torch.isfinite(scores).all())
    exported = export_model(str(tmp_path / "full"), tmp_path / "repo", "colbert", parity_data=str(scifact), log=print)
    assert json.loads((exported / "manifest.json").read_text())["family"] == "multi-vector"
