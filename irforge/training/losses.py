"""Losses and regularisers the trainers share, one function each with its source."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def in_batch_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over a (queries, documents) score matrix whose column i is query i's positive and every
    other column a negative (in-batch and hard negatives): InfoNCE / MultipleNegativesRankingLoss."""
    import torch

    return torch.nn.functional.cross_entropy(scores, torch.arange(scores.shape[0]))


def flops_loss(reps: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al. 2020): sum_j (mean over the batch of w_j)^2."""
    return (reps.abs().mean(dim=0) ** 2).sum()


def flops_estimate(queries: torch.Tensor, docs: torch.Tensor) -> float:
    """Expected number of multiplications per (query, doc) pair: sum_j p_j(q) p_j(d) with p the activation rate."""
    return float(((queries > 0).float().mean(0) * (docs > 0).float().mean(0)).sum())


def quadratic_warmup(step: int, warmup_steps: int) -> float:
    """The lambda schedule of the SPLADE paper: grows as (step/T)^2 up to step T, then stays at 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step / warmup_steps) ** 2)


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, teacher_temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student)) over each row's candidates, averaged over rows: the listwise
    distillation loss (rows are queries, columns their positive then their negatives)."""
    import torch

    target = torch.softmax(teacher.detach() / teacher_temperature, dim=1)
    return torch.nn.functional.kl_div(torch.log_softmax(student, dim=1), target, reduction="batchmean")


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE (Hofstätter et al. 2020, GPL): squared error between the student's and the teacher's margins
    positive - negative, for each negative (column 0 is the positive)."""
    import torch

    teacher = teacher.detach()
    return torch.nn.functional.mse_loss(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


def mean_entropy(scores: np.ndarray, temperature: float = 1.0) -> float:
    """Mean entropy (nats) of the softmax over each row of ``scores`` / ``temperature``."""
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return float(-(p * np.log(np.clip(p, 1e-30, None))).sum(axis=1).mean())


def matched_temperature(teacher: np.ndarray, student: np.ndarray, low: float = 1e-2, high: float = 1e2) -> float:
    """The teacher temperature whose softmax is, on average, as sharp (same mean entropy) as the student's own
    scores before training. KL to a teacher softer than the student mostly teaches the student to flatten:
    to score its negatives closer to its positive. ``teacher`` and ``student``: (examples, candidates) scores.
    The answer is kept within [low, high] (a teacher that cannot tell candidates apart has no temperature)."""
    target = mean_entropy(student)
    if mean_entropy(teacher, high) <= target:
        return high
    if mean_entropy(teacher, low) >= target:
        return low
    lo, hi = np.log(low), np.log(high)  # entropy grows with the temperature: bisect on its logarithm
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_entropy(teacher, float(np.exp(mid))) < target else (lo, mid)
    return float(np.exp((lo + hi) / 2))
