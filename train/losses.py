"""Training losses over score tensors.

Shapes: `scores` and `targets` are [Q, N], the scores of each of Q queries' N candidates and their targets
(relevance labels, 1/rank, or a teacher's scores); a larger target means a better candidate. The in-batch
loss takes a [Q, Q*K] score matrix instead, and FLOPS regularization [B, V] sparse weights. Every loss
returns a scalar, averaged over its terms.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lir.errors import LirError


def _check(scores: torch.Tensor, targets: torch.Tensor, min_docs: int = 1) -> None:
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise LirError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must both be [Q, N]")
    if scores.shape[1] < min_docs:
        raise LirError(f"this loss needs at least {min_docs} candidates per query, got {scores.shape[1]}")


class RankNet(nn.Module):
    """Pairwise logistic loss: mean of log(1 + exp(s_j - s_i)) over the pairs of one query with
    target_i > target_j (zero when no pair differs)."""

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(scores, targets)
        better = (targets[:, :, None] > targets[:, None, :]).to(scores.dtype)
        losses = F.softplus(scores[:, None, :] - scores[:, :, None])
        return (losses * better).sum() / better.sum().clamp(min=1)


class MarginMSE(nn.Module):
    """Mean squared error between the student's and the teacher's margins of the first candidate over each
    other one: mean((s_0 - s_j) - (t_0 - t_j))² for j ≥ 1."""

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(scores, targets, min_docs=2)
        student = scores[:, :1] - scores[:, 1:]
        teacher = targets[:, :1] - targets[:, 1:]
        return F.mse_loss(student, teacher.to(scores.dtype))


class KLDivergence(nn.Module):
    """KL(teacher ‖ student) of the softmax distributions over each query's candidates, mean over queries;
    the teacher's is softmax(targets / `temperature`) (below 1 sharpens, e.g. a cosine teacher's [-1, 1])."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise LirError(f"the KL temperature must be positive, not {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(scores, targets)
        student = F.log_softmax(scores, dim=1)
        teacher = F.log_softmax(targets.to(scores.dtype) / self.temperature, dim=1)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True)


class SoftmaxCrossEntropy(nn.Module):
    """Listwise cross-entropy: −log softmax(scores)[p] with p the first candidate of the largest target,
    mean over the queries whose targets are not all equal (zero when none)."""

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(scores, targets)
        positive = targets.argmax(dim=1)
        informative = (targets.amax(dim=1) > targets.amin(dim=1)).to(scores.dtype)
        losses = F.cross_entropy(scores, positive, reduction="none")
        return (losses * informative).sum() / informative.sum().clamp(min=1)


class InBatchCrossEntropy(nn.Module):
    """In-batch negatives: `scores` [Q, Q*K] holds every query against all K candidates of every query of the
    batch, query-major (query q's candidates at columns q*K … q*K+K-1, its positive first). Cross-entropy
    with the positive at column q*K: with K = 1 the diagonal."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        queries, columns = scores.shape if scores.dim() == 2 else (0, 0)
        if queries == 0 or columns % queries:
            raise LirError(f"in-batch scores {tuple(scores.shape)} must be [Q, Q*K]")
        positives = torch.arange(queries, device=scores.device) * (columns // queries)
        return F.cross_entropy(scores, positives)


class FlopsRegularization(nn.Module):
    """SPLADE's FLOPS regularizer: weight(step) · Σ_v (mean_b |w_bv|)² over [B, V] sparse weights, the weight
    ramping up quadratically from 0 to `weight` over the first `warmup_steps` steps."""

    def __init__(self, weight: float, warmup_steps: int = 0) -> None:
        super().__init__()
        if weight < 0 or warmup_steps < 0:
            raise LirError(f"FLOPS weight {weight} and warmup_steps {warmup_steps} must not be negative")
        self.weight = weight
        self.warmup_steps = warmup_steps

    def weight_at(self, step: int) -> float:
        """weight · min(1, step / warmup_steps)²."""
        if step >= self.warmup_steps:
            return self.weight
        return self.weight * (step / self.warmup_steps) ** 2

    def forward(self, weights: torch.Tensor, step: int) -> torch.Tensor:
        if weights.dim() != 2:
            raise LirError(f"FLOPS regularization takes [B, V] weights, got {tuple(weights.shape)}")
        return self.weight_at(step) * weights.abs().mean(dim=0).pow(2).sum()
