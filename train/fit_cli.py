"""`lir fit --config train.yaml`: LightningCLI over lir's fit modules and datamodule; `lir index|search|re-rank
--config X.yaml` run the same model in PyTorch through `LirTrainer` and its callbacks (`lir.train.inference`).

The YAML has Lightning IR's shape: `trainer`, `model` (class_path of a fit module, init_args with
`model_name_or_path`), `data` (class_path `LirDataModule`, datasets as class_path/init_args) and `optimizer`
(e.g. torch.optim.AdamW). Without an `lr_scheduler` section the module's linear warm-up/decay schedules the
optimizer, stepped per optimizer step. The `huggingface_checkpoint` section (`HuggingFaceCheckpoint`) says
where the Lightning IR checkpoint directory goes (by default into the log directory). Precision defaults to
bf16-mixed (16-mixed without bf16) when CUDA is available, 32-true otherwise; the seed defaults to 0.
`use_distributed_sampler` defaults to false: under DDP lir's training sampler shards each epoch itself. The
inference subcommands log nothing unless the config names a `trainer.logger`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lir.train.datamodule import LirDataModule
from lir.train.fit_module import FitModule
from lir.train.hf_checkpoint import HuggingFaceCheckpoint
from lir.train.inference import LirTrainer

INFERENCE = ("index", "search", "re_rank")


def default_precision() -> str:
    """Mixed precision on a GPU (bf16 where supported), full precision on CPU."""
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


class LirCLI(LightningCLI):
    """LightningCLI with lir's defaults; `args` None reads sys.argv."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            FitModule,
            LirDataModule,
            trainer_class=LirTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"precision": default_precision(), "use_distributed_sampler": False},
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return LightningCLI.subcommands() | {command: {"model", "datamodule"} for command in INFERENCE}

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        if self.subcommand in INFERENCE and self.config_init.get(f"{self.subcommand}.trainer.logger") is None:
            kwargs.setdefault("logger", False)
        return super().instantiate_trainer(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(HuggingFaceCheckpoint, "huggingface_checkpoint")

    @staticmethod
    def configure_optimizers(
        lightning_module: FitModule, optimizer: Optimizer, lr_scheduler: LRScheduler | None = None
    ) -> Any:
        scheduler = lr_scheduler if lr_scheduler is not None else lightning_module.schedule(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def main(argv: list[str], subcommand: str = "fit") -> int:
    """`lir fit ARGS` (fine-tune as the config says) or `lir index|search|re_rank ARGS`."""
    # expected here: `lir` hands over its own arguments, and an `optimizer` section replaces the module's
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run")
    warnings.filterwarnings("ignore", message=r".*configure_optimizers` will be overridden by `LirCLI")
    LirCLI([subcommand, *argv])
    return 0
