"""What one EigenPro worker step computes, as a pure function of what it read.

The step reads alpha (possibly stale, in the asynchronous engines) and returns an
additive, sparse `Update`: rows B get -(eta/m) g, rows S get +(eta/m) V D V^T K(X_S, X_B) g.
It never writes alpha itself; `apply_update` is the only writer.
"""

from __future__ import annotations

import dataclasses

import torch

from asyncopt.eigenpro.preconditioner import Preconditioner
from asyncopt.kernels.blocks import KernelData, kernel_product


@dataclasses.dataclass(frozen=True)
class KernelProblem:
    """Interpolation problem K(X, X) alpha = Y on the compute device."""

    data: KernelData
    Y: torch.Tensor  # (n, c), same dtype and device as data.X

    @property
    def n(self) -> int:
        return self.data.n


@dataclasses.dataclass(frozen=True)
class Update:
    rows: torch.Tensor  # (m,) batch indices B
    rows_delta: torch.Tensor  # (m, c) added to alpha[B]
    subsample_delta: torch.Tensor  # (s, c) added to alpha[S]
    residual_sq_sum: float  # sum of squared batch residuals before the step (a free train-MSE probe)


def eigenpro_step(
    problem: KernelProblem,
    precond: Preconditioner,
    alpha: torch.Tensor,
    batch: torch.Tensor,
    eta: float,
    budget_bytes: int,
) -> Update:
    """One preconditioned SGD step on batch B against the weights `alpha` as read."""
    Ka, K_BS = kernel_product(problem.data, alpha, rows=batch, gather=precond.indices, budget_bytes=budget_bytes)
    g = Ka.sub_(problem.Y[batch])
    scale = eta / len(batch)
    return Update(
        rows=batch,
        rows_delta=g * -scale,
        subsample_delta=precond.correction(K_BS, g).mul_(scale),
        residual_sq_sum=float(g.pow(2).sum()),
    )


@dataclasses.dataclass
class RowsDelta:
    """The part of an update for one row shard of alpha: deltas added to `rows` (which may repeat)."""

    rows: torch.Tensor  # (r,)
    delta: torch.Tensor  # (r, c)


def split_update(update: Update, subsample: torch.Tensor, bounds: list[int]) -> list[tuple[int, RowsDelta]]:
    """(shard, part) pairs of `update` over the row shards [bounds[j], bounds[j + 1]): the batch rows
    and the Nystrom subsample rows each shard owns (shards owning none get no part)."""
    rows = torch.cat([update.rows.to(subsample.device), subsample])
    delta = torch.cat([update.rows_delta, update.subsample_delta])
    if len(bounds) == 2:
        return [(0, RowsDelta(rows, delta))]
    owner = torch.bucketize(rows, torch.as_tensor(bounds[1:-1], device=rows.device), right=True)
    parts = []
    for j in range(len(bounds) - 1):
        mine = owner == j
        if bool(mine.any()):
            parts.append((j, RowsDelta(rows[mine], delta[mine])))
    return parts


def apply_update(alpha: torch.Tensor, update: Update | RowsDelta, subsample: torch.Tensor) -> None:
    """Add an update (or one shard's part of it) into alpha in place (index_add_ accumulates rows
    that repeat)."""
    if isinstance(update, RowsDelta):
        alpha.index_add_(0, update.rows, update.delta)
        return
    alpha.index_add_(0, update.rows, update.rows_delta)
    alpha.index_add_(0, subsample, update.subsample_delta)
