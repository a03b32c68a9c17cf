"""Lightning modules that fine-tune lir's models: bi-encoders of each family and cross-encoders.

Each takes a checkpoint (`model_name_or_path`, anything `load_model` reads) or, with `config` (a Lightning IR
config's keys with its `model_type`, e.g. `{"model_type": "col", "embedding_dim": 128}`), a new model of that
type on the checkpoint's backbone (`lir.train.initialize`). Training: AdamW with linear warm-up and
linear decay to zero over the fit's steps. Validation: re-ranking each inference run, scored with
`lir.metrics.evaluate` (nDCG@10 by default). `save_pretrained` writes a Lightning IR checkpoint directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lir.errors import LirError
from lir.metrics import evaluate
from lir.tokenization import PairEncoder, TextEncoder
from lir.train.checkpoints import load_model
from lir.train.data import Batch, BiEncoderCollator, CrossEncoderCollator
from lir.train.initialize import initialize
from lir.train.losses import FlopsRegularization, InBatchCrossEntropy, RankNet
from lir.train.saving import save_lightning_ir

Outputs = tuple[torch.Tensor, ...]


def linear_warmup_decay(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Learning rate factor rising linearly from 0 to 1 over `warmup_steps`, then falling linearly to 0 at
    `total_steps` (stepped once per optimizer step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def checkpoint_backbone(model: nn.Module) -> None:
    """Recompute each backbone layer in the backward pass instead of keeping its activations (Hugging Face's
    gradient checkpointing): a training step holds one layer's activations, not all of them, for ~1/3 more time."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not getattr(backbone, "supports_gradient_checkpointing", False):
        raise LirError(f"gradient_checkpointing: a {type(model).__name__}'s backbone does not support it")
    backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class FitModule(LightningModule):
    """What every family shares: loading, optimizer and schedule, validation by re-ranking, saving.

    `learning_rate` and `weight_decay` set up the module's own AdamW; under `lir fit` a config's `optimizer`
    section replaces that optimizer, and the linear warm-up/decay (`warmup_steps`) schedules it all the same.
    `gradient_checkpointing` recomputes the backbone's layers in the backward pass (`checkpoint_backbone`).
    """

    families: tuple[str, ...] = ()

    def __init__(
        self,
        model_name_or_path: str,
        config: dict[str, Any] | None = None,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        evaluation_metrics: Sequence[str] = ("nDCG@10",),
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loss_function"])
        loaded = initialize(model_name_or_path, config) if config is not None else load_model(model_name_or_path)
        family = loaded.model.family
        if family not in self.families:
            raise LirError(f"{model_name_or_path} is a {family} model: {type(self).__name__} trains {self.families}")
        self.loaded = loaded
        self.model = loaded.model.train()
        if gradient_checkpointing:
            checkpoint_backbone(self.model)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.evaluation_metrics = list(evaluation_metrics)
        self._runs: dict[int, dict[str, dict[str, float]]] = {}

    @property
    def collator(self) -> BiEncoderCollator | CrossEncoderCollator:
        """The batch collator of this model's text rules (the datamodule uses it)."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        """The training loss of one batch."""
        raise NotImplementedError

    def rerank_scores(self, batch: Batch) -> torch.Tensor:
        """[Q, N] scores of each query's own candidates."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("loss", loss, prog_bar=True, batch_size=len(batch.query_ids))
        return loss

    def configure_optimizers(self) -> dict:
        optimizer = AdamW(self.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.schedule(optimizer), "interval": "step"}}

    def schedule(self, optimizer: Optimizer) -> LambdaLR:
        """Linear warm-up over `warmup_steps`, then linear decay to 0 at the fit's last step."""
        return linear_warmup_decay(optimizer, self.warmup_steps, int(self.trainer.estimated_stepping_batches))

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        scores = self.rerank_scores(batch).float().cpu()
        run = self._runs.setdefault(dataloader_idx, {})
        count = scores.shape[1]
        for row, query_id in enumerate(batch.query_ids):
            doc_ids = batch.doc_ids[row * count : (row + 1) * count]
            run[query_id] = dict(zip(doc_ids, scores[row].tolist(), strict=True))

    def on_validation_epoch_end(self) -> None:
        loaders = self.trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, list) else [loaders]
        for index, run in sorted(self._runs.items()):
            results = evaluate(run, loaders[index].dataset.qrels, self.evaluation_metrics)
            for name, value in results.items():
                self.log(name if len(loaders) == 1 else f"{name}/{index}", value, add_dataloader_idx=False)
        self._runs.clear()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model as a Lightning IR checkpoint directory (what `load_model` and lir-export read)."""
        return save_lightning_ir(self.model, self.loaded.tokenizer, directory)


def _targets(batch: Batch, queries: int, candidates: int) -> torch.Tensor | None:
    if batch.targets is not None and tuple(batch.targets.shape) != (queries, candidates):
        raise LirError(f"targets {tuple(batch.targets.shape)} do not match {queries} queries × {candidates} docs")
    return batch.targets


class BiEncoderFitModule(FitModule):
    """Single-vector and multi-vector bi-encoders (and sparse ones without regularization).

    Loss: in-batch cross-entropy over every query against every candidate of the batch (`in_batch_loss`),
    plus `loss_function` over each query's own [Q, N] candidates and targets (e.g. `RankNet`,
    `KLDivergence`). In-batch, a query's positive is its best-target candidate; queries whose candidates
    all have one target (no positive among them) take no part, unless each has a single candidate. The
    losses see scores times `score_scale` (e.g. 20 for cosine similarity, whose scores lie in [-1, 1]).
    """

    families = ("single-vector", "multi-vector", "sparse")

    def __init__(
        self,
        model_name_or_path: str,
        config: dict[str, Any] | None = None,
        in_batch_loss: bool = True,
        loss_function: nn.Module | None = None,
        score_scale: float = 1.0,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        evaluation_metrics: Sequence[str] = ("nDCG@10",),
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            model_name_or_path,
            config,
            learning_rate,
            weight_decay,
            warmup_steps,
            evaluation_metrics,
            gradient_checkpointing,
        )
        if not in_batch_loss and loss_function is None:
            raise LirError("nothing to train on: enable in_batch_loss or give a loss_function")
        self.in_batch = InBatchCrossEntropy() if in_batch_loss else None
        self.loss_function = loss_function
        self.score_scale = score_scale
        self.encoders = {
            role: TextEncoder(self.loaded.tokenizer, self.model.config.rules(role), self.loaded.pad_token_id, role)
            for role in ("query", "doc")
        }

    @property
    def collator(self) -> BiEncoderCollator:
        return BiEncoderCollator(self.encoders)

    def encode(self, batch: Batch, role: str) -> Outputs:
        """The model's outputs for the batch's texts of `role`: (embeddings,) or (vectors, scoring mask)."""
        ids, mask = batch.inputs[f"{role}_input_ids"], batch.inputs[f"{role}_attention_mask"]
        if self.model.family == "multi-vector":
            return self.model.encode(ids, mask, role)
        return (self.model.encode(ids, mask, role),)

    def block_scores(self, queries: Outputs, docs: Outputs) -> torch.Tensor:
        """[Q, N] scores of each query against its own N candidates (rows of `docs` query-major)."""
        count = len(queries[0])
        candidates = len(docs[0]) // count
        if self.model.family == "multi-vector":
            vectors, mask = queries
            expanded = vectors.repeat_interleave(candidates, 0), mask.repeat_interleave(candidates, 0)
            return self.model.pair_scores(*expanded, *docs).view(count, candidates)
        embeddings = docs[0].view(count, candidates, -1)
        return torch.stack([self.model.similarity(q[None], d)[0] for q, d in zip(queries[0], embeddings, strict=True)])

    def rerank_scores(self, batch: Batch) -> torch.Tensor:
        return self.block_scores(self.encode(batch, "query"), self.encode(batch, "doc"))

    def loss(self, batch: Batch) -> torch.Tensor:
        queries, docs = self.encode(batch, "query"), self.encode(batch, "doc")
        return self.ranking_loss(queries, docs, batch) + self.regularization(queries, docs)

    def ranking_loss(self, queries: Outputs, docs: Outputs, batch: Batch) -> torch.Tensor:
        count = len(queries[0])
        candidates = len(docs[0]) // count
        targets = _targets(batch, count, candidates)
        if self.in_batch is None:
            return self._query_loss(self.block_scores(queries, docs) * self.score_scale, targets)
        scores = self.model.similarity(*queries, *docs) * self.score_scale  # [Q, Q*N]
        block = scores.view(count, count, candidates).diagonal().T
        return self._in_batch_loss(scores, targets) + self._query_loss(block, targets)

    def _query_loss(self, scores: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        if self.loss_function is None:
            return scores.new_zeros(())
        if targets is None:
            raise LirError("the loss_function needs targets: give the dataset targets")
        return self.loss_function(scores, targets.to(scores.dtype))

    def _in_batch_loss(self, scores: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """In-batch cross-entropy with each query's best candidate moved first, over the queries that have one."""
        count, columns = scores.shape
        candidates = columns // count
        if targets is None or candidates == 1:
            return self.in_batch(scores)
        best = targets.argmax(dim=1)
        order = torch.arange(candidates, device=scores.device).repeat(count, 1)
        rows = torch.arange(count, device=scores.device)
        order[rows, best] = 0
        order[:, 0] = best
        keep = (targets.amax(dim=1) > targets.amin(dim=1)).nonzero().flatten()
        if len(keep) == 0:
            return scores.new_zeros(())
        columns = (keep[:, None] * candidates + order[keep]).flatten()
        return self.in_batch(scores[keep][:, columns])

    def regularization(self, queries: Outputs, docs: Outputs) -> torch.Tensor:
        """A term added to the ranking loss (none for dense families)."""
        return queries[0].new_zeros(())


