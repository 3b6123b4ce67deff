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
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from asyncopt.engines.base import Monitor, Schedule, torch_threads
from asyncopt.engines.telemetry import Telemetry
from asyncopt.errors import TrainingDiverged
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.data import pass_threads
from asyncopt.training.checkpoints import Checkpointing
from asyncopt.training.history import EntryMapping
from asyncopt.training.launch import continue_monitor, launch
from asyncopt.training.state import TrainingState

PLATEAU_PATIENCE = 2  # evaluations per window of the plateau test (and at least one epoch)
STEP_FLOOR = 2.0**-20  # the plateau schedule never takes the step below eta_0 times this
# F at an evaluation point this many times F at the starting point is divergence: the iterates grow
# geometrically long before they overflow (step_size=1e6 reached coefficients of 1e80 with F finite);
# a converging run stays near or below F(x0), and even a noisy too-large step stays orders of magnitude under this
DIVERGENCE_FACTOR = 1e6
# SVRG, anchor_epochs="auto": anchors an epoch, one per this many samples, 1 to 4. After an anchor moves,
# F falls to a floor set by the anchor's distance from the optimum within a number of samples that
# depends on the problem's conditioning, not on n; the rest of the interval adds little. On the 2*10^6-row
# benchmark problem F fell 10x within the first quarter (and eighth) of every epoch and then stayed flat;
# a9a and news20 replicated 16 times (5.2*10^5 and 2.4*10^5 rows) reached 1e-2 1.1-2.4x sooner with
# intervals of 6*10^4 samples or more; on a9a and news20 themselves (1.5-3.3*10^4 rows) shorter
# intervals than an epoch paid the anchor's pass for little or nothing (news20: 0.63-1.05x)
# (benchmarks/results/anchor_interval.md)
ANCHOR_SAMPLES = 2**16
MAX_ANCHORS_PER_EPOCH = 4
# A run whose last comparable F (at an SVRG anchor, or any point without SVRG) rose back above the best
# by more than this share of the progress from F(x0) to the best ended unstable: ConvergenceWarning
UNSTABLE_SHARE = 0.5


