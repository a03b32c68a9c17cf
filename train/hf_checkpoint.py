"""`HuggingFaceCheckpoint`: a Lightning callback that writes the fit module's Lightning IR checkpoint directory."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class HuggingFaceCheckpoint(Callback):
    """At the end of the fit, write the model into `dirpath` (default: `huggingface_checkpoint` in the
    trainer's log directory) as `save_pretrained` does; with `every_n_train_steps`, also into
    `dirpath/step-N` every N optimizer steps."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None) -> None:
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps
        self._last_step = -1

    def directory(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "huggingface_checkpoint"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        step, every = trainer.global_step, self.every_n_train_steps
        if every and step > 0 and step % every == 0 and step != self._last_step and trainer.is_global_zero:
            pl_module.save_pretrained(self.directory(trainer) / f"step-{step}")
            self._last_step = step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            pl_module.save_pretrained(self.directory(trainer))
