"""`LirDataModule`: training tuples and re-ranking runs as Lightning dataloaders, resumable mid-epoch.

Batches are collated by the fit module's own collator (its tokenizer and text rules), so the datamodule
takes no model. The training order is a seeded permutation per epoch; `RunDataset.set_epoch` follows the
epoch too. The training loader is stateful for Lightning: a checkpoint records the epoch and the batches
the trainer has taken from it, and a fit resumed from that checkpoint draws exactly the next batch.
Under data parallelism (Lightning DDP) the sampler shards each epoch across the ranks itself (Lightning is
told not to swap in its `DistributedSampler`: lir's CLI sets `use_distributed_sampler: false`), so every rank
draws a disjoint, deterministic part of the epoch and a resume continues at the same batch on each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from lir.errors import LirError
from lir.train.data import DocDataset, QueryDataset, RunDataset, TupleDataset


class EpochSampler(Sampler[int]):
    """Indices of a sized dataset: a permutation seeded by (seed, epoch) when shuffling, else in order; a
    resumed epoch starts `start` indices in, once.

    With `num_replicas` ranks, rank `rank` takes every `num_replicas`-th index of the epoch's order from
    its `rank`-th on, so batch k of all ranks together is batch k of one process with `num_replicas` times
    the batch size. The order is first padded with its own start (as torch's DistributedSampler does) to a
    multiple of `num_replicas`: every rank draws as many batches, and only the padding repeats an index.
    Without `num_replicas`/`rank`, both come from torch.distributed when it is initialized (else 1 and 0).
    """

    def __init__(
        self,
        dataset: Dataset,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise LirError(f"rank {rank} is not one of {num_replicas} ranks")
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; passed on to datasets that sample per epoch."""
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def resume(self, epoch: int, start: int) -> None:
        """Continue `epoch` after this rank's first `start` indices."""
        self.set_epoch(epoch)
        self.start = start

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        count = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(count) if self.shuffle else np.arange(count)
        order = np.resize(order, len(self) * self.num_replicas)  # pads with the order's own start
        start, self.start = self.start, 0
        return iter(order[self.rank :: self.num_replicas][start:].tolist())


class ResumableLoader(DataLoader):
    """A training DataLoader over an `EpochSampler` that Lightning saves and restores (its `_Stateful`
    protocol): the epoch and how many batches the trainer consumed, read through `consumed` (the loader
    itself cannot tell: Lightning fetches ahead)."""

    def __init__(self, dataset: Dataset, sampler: EpochSampler, consumed: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.consumed = consumed

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.consumed()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            self.sampler.resume(epoch + 1, 0)
        else:
            self.sampler.resume(epoch, batches * self.batch_size)


class LirDataModule(LightningDataModule):
    """Training on tuples or sampled runs, validation by re-ranking runs (with qrels).

    `train_batch_size` counts queries (each with its tuple's or sample's candidates); validation scores
    `inference_batch_size` queries at a time, each with all its candidates (batches need equal candidate
    counts, so the default of 1 suits runs of any depth). `inference_datasets` are the runs validated
    during a fit, or what `lir index|search|re-rank --config` reads: documents, queries or runs.
    """

    def __init__(
        self,
        train_dataset: TupleDataset | RunDataset | None = None,
        inference_datasets: list[RunDataset | QueryDataset | DocDataset] | None = None,
        train_batch_size: int = 8,
        inference_batch_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_dataset = train_dataset
        self.inference_datasets = list(inference_datasets or [])
        self.train_batch_size = train_batch_size
        self.inference_batch_size = inference_batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed

    def _collator(self) -> Callable:
        return self.trainer.lightning_module.collator

    def _consumed(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> ResumableLoader:
        if self.train_dataset is None:
            raise LirError("fitting needs a train_dataset")
        trainer = self.trainer  # None outside a Trainer: one process, or torch.distributed's ranks
        if trainer is not None and trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
            raise LirError("data-parallel fitting needs trainer use_distributed_sampler=False (lir shards itself)")
        ranks = (trainer.world_size, trainer.global_rank) if trainer is not None else (None, None)
        return ResumableLoader(
            self.train_dataset,
            EpochSampler(self.train_dataset, self.shuffle, self.seed, *ranks),
            self._consumed,
            batch_size=self.train_batch_size,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> list[DataLoader]:
        for dataset in self.inference_datasets:
            if not isinstance(dataset, RunDataset):
                raise LirError(f"validation re-ranks runs: a {type(dataset).__name__} cannot be validated")
            if not dataset.qrels:
                raise LirError("a validation run needs qrels (pass qrels, or a dataset id that has them)")
        return [
            DataLoader(
                dataset,
                batch_size=self.inference_batch_size,
                collate_fn=self._collator(),
                num_workers=self.num_workers,
            )
            for dataset in self.inference_datasets
        ]