def auto_anchor_epochs(n: int) -> float:
    """Epochs between SVRG anchor moves for anchor_epochs="auto" (ANCHOR_SAMPLES)."""
    return 1.0 / max(1, min(MAX_ANCHORS_PER_EPOCH, n // ANCHOR_SAMPLES))


def anchor_schedule(evals_per_epoch: int, anchor_epochs: float) -> tuple[float, int]:
    """(epochs between anchor moves, evaluation points an epoch). The anchor moves at evaluation points
    (each move's pass measures F there): an interval under an epoch is rounded to 1/k of one and the
    points are a multiple of k, at least the user's evals_per_epoch; a longer one moves at the first
    point it has elapsed by."""
    if anchor_epochs >= 1.0:
        return float(anchor_epochs), evals_per_epoch
    k = max(1, round(1.0 / anchor_epochs))
    return 1.0 / k, k * -(-evals_per_epoch // k)


@dataclasses.dataclass
class ProxHistoryEntry(EntryMapping):
    """One evaluation point; passed to ``callback`` and stored in ``history_`` (as a dict). It reads
    both ways: ``entry.objective`` or ``entry["objective"]``, ``"val_metric" in entry``, ``entry.get``."""

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
    snapshot_epochs: float = 1.0  # variance reduction: epochs between anchor moves (at evaluation points)
    # evaluation points per evaluation the user asked for (the anchor's moves add points): the tol rule
    # keeps its meaning per user evaluation (a point is flat below tol / this; this many times
    # n_iter_no_change flat points stop)
    points_per_evaluation: float = 1.0


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
    resume: TrainingState | None = None,
    checkpointing: Checkpointing | None = None,
) -> tuple[torch.Tensor, list[ProxHistoryEntry], Telemetry]:
    """Train from zero, or continue `resume`, with `engine` (serial by default); returns (params,
    history, telemetry). With `checkpointing` the engine saves the state at drained points."""
    n = algo.n_samples
    eta_measure = algo.eta  # ||G||^2 at the fixed eta_0, so entries stay comparable
    run = RunState()
    params = None
    if resume is not None:
        params = algo.init_params()
        params.copy_(resume.params.to(params.dtype))
        algo.load_state_dict(resume.algorithm, params)
        run = RunState.from_dict(resume.run)

    def evaluate(params, samples, steps, seconds):
        summary = monitor.telemetry.staleness_summary() if hasattr(monitor, "telemetry") else {}
        with pass_threads():  # (torch's OpenMP threads would spin on the workers' cores after it)
            measures = algo.measures(params, eta_measure)
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
        start = run.start_objective
        if start is not None and entry.objective > DIVERGENCE_FACTOR * max(start, 1e-12):
            raise TrainingDiverged(
                f"training diverged by epoch {entry.epoch:.2f}: the objective grew from {start:.4g} at the "
                f"start to {entry.objective:.4g} (over {DIVERGENCE_FACTOR:.0e} times). Lower step_size "
                f"(now {algo.step:.4g}; step_size='auto' takes 1 / L from the data's smoothness)"
            )
        run.plateau.update(algo, settings, entry.objective)
        if progress is not None:
            progress.set_postfix(objective=f"{entry.objective:.6g}", nnz=entry.nnz)
        return entry

    def stop(entry):
        if settings.tol is not None and run.plateau.flat >= flat_points(
            settings.n_iter_no_change, settings.points_per_evaluation
        ):
            return True
        return callback(entry) if callback is not None else False

    def refresh(params, samples):  # with workers drained, before the evaluation (timed as training)
        with pass_threads():
            _refresh(params, samples)

    def _refresh(params, samples):
        algo.flush(params)  # lazy updates: every row up to date before F is measured or the step changes
        # (evaluation points fall at rounded sample counts: a sample of slack)
        if algo.variance_reduction and samples - run.anchored_at >= settings.snapshot_epochs * n - 1:
            algo.refresh_snapshot(params)  # SVRG: move the anchor (every snapshot_epochs)
            algo.adapt_step(params)  # and the step bound to the curvature there (local_steps)
            run.anchored_at = samples
            anchor_points.add(samples)

    anchor_points = set()  # (this call's: F there is comparable from anchor to anchor)

    if resume is None and algo.variance_reduction:
        with torch_threads(getattr(engine, "coordinator_threads", None)), pass_threads():  # (no worker yet)
            algo.refresh_snapshot(algo.init_params())  # the anchor at the starting point
    if run.start_objective is None:  # F(x0), what divergence is measured against (x0: init_params)
        start = algo.objective(algo.init_params())  # (from the anchor's pass, when there is one)
        run.start_objective = start if math.isfinite(start) else math.inf
    monitor = Monitor(evaluate, stop, started, refresh)
    continue_monitor(monitor, resume, ProxHistoryEntry)
    schedule = Schedule(n, algo.batch_size, settings.epochs, settings.evals_per_epoch, getattr(algo, "draws", None))
    params, telemetry = launch(
        algo, schedule, rng, monitor, engine=engine, time_limit=settings.time_limit, progress=progress,
        params=params, resume=resume, checkpointing=checkpointing, run_state=run.as_dict,
    )  # fmt: skip
    comparable = [e for e in monitor.history if not algo.variance_reduction or e.samples in anchor_points]
    warn_if_unstable(comparable, run.start_objective)
    return params, monitor.history, telemetry


def warn_if_unstable(points: list[ProxHistoryEntry], start_objective: float | None) -> None:
    """ConvergenceWarning when the last of these points' F rose back above their best by more than
    UNSTABLE_SHARE of the progress from F(x0) to that best: steps too long for the data or the delays
    (a divergence that had not yet reached DIVERGENCE_FACTOR, or a run swinging around the optimum). The
    points must be comparable: SVRG anchors (between anchors an SVRG run sits above them, by far on small
    data: a 400-row fit went 0.26, 0.45, 0.08 at points half an epoch apart), or every point without SVRG."""
    if len(points) < 2 or start_objective is None or not math.isfinite(start_objective):
        return
    best = min(points, key=lambda e: e.objective)
    last = points[-1]
    rise, progress = last.objective - best.objective, start_objective - best.objective
    if rise > UNSTABLE_SHARE * max(progress, 0.0) and rise > 1e-3 * abs(best.objective):  # (and above noise)
        how = (
            f"rose from its best {best.objective:.6g} (epoch {best.epoch:.3g}) to {last.objective:.6g} (epoch "
            f"{last.epoch:.3g}), over {UNSTABLE_SHARE:g} of the way back to {start_objective:.6g} at the start"
            if progress > 0
            else f"never fell below {start_objective:.6g} at the start and ended at {last.objective:.6g}"
        )
        warnings.warn(
            f"the fit ended unstable: its objective {how}; the model is the last point's. Lower step_size (or "
            f"max_delay, or n_workers)",
            ConvergenceWarning,
            stacklevel=4,
        )


@dataclasses.dataclass
class PlateauState:
    """The plateau rule's memory. Halving: F is averaged over windows of W evaluations (W >= 2 and
    >= one epoch); when a window's mean is no lower than the previous window's, noise dominates
    progress and the step is halved (down to eta_0 / 2^20). Comparing window means, not single
    values, keeps slow but steady progress (ill-conditioned problems) from being mistaken for a
    plateau. Stopping: evaluations that improved the best F by less than `tol` (relative) are
    counted; n_iter_no_change in a row stop."""

    best: float = math.inf
    flat: int = 0
    window: list = dataclasses.field(default_factory=list)
    previous_mean: float = math.inf

    def update(self, algo, settings: ProxSGDSettings, objective: float) -> None:
        self.window.append(objective)
        W = max(PLATEAU_PATIENCE, settings.evals_per_epoch)
        if len(self.window) == W:
            mean = sum(self.window) / W
            if settings.schedule == "plateau" and mean >= self.previous_mean:
                algo.step = max(0.5 * algo.step, algo.eta * STEP_FLOOR)
            self.previous_mean = mean
            self.window = []
        tol = settings.tol / settings.points_per_evaluation if settings.tol is not None else 0.0
        self.flat = self.flat + 1 if is_flat(self.best, objective, tol) else 0
        self.best = min(self.best, objective)


def is_flat(best: float, objective: float, tol: float) -> bool:
    """An evaluation that improved the best F so far by less than `tol` (relative): the stopping rule's count."""
    return math.isfinite(best) and best - objective <= tol * max(abs(best), 1e-12)


def flat_points(n_iter_no_change: int, points_per_evaluation: float) -> int:
    """Flat evaluation points in a row that stop a run (ProxSGDSettings.points_per_evaluation)."""
    return math.ceil(n_iter_no_change * points_per_evaluation - 1e-9)


def tolerance_met(
    objectives: list[float], tol: float, n_iter_no_change: int, points_per_evaluation: float = 1.0
) -> bool:
    """Whether the stopping rule fired by the last of these evaluations (n_iter_no_change flat ones in a
    row; with points_per_evaluation, flat points below tol / it, and that many times as many)."""
    best, flat = math.inf, 0
    for objective in objectives:
        flat = flat + 1 if is_flat(best, objective, tol / points_per_evaluation) else 0
        best = min(best, objective)
    return flat >= flat_points(n_iter_no_change, points_per_evaluation)


@dataclasses.dataclass
class RunState:
    """The training loop's state between evaluation points (saved in checkpoints)."""

    plateau: PlateauState = dataclasses.field(default_factory=PlateauState)
    anchored_at: int = 0  # samples when the SVRG anchor last moved
    start_objective: float | None = None  # F at the starting point (divergence test); inf: no test

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> RunState:
        start = saved.get("start_objective")  # (absent from older checkpoints: measured again)
        return cls(PlateauState(**saved["plateau"]), int(saved["anchored_at"]), None if start is None else float(start))
