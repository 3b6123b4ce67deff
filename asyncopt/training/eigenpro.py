"""Training loop glue: EigenPro's algorithm run by an engine, with history and stopping rules."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from asyncopt.eigenpro.algorithm import EigenProAlgorithm
from asyncopt.eigenpro.preconditioner import Preconditioner
from asyncopt.eigenpro.step import KernelProblem
from asyncopt.engines.base import Monitor, Schedule
from asyncopt.engines.telemetry import Telemetry
from asyncopt.errors import TrainingDiverged
from asyncopt.kernels.blocks import kernel_product
from asyncopt.training.checkpoints import Checkpointing
from asyncopt.training.history import EntryMapping
from asyncopt.training.launch import continue_monitor, launch
from asyncopt.training.state import TrainingState

DIVERGED_FACTOR = 1e6  # a train MSE this many times that of zero weights stops the fit as diverged

__all__ = ["EigenProSettings", "HistoryEntry", "TrainingDiverged", "run_eigenpro"]


@dataclasses.dataclass
class HistoryEntry(EntryMapping):
    """One evaluation point; passed to ``callback`` and stored in ``history_`` (as a dict). It reads
    both ways: ``entry.train_mse`` or ``entry["train_mse"]``, ``"val_metric" in entry``, ``entry.get``."""

    epoch: float  # epochs completed (fractional between whole epochs)
    samples: int  # training samples processed so far
    seconds: float  # training seconds since fit started, setup included, evaluations excluded
    train_mse: float  # mean squared error on a fixed training subsample
    val_metric: float | None = None  # the estimator's validation score, when a validation set is given
    steps: int = 0  # updates applied
    staleness_mean: float = 0.0  # mean staleness of the updates so far (engines' telemetry)
    staleness_max: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EigenProSettings:
    batch_size: int  # per worker step
    eta: float  # step size for one batch of batch_size (of the whole round when synchronous)
    epochs: float
    evals_per_epoch: int = 1
    time_limit: float | None = None
    monitor_size: int = 1000
    n_servers: int = 1  # row shards of alpha (parameter servers, where the engine places them: Ray)


def run_eigenpro(
    problem: KernelProblem,
    precond: Preconditioner,
    settings: EigenProSettings,
    rng: np.random.Generator,
    *,
    budget_bytes: int,
    engine=None,
    validate: Callable[[torch.Tensor], float] | None = None,
    callback: Callable[[HistoryEntry], bool | None] | None = None,
    progress=None,
    started: float | None = None,
    resume: TrainingState | None = None,
    checkpointing: Checkpointing | None = None,
) -> tuple[torch.Tensor, list[HistoryEntry], Telemetry]:
    """Train alpha from zero, or continue `resume`, with `engine` (serial by default); returns
    (alpha, history, telemetry). With `checkpointing` the engine saves the state at drained points."""
    n = problem.n
    algo = EigenProAlgorithm(problem, precond, settings.eta, budget_bytes, settings.n_servers)
    device = problem.Y.device
    alpha = None
    if resume is not None:
        rows = torch.as_tensor(resume.run["monitor_rows"], device=device)
        alpha = algo.init_params()
        alpha.copy_(resume.params.to(alpha.dtype))
        algo.load_state_dict(resume.algorithm, alpha)
    else:  # the fixed training subsample the train MSE is measured on
        rows = torch.as_tensor(np.sort(rng.choice(n, size=min(n, settings.monitor_size), replace=False)), device=device)

    def evaluate(alpha, samples, steps, seconds):
        summary = monitor.telemetry.staleness_summary() if hasattr(monitor, "telemetry") else {}
        entry = HistoryEntry(
            epoch=samples / n,
            samples=samples,
            seconds=seconds,
            train_mse=_mse(problem, alpha, rows, budget_bytes),
            val_metric=validate(alpha) if validate is not None else None,
            steps=steps,
            staleness_mean=float(summary.get("mean", 0.0)),
            staleness_max=int(summary.get("max", 0)),
        )
        zero_mse = float(problem.Y[rows].pow(2).sum(1).mean())  # the train MSE of zero weights
        if math.isfinite(entry.train_mse) and entry.train_mse > DIVERGED_FACTOR * max(zero_mse, 1e-300):
            raise TrainingDiverged(
                f"training diverged by epoch {entry.epoch:.2f}: the train MSE reached {entry.train_mse:.3g}, "
                f"more than {DIVERGED_FACTOR:.0e} times that of zero weights ({zero_mse:.3g}). "
                f"Lower step_size (now {settings.eta:.4g}) or batch_size (now {settings.batch_size})"
            )
        if not math.isfinite(entry.train_mse):
            raise TrainingDiverged(
                f"training diverged by epoch {entry.epoch:.2f}: the weights are non-finite. "
                f"Lower step_size (now {settings.eta:.4g}) or batch_size (now {settings.batch_size})"
            )
        if progress is not None:
            progress.set_postfix(
                train_mse=f"{entry.train_mse:.3g}",
                **({"val": f"{entry.val_metric:.4g}"} if entry.val_metric is not None else {}),
            )
        return entry

    monitor = Monitor(evaluate, callback, started)
    continue_monitor(monitor, resume, HistoryEntry)
    schedule = Schedule(n, settings.batch_size, settings.epochs, settings.evals_per_epoch)
    alpha, telemetry = launch(
        algo, schedule, rng, monitor, engine=engine, time_limit=settings.time_limit, progress=progress,
        params=alpha, resume=resume, checkpointing=checkpointing, run_state=lambda: {"monitor_rows": rows.cpu()},
    )  # fmt: skip
    return alpha, monitor.history, telemetry


def _mse(problem: KernelProblem, alpha: torch.Tensor, rows: torch.Tensor, budget_bytes: int) -> float:
    pred, _ = kernel_product(problem.data, alpha, rows=rows, budget_bytes=budget_bytes)
    return float((pred - problem.Y[rows]).pow(2).sum(1).mean())
