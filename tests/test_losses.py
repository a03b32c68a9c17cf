"""Each training loss on small inputs against values worked out by hand."""

from __future__ import annotations

from math import exp, log

import pytest
import torch

from lir.errors import LirError
from lir.train.losses import (
    FlopsRegularization,
    InBatchCrossEntropy,
    KLDivergence,
    MarginMSE,
    RankNet,
    SoftmaxCrossEntropy,
)


def softplus(x: float) -> float:
    return log(1 + exp(x))


def test_ranknet_averages_the_pairs_with_a_better_target():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 1.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    # query 1: pairs (0>1), (0>2); the tied negatives form no pair.  query 2: (0>1), (0>2), (1>2).
    # each pair i>j costs log(1 + exp(s_j - s_i))
    expected = (
        softplus(1.0 - 2.0) + softplus(0.0 - 2.0) + softplus(0.5 - 0.5) + softplus(1.0 - 0.5) + softplus(1.0 - 0.5)
    ) / 5
    assert RankNet()(scores, targets).item() == pytest.approx(expected, rel=1e-6)


def test_ranknet_is_zero_without_pairs():
    scores = torch.tensor([[1.0, 3.0]], requires_grad=True)
    loss = RankNet()(scores, torch.tensor([[1.0, 1.0]]))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad.abs().sum().item() == 0.0


def test_margin_mse_compares_margins_over_the_first_candidate():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    teacher = torch.tensor([[10.0, 8.0, 4.0]])
    # student margins 3-1 = 2, 3-2 = 1; teacher margins 10-8 = 2, 10-4 = 6 → ((2-2)² + (1-6)²) / 2
    assert MarginMSE()(scores, teacher).item() == pytest.approx((0.0 + 25.0) / 2)


def test_kl_divergence_of_teacher_and_student_softmax():
    scores = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[log(3.0), 0.0], [5.0, 6.0]])
    # query 1: teacher p = (3/4, 1/4), student q = (1/2, 1/2): Σ p log(p/q); query 2: same softmax → 0
    first = 0.75 * log(0.75 / 0.5) + 0.25 * log(0.25 / 0.5)
    assert KLDivergence()(scores, teacher).item() == pytest.approx((first + 0.0) / 2, rel=1e-6)


def test_softmax_cross_entropy_takes_the_first_best_and_skips_flat_targets():
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, 0.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    # query 1: positive = index 1 (first of the largest target): −log(e² / (e¹ + e² + e³)); query 2 is skipped
    expected = log(exp(1) + exp(2) + exp(3)) - 2
    assert SoftmaxCrossEntropy()(scores, targets).item() == pytest.approx(expected, rel=1e-6)


def test_in_batch_cross_entropy_finds_each_positive_at_q_times_k():
    # Q = 2 queries, K = 2 candidates each (positive first): positives at columns 0 and 2
    scores = torch.tensor([[4.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0]])
    first = log(exp(4) + exp(0) + exp(1) + exp(1)) - 4
    second = log(exp(0) + exp(0) + exp(2) + exp(0)) - 2
    assert InBatchCrossEntropy()(scores).item() == pytest.approx((first + second) / 2, rel=1e-6)
    # K = 1: the diagonal
    square = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    diagonal = ((log(exp(2) + exp(0)) - 2) + (log(exp(1) + exp(3)) - 3)) / 2
    assert InBatchCrossEntropy()(square).item() == pytest.approx(diagonal, rel=1e-6)


def test_flops_regularization_and_its_quadratic_warmup():
    weights = torch.tensor([[1.0, 0.0, -2.0], [3.0, 0.0, 0.0]])
    # column means of |w|: (1+3)/2 = 2, 0, (2+0)/2 = 1 → Σ mean² = 4 + 0 + 1 = 5
    flops = FlopsRegularization(weight=0.5, warmup_steps=10)
    assert [flops.weight_at(step) for step in (0, 5, 10, 20)] == [0.0, 0.5 * 0.25, 0.5, 0.5]
    assert flops(weights, step=5).item() == pytest.approx(0.125 * 5)
    assert flops(weights, step=20).item() == pytest.approx(2.5)
    assert FlopsRegularization(weight=0.5)(weights, step=0).item() == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("loss", "targets"),
    [
        (RankNet(), torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])),
        (MarginMSE(), torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.5, -1.0]])),
        (KLDivergence(), torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.5, -1.0]])),
        (SoftmaxCrossEntropy(), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])),
    ],
)
def test_gradients_reach_every_score(loss, targets):
    scores = torch.tensor([[0.1, 0.25, 0.3], [0.3, -0.2, 0.4]], requires_grad=True)
    loss(scores, targets).backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad != 0).all()


def test_gradients_of_in_batch_and_flops():
    scores = torch.randn(2, 4, requires_grad=True)
    InBatchCrossEntropy()(scores).backward()
    assert (scores.grad != 0).all()
    weights = torch.rand(3, 5, requires_grad=True)
    FlopsRegularization(1.0)(weights, step=1).backward()
    assert (weights.grad > 0).all()


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(LirError, match=r"scores \(2, 3\) and targets \(2, 2\) must both be \[Q, N\]"):
        RankNet()(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(LirError, match="at least 2 candidates per query, got 1"):
        MarginMSE()(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(LirError, match=r"in-batch scores \(2, 3\) must be \[Q, Q\*K\]"):
        InBatchCrossEntropy()(torch.zeros(2, 3))
    with pytest.raises(LirError, match=r"\[B, V\] weights"):
        FlopsRegularization(1.0)(torch.zeros(3), step=0)
    with pytest.raises(LirError, match="must not be negative"):
        FlopsRegularization(-1.0)
