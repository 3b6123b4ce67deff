"""The synchronous EigenPro loop: epochs of random batches, evaluation points, stopping rules."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from asyncopt.eigenpro.preconditioner import Preconditioner
from asyncopt.eigenpro.step import KernelProblem, apply_update, eigenpro_step
from asyncopt.kernels.blocks import kernel_product


class TrainingDiverged(FloatingPointError):
    """The weights became non-finite."""


@dataclasses.dataclass
class HistoryEntry:
    """One evaluation point; passed to ``callback`` and stored in ``history_``."""

    epoch: float  # epochs completed (fractional between whole epochs)
    samples: int  # training samples processed so far
    seconds: float  # training seconds since fit started, setup included, evaluations excluded
    train_mse: float  # mean squared error on a fixed training subsample
    val_metric: float | None = None  # the estimator's validation score, when a validation set is given
    steps: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EigenProSettings:
    batch_size: int
    eta: float
    epochs: float
    evals_per_epoch: int = 1
    time_limit: float | None = None
    monitor_size: int = 1000


def _evaluation_samples(n: int, settings: EigenProSettings) -> list[int]:
    """Sample counts after which to evaluate: evals_per_epoch per epoch, and the end."""
    total = int(math.ceil(settings.epochs * n))
    per = max(1, settings.evals_per_epoch)
    points = {int(round(k * n / per)) for k in range(1, int(math.ceil(settings.epochs * per)) + 1)}
    return sorted(p for p in points if 0 < p < total) + [total]


def run_eigenpro(
    problem: KernelProblem,
    precond: Preconditioner,
    settings: EigenProSettings,
    rng: np.random.Generator,
    *,
    budget_bytes: int,
    validate: Callable[[torch.Tensor], float] | None = None,
    callback: Callable[[HistoryEntry], bool | None] | None = None,
    progress=None,
    started: float | None = None,
) -> tuple[torch.Tensor, list[HistoryEntry]]:
    """Train alpha from zero; returns (alpha, history). Raises TrainingDiverged on non-finite weights."""
    n, c = problem.Y.shape
    alpha = torch.zeros(n, c, dtype=problem.Y.dtype, device=problem.Y.device)
    monitor = torch.as_tensor(
        np.sort(rng.choice(n, size=min(n, settings.monitor_size), replace=False)), device=problem.Y.device
    )
    eval_at = _evaluation_samples(n, settings)
    started = time.perf_counter() if started is None else started
    eval_seconds = 0.0
    history: list[HistoryEntry] = []
    samples = steps = 0
    m = settings.batch_size
    order = torch.empty(0, dtype=torch.long)
    next_eval = 0
    while samples < eval_at[-1]:
        if len(order) == 0:
            order = torch.as_tensor(rng.permutation(n), device=problem.Y.device)
        # never step past an evaluation point, so fractions of an epoch are seen exactly
        take = min(m, len(order), eval_at[next_eval] - samples)
        batch, order = order[:take], order[take:]
        update = eigenpro_step(problem, precond, alpha, batch, settings.eta * take / m, budget_bytes)
        if not math.isfinite(update.residual_sq_sum):
            raise TrainingDiverged(
                f"training diverged at step {steps} (epoch {samples / n:.2f}): the residual became "
                f"non-finite. Lower step_size (now {settings.eta:.4g}) or batch_size (now {m}), or use "
                "dtype='float64'"
            )
        apply_update(alpha, update, precond.indices)
        samples += take
        steps += 1
        if progress is not None:
            progress.update(take)
        over_time = (
            settings.time_limit is not None
            and time.perf_counter() - started - eval_seconds >= settings.time_limit
        )
        if samples == eval_at[next_eval] or over_time:
            t0 = time.perf_counter()
            entry = HistoryEntry(
                epoch=samples / n,
                samples=samples,
                seconds=t0 - started - eval_seconds,
                train_mse=_mse(problem, alpha, monitor, budget_bytes),
                val_metric=validate(alpha) if validate is not None else None,
                steps=steps,
            )
            if not math.isfinite(entry.train_mse):
                raise TrainingDiverged(
                    f"training diverged by epoch {entry.epoch:.2f}: the weights are non-finite. "
                    f"Lower step_size (now {settings.eta:.4g}) or batch_size (now {m})"
                )
            history.append(entry)
            if progress is not None:
                progress.set_postfix(
                    train_mse=f"{entry.train_mse:.3g}",
                    **({"val": f"{entry.val_metric:.4g}"} if entry.val_metric is not None else {}),
                )
            eval_seconds += time.perf_counter() - t0
            if samples == eval_at[next_eval]:
                next_eval += 1
            if over_time or (callback is not None and _wants_stop(callback, entry)):
                break
    return alpha, history


def _wants_stop(callback, entry: HistoryEntry) -> bool:
    try:
        return bool(callback(entry))
    except StopIteration:
        return True


def _mse(problem: KernelProblem, alpha: torch.Tensor, rows: torch.Tensor, budget_bytes: int) -> float:
    pred, _ = kernel_product(problem.data, alpha, rows=rows, budget_bytes=budget_bytes)
    return float((pred - problem.Y[rows]).pow(2).sum(1).mean())
