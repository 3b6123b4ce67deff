"""Training loop glue: AsyB-ProxSGD run by an engine, with history, the step schedule and stopping.

At every evaluation point (workers drained) the full objective F, the squared norm of the
gradient mapping G (at the fixed step eta_0, so entries are comparable) and the non-zeros are
measured. The "plateau" schedule halves the servers' step when the mean of F over a window of
evaluations (at least two, and one epoch) is no lower than over the previous window (noise
dominates progress); training stops after
`n_iter_no_change` evaluations in a row improved the best F by less than `tol` (relative; never
when tol is None).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from asyncopt.engines.base import Monitor, Schedule
from asyncopt.engines.serial import SerialEngine
from asyncopt.engines.telemetry import Telemetry
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm, TrainingDiverged

PLATEAU_PATIENCE = 2  # evaluations per window of the plateau test (and at least one epoch)
STEP_FLOOR = 2.0**-20  # the plateau schedule never takes the step below eta_0 times this


@dataclasses.dataclass
class ProxHistoryEntry:
    """One evaluation point; passed to ``callback`` and stored in ``history_``."""

    epoch: float  # epochs completed
    samples: int  # training samples processed
    seconds: float  # training seconds since fit started (setup included, evaluations excluded)
    objective: float  # F(x) on the whole training set
    grad_mapping_sq: float  # ||G(x)||^2 at the step eta_0
    nnz: int  # non-zero coefficients (intercept excluded)
    step_size: float  # the servers' current eta_0
    steps: int = 0  # block updates applied
    staleness_mean: float = 0.0
    staleness_max: int = 0
    val_metric: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ProxSGDSettings:
    epochs: float
    evals_per_epoch: int = 1
    schedule: str = "plateau"  # "plateau" or "constant"
    tol: float | None = 1e-4
    n_iter_no_change: int = 5
    time_limit: float | None = None
    snapshot_epochs: float = 1.0  # variance reduction: epochs between anchor refreshes (at evaluation points)


def run_proxsgd(
    algo: ProxSGDAlgorithm,
    settings: ProxSGDSettings,
    rng: np.random.Generator,
    *,
    engine=None,
    validate: Callable[[torch.Tensor], float] | None = None,
    callback: Callable[[ProxHistoryEntry], bool | None] | None = None,
    progress=None,
    started: float | None = None,
) -> tuple[torch.Tensor, list[ProxHistoryEntry], Telemetry]:
    """Train from zero with `engine` (serial by default); returns (params, history, telemetry)."""
    n = algo.n_samples
    eta_measure = algo.step
    state = {"best": math.inf, "flat": 0}

    def evaluate(params, samples, steps, seconds):
        summary = monitor.telemetry.staleness_summary() if hasattr(monitor, "telemetry") else {}
        measures = algo.problem.measures(params, eta_measure)
        entry = ProxHistoryEntry(
            epoch=samples / n,
            samples=samples,
            seconds=seconds,
            step_size=algo.step,
            steps=steps,
            staleness_mean=float(summary.get("mean", 0.0)),
            staleness_max=int(summary.get("max", 0)),
            val_metric=validate(params) if validate is not None else None,
            **measures,
        )
        if not math.isfinite(entry.objective):
            raise TrainingDiverged(
                f"training diverged by epoch {entry.epoch:.2f}: the objective is non-finite. "
                f"Lower step_size (now {algo.step:.4g})"
            )
        _schedule_step(algo, settings, state, entry.objective)
        if progress is not None:
            progress.set_postfix(objective=f"{entry.objective:.6g}", nnz=entry.nnz)
        return entry

    def stop(entry):
        if settings.tol is not None and state["flat"] >= settings.n_iter_no_change:
            return True
        return callback(entry) if callback is not None else False

    anchored = {"at": 0}

    def refresh(params, samples):  # with workers drained, before the evaluation (timed as training)
        algo.flush(params)  # lazy updates: every row up to date before F is measured or the step changes
        if algo.variance_reduction and samples - anchored["at"] >= settings.snapshot_epochs * n:
            algo.refresh_snapshot(params)  # SVRG: move the anchor once an epoch
            anchored["at"] = samples

    monitor = Monitor(evaluate, stop, started, refresh)
    if algo.variance_reduction:
        algo.refresh_snapshot(algo.init_params())  # the anchor at the starting point
    schedule = Schedule(n, algo.batch_size, settings.epochs, settings.evals_per_epoch)
    engine = SerialEngine() if engine is None else engine
    params, telemetry = engine.run(algo, schedule, rng, monitor, settings.time_limit, monitor.started, progress)
    return params, monitor.history, telemetry


def _schedule_step(algo, settings, state, objective):
    """Plateau rule. Halving: F is averaged over windows of W evaluations (W >= 2 and >= one epoch);
    when a window's mean is no lower than the previous window's, noise dominates progress and the
    step is halved (down to eta_0 / 2^20). Comparing window means, not single values, keeps slow but
    steady progress (ill-conditioned problems) from being mistaken for a plateau.
    Stopping: evaluations that improved the best F by less than `tol` (relative) are counted;
    n_iter_no_change in a row stop."""
    best = state["best"]
    window = state.setdefault("window", [])
    window.append(objective)
    W = max(PLATEAU_PATIENCE, settings.evals_per_epoch)
    if len(window) == W:
        mean = sum(window) / W
        previous = state.get("previous_mean", math.inf)
        if settings.schedule == "plateau" and mean >= previous:
            algo.step = max(0.5 * algo.step, algo.eta * STEP_FLOOR)
        state["previous_mean"] = mean
        window.clear()
    tol = settings.tol if settings.tol is not None else 0.0
    flat = math.isfinite(best) and best - objective <= tol * max(abs(best), 1e-12)
    state["flat"] = state["flat"] + 1 if flat else 0
    state["best"] = min(best, objective)