class SparseFitModule(BiEncoderFitModule):
    """SPLADE: the bi-encoder losses plus FLOPS regularization of query and document weights, each weight
    ramping up quadratically over `flops_warmup_steps`."""

    families = ("sparse",)

    def __init__(
        self,
        model_name_or_path: str,
        config: dict[str, Any] | None = None,
        in_batch_loss: bool = True,
        loss_function: nn.Module | None = None,
        score_scale: float = 1.0,
        query_flops_weight: float = 1e-4,
        doc_flops_weight: float = 1e-4,
        flops_warmup_steps: int = 0,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        evaluation_metrics: Sequence[str] = ("nDCG@10",),
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            model_name_or_path,
            config,
            in_batch_loss,
            loss_function,
            score_scale,
            learning_rate,
            weight_decay,
            warmup_steps,
            evaluation_metrics,
            gradient_checkpointing,
        )
        self.query_flops = FlopsRegularization(query_flops_weight, flops_warmup_steps)
        self.doc_flops = FlopsRegularization(doc_flops_weight, flops_warmup_steps)

    def regularization(self, queries: Outputs, docs: Outputs) -> torch.Tensor:
        step = self.global_step
        return self.query_flops(queries[0], step) + self.doc_flops(docs[0], step)


class CrossEncoderFitModule(FitModule):
    """Cross-encoders (pointwise `mono`, listwise `set-encoder`, monoT5/RankT5): each query's N candidates
    are scored as pairs, [Q*N] → [Q, N], and `loss_function` (default `RankNet`) compares them with the
    targets."""

    families = ("cross-encoder",)

    def __init__(
        self,
        model_name_or_path: str,
        config: dict[str, Any] | None = None,
        loss_function: nn.Module | None = None,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        evaluation_metrics: Sequence[str] = ("nDCG@10",),
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(
            model_name_or_path,
            config,
            learning_rate,
            weight_decay,
            warmup_steps,
            evaluation_metrics,
            gradient_checkpointing,
        )
        self.loss_function = loss_function if loss_function is not None else RankNet()
        config = self.model.config
        self.pairs = PairEncoder(
            self.loaded.tokenizer,
            config.rules("query"),
            config.rules("doc"),
            config.pair_rules(),
            self.loaded.pad_token_id,
        )

    @property
    def collator(self) -> CrossEncoderCollator:
        return CrossEncoderCollator(self.pairs)

    def rerank_scores(self, batch: Batch) -> torch.Tensor:
        return self.model(**batch.inputs).view(len(batch.query_ids), -1)

    def loss(self, batch: Batch) -> torch.Tensor:
        scores = self.rerank_scores(batch)
        targets = _targets(batch, *scores.shape)
        if targets is None:
            raise LirError("cross-encoder training needs targets: give the dataset targets")
        return self.loss_function(scores, targets.to(scores.dtype))
