"""scikit-learn estimators for linear models trained by AsyB-ProxSGD."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from asyncopt.engines import make_engine
from asyncopt.estimators.base import AsyncEstimator, data_fingerprint
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.column_scales import dense_scales, divided_columns, sparse_scales
from asyncopt.proxsgd.data import LinearData, column_counts, sample_weights
from asyncopt.proxsgd.losses import NonconvexRegularizer, get_loss
from asyncopt.proxsgd.problem import LinearProblem, block_bounds, feature_order
from asyncopt.proxsgd.prox import PENALTIES, make_penalty
from asyncopt.proxsgd.row_splits import epoch_draws, heavy_row_counts, split_threshold
from asyncopt.proxsgd.stepsize import base_step, estimate_smoothness, largest_draw
from asyncopt.training.proxsgd import (
    ProxSGDSettings,
    anchor_schedule,
    auto_anchor_epochs,
    run_proxsgd,
    tolerance_met,
)

# Below the critical batch size (beta / lambda_1, about 2-3 on a9a and 20 Newsgroups) a larger
# batch buys no progress per sample; 32 keeps the per-update Python overhead small against the work.
AUTO_BATCH_MIN, AUTO_BATCH_MAX = 32, 4096
# sparse data with this many columns or more runs in its own feature order (`_frequency_order`)
FREQUENCY_ORDER_COLUMNS = 2**15


def _lazy_switch() -> str:  # (the environment's A/B switch of benchmarks, like ASYNCOPT_BUNDLES)
    return "off" if os.environ.get("ASYNCOPT_LAZY", "auto") == "off" else "auto"


def users_order(rows: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Parameter rows kept in the run's feature order (row j: the user's feature order[j]) in the user's."""
    if order is None:
        return rows
    out = np.empty_like(rows)
    out[order] = rows
    return out


def _users_coefficients(W: np.ndarray, d: int, scaling) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients, intercept) in the user's coordinates from the run's parameters W (d + 1, k),
    where the run solved on (X - shift) / scale (`_ProxSGDBase._column_scaling`)."""
    if scaling is None:
        return W[:d], W[d]
    shift, scale = scaling
    coef = W[:d] / scale[:, None]
    return coef, W[d] if shift is None else W[d] - shift @ coef


def resolve_push(push: str, blockwise: bool) -> str:
    """push="auto": the block push (AsyB-ProxSGD) where a block's eager sweep costs far more than a
    batch's entries (`blockwise`: wide sparse data, where shared memory's updates are lazy), else the
    full push (Asyn-ProxSGD), whose updates each move every block.
    - Shared memory: each update takes the step of its measured staleness and moves every block
      (news20, 2 workers: 1.46x one worker to 1e-2, AsyB 0.93x). On wide data an update costs its
      entries with lazy updates, half of them for a block push with 2 blocks, and lazy updates take
      the step of the delay bound, which costs a full push more (0.5 against 0.71 of the step at 2
      workers) (2*10^6 x 10^6 synthetic: AsyB 1.78x one worker to 1e-2, the full push 1.14x;
      benchmarks/results/proxsgd_large.md).
    - Ray: the servers sweep their blocks eagerly, so a full push costs every server a sweep per
      update, which on wide data is the block push's rule again; elsewhere a full push's samples
      travel to each block server (sample bundles: bytes a sample) and each update moves every
      block. Measured with 2 workers (session 10): news20 at batch 4,096 the same samples/s
      (102k against 107k) and relative suboptimality 0.72 against 0.83 after 20 epochs; at batch
      256, 22k against 31k samples/s and 0.30 against 0.44 after 10 epochs; a9a to 1e-2 in 8.3
      against 8.2 s, start-up included."""
    if push != "auto":
        return push
    return "block" if blockwise else "full"


def auto_batch_size(smoothness) -> int:
    """The critical batch m* = beta / lambda_1 (Ma, Bassily & Belkin 2018), within [32, 4096]."""
    lam = smoothness.top_eigenvalue
    critical = smoothness.max_row_sq_norm / lam if lam > 0 else AUTO_BATCH_MAX
    return int(min(max(math.ceil(critical), AUTO_BATCH_MIN), AUTO_BATCH_MAX))


def feature_groups(groups, n_features: int) -> np.ndarray:
    """Group codes 0..G-1, one per feature, from a label per feature or a list of index lists."""
    if isinstance(groups, (list, tuple)) and groups and all(np.ndim(g) == 1 for g in groups):
        codes = np.full(n_features, -1, dtype=np.int64)
        for code, members in enumerate(groups):
            members = np.asarray(members, dtype=np.int64)
            if members.size and (members.min() < 0 or members.max() >= n_features):
                raise ValueError(f"groups[{code}] names features outside 0..{n_features - 1}")
            if (codes[members] >= 0).any():
                raise ValueError(f"groups overlap: groups[{code}] repeats features of an earlier group")
            codes[members] = code
        missing = np.flatnonzero(codes < 0)
        if missing.size:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if missing.size > 10 else "")
            raise ValueError(f"groups do not cover the features: {missing.size} feature(s) in no group ({shown})")
        return np.unique(codes, return_inverse=True)[1]
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n_features:
        raise ValueError(
            f"groups must give one group label per feature ({n_features}) or be a list of feature-index lists; "
            f"got an array of shape {labels.shape}"
        )
    return np.unique(labels, return_inverse=True)[1]


def _checked_weights(sample_weight, X) -> np.ndarray | None:
    """sample_weight as float64 (n,), or None: one finite, non-negative weight per sample, not all 0."""
    if sample_weight is None:
        return None
    from sklearn.utils.validation import _check_sample_weight

    return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True, copy=True)


MAX_TARGET = 1e150  # largest |y| a regressor takes: its square, summed over samples, stays finite in float64


class _ProxSGDBase(AsyncEstimator):
    _parameter_constraints: dict = {
        **AsyncEstimator._shared_constraints,
        "loss": [str],
        "penalty": [StrOptions(set(PENALTIES)), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "groups": ["array-like", None],
        "positive": ["boolean"],
        "bounds": [tuple, list, None],
        "nonconvex_strength": [Interval(Real, 0, None, closed="left")],
        "n_blocks": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "push": [StrOptions({"auto", "block", "full"})],
        "backend": [StrOptions({"serial", "threads", "processes", "ray"})],
        "n_workers": [Interval(Integral, 1, None, closed="left")],
        "threads_per_worker": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "step_size": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "column_scaling": [StrOptions({"auto", "none"})],
        "row_splitting": [StrOptions({"auto", "none"})],
        "schedule": [StrOptions({"plateau", "constant"})],
        "variance_reduction": [StrOptions({"auto", "none", "svrg"})],
        "anchor_epochs": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "max_epochs": [Interval(Real, 0, None, closed="neither")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "evals_per_epoch": [Interval(Integral, 1, None, closed="left")],
        "max_delay": [Interval(Integral, 0, None, closed="left")],
        "delay": [StrOptions({"fixed", "random"})],
        "inconsistent_reads": ["boolean"],
        "delay_adaptive": ["boolean", StrOptions({"auto"})],
        "synchronous": ["boolean"],
        "task_samples": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "fit_intercept": ["boolean"],
        "dtype": [StrOptions({"float32", "float64"})],
        "device": [str, torch.device],
        "time_limit": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callback": [callable, None],
    }

    def __init__(
        self,
        loss="squared",
        *,
        penalty="l2",
        alpha=1e-4,
        l1_ratio=0.15,
        groups=None,
        positive=False,
        bounds=None,
        nonconvex_strength=0.0,
        n_blocks="auto",
        push="auto",
        backend="serial",
        n_workers=1,
        threads_per_worker=None,
        batch_size="auto",
        step_size="auto",
        column_scaling="auto",
        row_splitting="auto",
        schedule="plateau",
        variance_reduction="auto",
        anchor_epochs="auto",
        max_epochs=100,
        tol=1e-4,
        n_iter_no_change=5,
        evals_per_epoch=1,
        max_delay=0,
        delay="fixed",
        inconsistent_reads=False,
        delay_adaptive="auto",
        synchronous=False,
        ray_address=None,
        resources_per_worker=None,
        task_samples="auto",
        fit_intercept=True,
        dtype="float64",
        device="cpu",
        time_limit=None,
        random_state=None,
        verbose=0,
        callback=None,
        checkpoint_dir=None,
        checkpoint_every=60.0,
    ):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.groups = groups
        self.positive = positive
        self.bounds = bounds
        self.nonconvex_strength = nonconvex_strength
        self.n_blocks = n_blocks
        self.push = push
        self.backend = backend
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.batch_size = batch_size
        self.step_size = step_size
        self.column_scaling = column_scaling
        self.row_splitting = row_splitting
        self.schedule = schedule
        self.variance_reduction = variance_reduction
        self.anchor_epochs = anchor_epochs
        self.max_epochs = max_epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.evals_per_epoch = evals_per_epoch
        self.max_delay = max_delay
        self.delay = delay
        self.inconsistent_reads = inconsistent_reads
        self.delay_adaptive = delay_adaptive
        self.synchronous = synchronous
        self.ray_address = ray_address
        self.resources_per_worker = resources_per_worker
        self.task_samples = task_samples
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.device = device
        self.time_limit = time_limit
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every

    # -- fitting -----------------------------------------------------------------------
    def _validate_X(self, X, reset):
        return validate_data(self, X, reset=reset, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32])

    def _validation_scorer(self, X_val, target, d: int, order, scaling=None):
        """val_metric at an evaluation point (workers drained, lazy rows flushed) from the parameters
        (in the run's feature order: `order`; in the user's coordinates where the run scaled X: `scaling`)."""

        def score(params):
            coef, intercept = _users_coefficients(params.detach().cpu().numpy().astype(np.float64), d, scaling)
            return self._score_scores(np.asarray(X_val @ users_order(coef, order)) + intercept, target)

        return score

    def _column_scaling(self, X) -> tuple[np.ndarray | None, np.ndarray] | None:
        """(shift, scale) where the run scales X's columns itself (column_scaling="auto"; the rules and
        why: proxsgd/column_scales.py): dense columns standardized (shift: their means with an
        intercept, else None), sparse ones as given but for columns far larger than the typical entry
        (shift None). The run solves for u = s * w with the penalty h(u / s) (prox.Penalty.row_scale);
        coef_ is u / s and intercept_ the run's minus shift . coef_. Not for group L1 (its prox has no
        closed form then), a smooth regularizer or a given step_size (both in the user's coordinates)."""
        if (
            self.column_scaling == "none"
            or self.penalty == "group_l1"
            or self.nonconvex_strength
            or self.step_size != "auto"
            or X.shape[0] == 0
            or X.shape[1] == 0
        ):
            return None
        if sp.issparse(X):
            scale = sparse_scales(X)
            return None if scale is None else (None, scale)
        return dense_scales(X, centre=self.fit_intercept)

    def _heavy_rows(self, data: LinearData, row_norms, top_eigenvalue: float) -> np.ndarray | None:
        """How often each row is drawn an epoch where some rows dwarf the rest (row_splitting="auto":
        proxsgd/row_splits.py), else None (each row once)."""
        if self.row_splitting == "none" or row_norms is None:
            return None
        rows = data.weighted(row_norms + (1.0 if self.fit_intercept else 0.0)).cpu().numpy()
        batch = None if self.batch_size == "auto" else int(self.batch_size)
        bounds = (AUTO_BATCH_MIN, AUTO_BATCH_MAX)
        return heavy_row_counts(rows, split_threshold(float(rows.mean()), top_eigenvalue, data.n, batch, bounds))

    def _frequency_order(self, X, ray: bool) -> bool:
        """The run keeps sparse features most entries first (problem.feature_order) where the
        coefficients outgrow a core's L2 cache (FREQUENCY_ORDER_COLUMNS float64 rows: 256 KiB): packing
        the popular rows, which every minibatch reads and writes, saves cache misses. Measured
        (benchmarks/results/feature_order.md), the whole fit with 1 / 2 workers: news20 to 1e-2
        1.10x / 1.13x, 30 epochs 1.19x / 1.20x; a 4*10^5 x 10^6 synthetic set, 3 epochs, 1.11x /
        1.04x (the workers' compute 1.26x / 1.55x, the setup ~1 s longer: the rows' sort). On the
        CPU, in shared memory (not Ray: its actors copy their columns at the start, untested with
        it). ASYNCOPT_FEATURE_ORDER=given|frequency forces it off or on (the benchmarks' A/B switch)."""
        switch = os.environ.get("ASYNCOPT_FEATURE_ORDER", "auto")
        if switch == "given" or not sp.issparse(X) or torch.device(self.device).type != "cpu":
            return False
        return switch == "frequency" or (not ray and X.shape[1] >= FREQUENCY_ORDER_COLUMNS)

    def _fit_linear(self, X, Y, loss_name, resume=False, validation=None, sample_weight=None):
        started = time.perf_counter()
        weights = sample_weights(sample_weight, X.shape[0])  # (mean 1; None when all are equal)
        # (hashing full MNIST takes ~0.2 s: only when checkpoints are written or read)
        fingerprint = data_fingerprint(X, Y, weights) if self.checkpoint_dir is not None else None
        state = self._load_resume(resume, fingerprint)
        seed = self._seed(state)
        loss = get_loss(loss_name)
        n, d = X.shape
        if self.penalty != "group_l1" and self.groups is not None:
            raise ValueError(f"groups= is used only with penalty='group_l1' (penalty={self.penalty!r})")
        codes = None
        if self.penalty == "group_l1":
            if self.groups is None:
                raise ValueError("penalty='group_l1' needs groups= (one group label per feature)")
            codes = feature_groups(self.groups, d)
        parallel = self.backend != "serial"
        ray = self.backend == "ray"
        workers = self.n_workers if parallel else 1
        M = min(d, workers if self.n_blocks == "auto" else self.n_blocks) if d else 1
        # the run's own feature order: popular features first on sparse data (cache lines), groups
        # contiguous (no block cuts a group); coef_ and validation scores are in the user's order
        order, order_kind, counts = None, "given", None
        if self._frequency_order(X, ray):
            counts = column_counts(X)  # (the rows' sort reuses them)
            order, order_kind = feature_order(counts, M, codes), "frequency"
        elif codes is not None:
            order, order_kind = np.argsort(codes, kind="stable"), "groups"
        group_of_row = None if codes is None else codes[order]
        dtype = torch.float64 if self.dtype == "float64" else torch.float32
        device = torch.device(self.device)
        scaling = self._column_scaling(X)  # (in the user's feature order; the run's below)
        self.column_scale_ = None if scaling is None else scaling[1].copy()
        if scaling is not None:
            shift, scale = scaling
            if sp.issparse(X):
                X = divided_columns(X, scale)
            else:
                X = X - shift if shift is not None else X.astype(np.float64)  # (a copy, then scaled in place)
                X /= scale
            scaling = (shift, scale if order is None else scale[order])
        # (processes: the workers' arrays copied into shared memory beside the setup)
        data = LinearData.from_array(
            X, Y, dtype=dtype, device=device, shared=self.backend == "processes", column_order=order, counts=counts,
            weights=weights,
        )  # fmt: skip
        bounds = block_bounds(d, M, group_of_row)
        penalty = make_penalty(
            self.penalty,
            float(self.alpha),
            float(self.l1_ratio),
            None if group_of_row is None else torch.as_tensor(group_of_row),
            None if self.bounds is None else tuple(self.bounds),
            self.positive,
        )
        if scaling is not None:
            penalty = dataclasses.replace(penalty, row_scale=torch.as_tensor(scaling[1], dtype=dtype))
        regularizer = NonconvexRegularizer(float(self.nonconvex_strength))
        problem = LinearProblem(data, loss, penalty, regularizer, self.fit_intercept, bounds).start_intercept()
        engine = make_engine(
            self.backend,
            self.n_workers,
            self.threads_per_worker,
            self.max_delay,
            self.delay,
            self.inconsistent_reads,
            self.synchronous,
            servers_in_workers=parallel and not self.synchronous,
            ray_address=self.ray_address,
            resources_per_worker=self.resources_per_worker,
            server_folder=self._server_folder() if self.backend == "ray" else None,
            task_samples=self.task_samples,
        )
        row_norms = data.row_sq_norms() if n else None
        # (serial products, on one core, while another thread builds X^T where it is: LinearData.from_array;
        # on a sample of the rows beyond stepsize.POWER_ITERATION_ROWS)
        smoothness = estimate_smoothness(data, self.fit_intercept, row_sq_norms=row_norms)
        counts = self._heavy_rows(data, row_norms, smoothness.top_eigenvalue)
        self.draws_per_epoch_ = n if counts is None else int(counts.sum())
        if counts is not None:  # heavy rows drawn more often (proxsgd/row_splits.py): beta is a draw's
            data.set_draws(epoch_draws(counts), counts)
            beta = largest_draw(data, row_norms, self.fit_intercept)
            smoothness = dataclasses.replace(smoothness, max_row_sq_norm=beta)
        N = int(min(auto_batch_size(smoothness) if self.batch_size == "auto" else self.batch_size, n))
        eta = base_step(smoothness, loss.curvature, N, regularizer.smoothness)
        if self.step_size != "auto":
            eta = float(self.step_size)
        # the delay the automatic step is coupled to: the simulated bound, or the other workers' updates in flight
        tau = (0 if self.synchronous else workers - 1) if parallel else self.max_delay
        # "auto": asynchronous workers take the step of each update's measured staleness (mostly 0-2
        # with 2 workers) rather than of the bound; the serial simulator keeps the bound it studies
        auto = parallel and not self.synchronous and workers > 1  # (one worker: staleness 0, the bound's step)
        adaptive = auto if self.delay_adaptive == "auto" else bool(self.delay_adaptive)

        svrg = self.variance_reduction in ("auto", "svrg")

        def make_algorithm(adaptive, push):
            return ProxSGDAlgorithm(
                problem,
                N,
                eta,
                push,
                float(tau),
                adaptive,
                variance_reduction=svrg,
                # with SVRG's vanishing noise the step can follow the curvature at the iterate
                local_steps=svrg and self.step_size == "auto",
                # the delay bound from the mean gradient's smoothness (stepsize.delay_unit)
                delay_smoothness=(
                    loss.curvature * smoothness.top_eigenvalue + regularizer.smoothness
                    if self.step_size == "auto"
                    else 0.0
                ),
                # just-in-time prox on sparse data, unless reads are simulated from past parameters or
                # synchronous rounds weight the step (the algorithm checks the rest)
                # (Ray: servers in their own actors, whose rows the workers pull: no lazy counts to share)
                # (ASYNCOPT_LAZY=off: eager updates where lazy ones would be chosen, for benchmarks' A/B runs)
                lazy="off" if self.synchronous or self.max_delay or self.inconsistent_reads or ray else _lazy_switch(),
            )

        push = self.push
        if push == "auto":  # the block push where its updates are lazy (wide sparse data), else the full push
            probe = make_algorithm(False, "block")
            # (Ray has no lazy updates; its servers sweep eagerly: the criterion lazy updates use)
            blockwise = probe.sweep_dominates if self.backend == "ray" else probe.lazy_active
            push = resolve_push(push, blockwise)
        algo = make_algorithm(adaptive, push)
        if self.delay_adaptive == "auto" and adaptive and not algo.lazy_active:
            # lazy updates need one constant step; where they pay (wide sparse data, small batches) they
            # beat eager sweeps at adaptive steps: the step of the bound (tau = workers - 1) then
            bound = make_algorithm(False, push)
            algo = bound if bound.lazy_active else algo
        algo.warm_start(smoothness)  # (the local step's first estimate)
        # the engines load what their workers run (the task loop, Ray's bundles, or the per-batch
        # kernels); the coordinator's own kernel is the lazy flush of the drained points
        algo.prepare(per_batch=False)
        self.n_blocks_, self.push_ = len(bounds) - 1, push
        self.batch_size_, self.step_size_ = N, eta
        self.smoothness_ = {"top_eigenvalue": smoothness.top_eigenvalue, "max_row_sq_norm": smoothness.max_row_sq_norm}
        anchor, evals = None, self.evals_per_epoch
        draws = data.n_draws  # (an epoch's: n, and more where heavy rows are drawn more often)
        if svrg:  # (the anchor moves at evaluation points: the grid holds its moves)
            interval = auto_anchor_epochs(draws) if self.anchor_epochs == "auto" else float(self.anchor_epochs)
            interval = max(interval, N / max(draws, 1))  # (at least a batch between moves)
            anchor, evals = anchor_schedule(self.evals_per_epoch, interval)
        self.anchor_epochs_ = anchor
        self._points_per_evaluation = evals / self.evals_per_epoch  # (the tol rule's unit: ProxSGDSettings)
        settings = ProxSGDSettings(
            epochs=float(self.max_epochs),
            evals_per_epoch=evals,
            snapshot_epochs=1.0 if anchor is None else anchor,
            points_per_evaluation=self._points_per_evaluation,
            schedule=self.schedule,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            time_limit=self.time_limit,
        )
        rng = np.random.default_rng(seed)
        derived = {"batch_size": N, "step_size": eta, "n_blocks": self.n_blocks_, "feature_order": order_kind,
                   "column_scaling": "none" if scaling is None else "standardized" if not sp.issparse(X)
                   else "large columns",
                   "row_splitting": f"{draws - n} extra draws" if draws > n else "none"}  # fmt: skip
        # (checkpoints written before the run had its own feature order kept the user's; before
        # column_scaling, the columns as given; before row_splitting, each row drawn once)
        missing = {"feature_order": "given", "column_scaling": "none", "row_splitting": "none"}
        self._check_derived(state, derived, missing=missing)
        checkpointing = self._checkpointing(seed, fingerprint, derived)
        validate = None if validation is None else self._validation_scorer(*validation, d, order, scaling)
        progress = self._progress(int(math.ceil(self.max_epochs * draws)), state.samples if state is not None else 0)
        try:
            with self._interruptible(checkpointing):
                params, history, telemetry = run_proxsgd(
                    algo, settings, rng, engine=engine, validate=validate, callback=self.callback, progress=progress,
                    started=started, resume=state, checkpointing=checkpointing,
                )  # fmt: skip
        finally:
            if progress is not None:
                progress.close()
        coef, intercept = _users_coefficients(params.cpu().numpy().astype(np.float64), d, scaling)
        self._coef, self._intercept = users_order(coef, order), intercept
        self.history_ = [entry.as_dict() for entry in history]
        self.telemetry_ = telemetry.as_dict()
        self.n_iter_ = history[-1].epoch if history else 0.0
        self.t_ = history[-1].steps if history else 0
        self._warn_if_short()
        return self

    def _warn_if_short(self) -> None:
        """ConvergenceWarning when the budget (max_epochs, or time_limit) ended the fit before the
        tol rule did (a callback's stop is the user's choice: no warning)."""
        if self.tol is None or not self.history_:
            return
        objectives = [h["objective"] for h in self.history_]
        if tolerance_met(objectives, self.tol, self.n_iter_no_change, self._points_per_evaluation):
            return
        out_of_epochs = self.n_iter_ >= self.max_epochs - 1e-9
        out_of_time = self.time_limit is not None and self.history_[-1]["seconds"] >= self.time_limit
        if not (out_of_epochs or out_of_time):
            return
        last = objectives[-2:]
        change = (  # (one evaluation: no change to report)
            f"the last changed it by {abs(last[0] - last[-1]) / max(abs(last[0]), 1e-12):.2g}, relative"
            if len(last) == 2
            else "only one evaluation was made"
        )
        budget = (
            f"time_limit={self.time_limit:g} s"
            if out_of_time and not out_of_epochs
            else f"max_epochs={self.max_epochs:g}"
        )
        hint = (
            ""
            if self.variance_reduction != "none"
            else ", or variance_reduction='svrg' (plain SGD stalls at its noise floor)"
        )
        warnings.warn(
            f"{type(self).__name__} stopped at {budget} before its tol={self.tol:g} rule was met "
            f"({self.n_iter_no_change} evaluations in a row improving F by less than tol; {change}). "
            f"Raise max_epochs (or time_limit){hint}",
            ConvergenceWarning,
            stacklevel=3,
        )

    def _decision(self, X):
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        with np.errstate(over="ignore", invalid="ignore"):
            scores = np.asarray(X @ self._coef) + self._intercept
        if not np.isfinite(scores).all():  # (finite inputs so large that x.w overflows: a wrong answer otherwise)
            row = int(np.argwhere(~np.isfinite(scores))[0][0])
            raise ValueError(
                f"the decision value of row {row} of X overflowed (X holds values up to "
                f"{float(abs(X).max()):.3g}): rescale X as the training data was"
            )
        return scores

    def save(self, path):
        """Write the fitted model to `path` (safetensors + JSON, no pickle); read it back with asyncopt.load."""
        from asyncopt.estimators.model_files import save_model

        check_is_fitted(self)
        return save_model(self, path)


class ProxSGDRegressor(RegressorMixin, _ProxSGDBase):
    """Linear regression with a (possibly nonsmooth) penalty, trained by AsyB-ProxSGD.

    Minimizes ``(1/n) sum_i loss(y_i, x_i.w + b) + r(w) + h(w)`` where h is the penalty (L1,
    squared L2, elastic net, group L1, box, or none, optionally with w >= 0) and r the optional
    smooth nonconvex regularizer ``nonconvex_strength * sum w^2 / (1 + w^2)``. The coefficients
    are split into ``n_blocks`` blocks, each owned by a parameter server that applies
    ``w_j <- prox(w_j - eta g_j)``; workers push the stochastic gradient of one random block.

    Parameters
    ----------
    loss : {"squared"}
        The smooth loss on the margin.
    penalty : {"l1", "l2", "elasticnet", "group_l1", "box", "none"} or None
        h(w): alpha ||w||_1, (alpha/2) ||w||^2, alpha (l1_ratio ||w||_1 + (1 - l1_ratio)/2 ||w||^2),
        alpha sum_g sqrt(|g|) ||w_g||_2, the indicator of ``bounds``, or nothing.
    alpha : float >= 0
        Regularization strength (per sample: C = 1 / (alpha n) in liblinear's terms).
    l1_ratio : float in [0, 1]
        Elastic-net mixing.
    groups : array-like of shape (n_features,), or list of lists of feature indices
        Groups for penalty="group_l1"; every feature must be in exactly one group.
    positive : bool
        Constrain the coefficients to be >= 0.
    bounds : (lower, upper)
        The box for penalty="box" (default (-1, 1)).
    nonconvex_strength : float >= 0
        r of the smooth nonconvex regularizer (0 disables it).
    n_blocks : int or "auto"
        Parameter-server blocks M; "auto" is one per worker (1 block, 1 worker = plain ProxSGD).
    push : {"auto", "block", "full"}
        "block": AsyB-ProxSGD (one block's gradient per update); "full": Asyn-ProxSGD (all blocks).
        "auto" (default): "block" on wide sparse data, where a block's eager sweep costs far more
        than a batch's entries (updates are lazy there in shared memory; 2*10^6 x 10^6 synthetic, 2
        workers: 1.78x one worker against 1.14x for the full push), else "full" (news20, 2 workers:
        1.46x one worker against 0.93x for the block push), on every backend. ``push_`` is the one used.
    backend : {"serial", "threads", "processes", "ray"}
        The engine (serial is deterministic and can simulate delays; "threads" runs as fast as
        "processes" on one machine, the compiled updates releasing the GIL, and spawns nothing,
        benchmarks/results/proxsgd_backends.md; "ray": parameter servers and workers as Ray actors, on one machine or
        a cluster, docs/cluster.md).
    n_workers, threads_per_worker : int
        Parallel workers (threads/processes/ray; backend="serial" refuses n_workers > 1, and more
        than 4 per core is warned about) and torch threads each.
    batch_size : int or "auto"
        Minibatch per update. "auto": the critical batch m* = beta / lambda_1 of the data (above it a
        larger batch no longer allows a proportionally larger step), at least 32 (below that the
        per-update overhead costs more than the extra progress per sample) and at most 4096. On a9a
        and news20 m* is about 2, so the floor applies.
    step_size : float or "auto"
        eta_0. "auto": 1 / L_N, L_N the minibatch smoothness estimated by power iteration. A delay tau
        (max_delay, or n_workers - 1) caps the step at eta_0 sin(pi / (2 (2 tau / M + 1))), the
        stability bound of delayed gradient steps (M = n_blocks for push="block", 1 for "full").
    column_scaling : {"auto", "none"}
        "auto": on dense data the run standardizes X's columns itself (minus their means when
        fit_intercept, over their spread): one step then suits every coefficient. On sparse data it
        keeps the zeros and most columns, and rescales only those far from the typical entry (a raw
        numeric column among one-hot or text columns: proxsgd/column_scales.py; ``column_scale_``). The
        problem is unchanged (the penalty stays on the user's coefficients; ``coef_`` and
        ``intercept_`` are in the user's units), unlike a scaler in front of the model. Group L1, a
        smooth regularizer and a given step_size keep the columns as given, as does "none".
        ``step_size_``, ``batch_size_``, ``smoothness_`` and history_'s ``grad_mapping_sq`` describe the
        run's (scaled) columns; history_'s ``objective`` is the user's F.
    row_splitting : {"auto", "none"}
        "auto": where a few rows (times their sample weights) are so long that they would set the
        step and leave the automatic batch with fewer than 64 updates an epoch, those rows are drawn
        several times an epoch, each draw weighted down to match (importance sampling:
        proxsgd/row_splits.py). The problem is unchanged. uci-elevators' lasso: batch 3,249 -> 251,
        3.0-5.7x faster to 1e-2 of the optimum. An epoch is then ``draws_per_epoch_`` draws (at most
        n / 8 more than n). "none": each row drawn once.
    schedule : {"plateau", "constant"}
        "plateau" halves the step when the objective has not reached a new best for two evaluations
        and at least one epoch (SGD noise dominates); "constant" keeps it.
    variance_reduction : {"auto", "none", "svrg"}
        "auto" (default) is "svrg". "svrg": each pushed gradient is corrected by an anchor (SVRG;
        asynchronous and block-wise as in Meng et al. 2017, "Asynchronous doubly stochastic proximal
        optimization with variance reduction"): grad_j f_I(x^) - grad_j f_I(x~) + grad_j f(x~), the
        anchor x~ moved every ``anchor_epochs`` (at an evaluation point, workers drained; one extra pass
        over the data, counted in the time).
        The noise then vanishes at the optimum, so a constant step converges. With step_size="auto",
        each anchor move also sets the step bound from the loss's curvature there
        (`stepsize.local_smoothness`: lambda_1 of A^T diag(l'') A / n by warm power iterations, and
        the largest l''_i ||a_i||^2), between eta_0 and 16 eta_0; logistic fits on a9a and news20 take
        steps 2-6x eta_0. "none": plain SGD with the plateau schedule.
    anchor_epochs : float or "auto"
        With SVRG: epochs between anchor moves (at least a batch), each at an evaluation point (an
        interval under an epoch is rounded to 1/k of one, and the evaluation points become a
        multiple of k). "auto": one per 2^16 samples, 1 to 4 an epoch: once an epoch on a9a and
        news20, 4 times on 2^18 rows or more, where F falls to the floor the anchor allows within
        part of an epoch (benchmarks/results/anchor_interval.md).
        Fitted: ``anchor_epochs_`` (None without SVRG).
    max_epochs : float
        Passes over the data at most.
    tol : float or None
        Stop after ``n_iter_no_change`` evaluations in a row improve the objective by less than
        tol (relative); None never stops early. Evaluations are the ``evals_per_epoch`` asked for:
        with k times as many points (the anchor's moves), a point is flat below tol / k and k times
        n_iter_no_change flat points stop.
    evals_per_epoch : int
        History entries (objective, gradient-mapping norm, non-zeros) per epoch, at least (SVRG's
        anchor moves add theirs: ``anchor_epochs``).
    max_delay, delay, inconsistent_reads : int, {"fixed", "random"}, bool
        Serial backend only (other backends refuse them): simulate reads ``max_delay`` updates stale
        (exactly, or uniformly 0..max_delay),
        optionally with each part of the parameters read at its own age.
    delay_adaptive : bool or "auto"
        Scale each update's step by the delay factor of its measured staleness instead of the bound.
        "auto": True for two or more asynchronous threads/processes workers (news20, 2 workers: half
        the suboptimality after 12 epochs of the bound's step), False for one worker (staleness is
        always 0) and for the serial simulator. Lazy
        updates need a constant step, so they are off when it is True; where they pay (wide sparse
        data, small batches: see ``_lazy_pays``) "auto" keeps the bound's step and lazy updates.
    synchronous : bool
        Threads/processes: the synchronous baseline (a barrier every round of n_workers updates).
    ray_address, resources_per_worker : str or None, dict or None
        backend="ray": the cluster to join (None: start or reuse a local Ray) and each worker
        actor's Ray resources (default ``{"num_cpus": threads_per_worker}``).
    task_samples : int, "auto" or None
        backend="ray": samples a worker takes per round trip of messages (one pull from each
        server, one push to each; None: one batch). A task's batches read its own earlier updates
        (the worker applies them to its copy); the other workers' updates it misses raise the
        staleness, and with it the delay-adaptive step's cut. Larger tasks carry more compute per
        message. "auto": 4,096 samples (one batch where the batch is larger), fewer where an
        evaluation segment is short, so that every worker gets two tasks of it. With 2 workers,
        whole fits reached 1e-2 2.2-3.2x sooner than with one batch a task on a9a, news20 and
        penbased (California: 1.06x, its batch of 306 already carries compute); but on penbased
        the staleness kept the fit from 1e-3 in 100 epochs, which one batch a task reached: set
        None for tight tolerances on small dense data (benchmarks/results/ray_task_size.md).
        Ignored by the other backends.
    fit_intercept : bool
        Fit an unpenalized intercept (it travels with every push).
    dtype, device : str
        Torch precision and device of the data and parameters.
    time_limit : float or None
        Stop after this many training seconds.
    random_state : int, RandomState or None
    verbose : int
        Progress bar when > 0.
    callback : callable or None
        Called with each history entry (attributes ``entry.objective``, or ``entry["objective"]`` as in
        ``history_``); returning True or raising StopIteration stops training.
    checkpoint_dir, checkpoint_every : as in `EigenProRegressor` (checkpoints hold the servers'
        step, the SVRG anchor, lazy rows caught up, the batch stream and the plateau windows).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    history_ : list of dict
        Per evaluation: epoch, samples, seconds, objective, grad_mapping_sq, nnz, step_size, steps,
        staleness_mean, staleness_max, val_metric (R^2 on (X_val, y_val) when given to fit, else None;
        accuracy for `ProxSGDClassifier`).
    telemetry_ : dict
        Staleness histogram and per-worker work of the run.
    n_blocks_, push_, batch_size_, step_size_, anchor_epochs_, smoothness_ : the values used.
    column_scale_ : ndarray of shape (n_features,) or None
        What the run divided X's columns by (column_scaling; 1 for a column kept as it is), None where
        it took them as given.
    draws_per_epoch_ : int
        Rows an epoch draws: n_samples, plus the extra draws of heavy rows (row_splitting).
    n_iter_ : float
        Epochs run. ``t_``: updates applied.

    Examples
    --------
    >>> import numpy as np
    >>> from asyncopt import ProxSGDRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 20))
    >>> y = X[:, 0] - 2 * X[:, 1] + 0.01 * rng.normal(size=500)
    >>> model = ProxSGDRegressor(penalty="l1", alpha=0.01, random_state=0).fit(X, y)
    >>> int(np.count_nonzero(np.abs(model.coef_) > 1e-3))
    2
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, resume=False, sample_weight=None):
        """Fit to (X, y); optional (X_val, y_val) is scored (R^2, as `EigenProRegressor` does) at every
        history entry (``val_metric``). ``resume=True`` continues from the latest checkpoint in
        ``checkpoint_dir`` (refused when it is of other data, weights or settings); ``"auto"`` does so
        when there is one. ``sample_weight`` (n_samples,): each sample's weight in the loss, F =
        sum_i w_i f_i / sum_i w_i + penalty (integer weights act as repeated samples)."""
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32], y_numeric=True)
        sample_weight = _checked_weights(sample_weight, X)
        largest = float(np.max(np.abs(y))) if len(y) else 0.0
        if largest > MAX_TARGET:  # (the loss at w = 0 squares y: inf, reported later as a divergence)
            raise ValueError(
                f"y holds values up to {largest:.3g}; beyond {MAX_TARGET:.0e} the loss overflows: rescale y"
            )
        self._check_engine_params()
        if self.loss != "squared":
            raise ValueError(f"ProxSGDRegressor supports loss='squared'; got loss={self.loss!r}")
        validation = self._validation_set(X_val, y_val, 1)
        Y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
        self._fit_linear(X, Y, "squared", resume, validation, sample_weight)
        self.coef_, self.intercept_ = self._coef[:, 0], self._intercept[:1]
        return self

    @staticmethod
    def _score_scores(scores, y):
        from sklearn.metrics import r2_score  # (sklearn.metrics on first use: ~50 ms of import)

        return float(r2_score(y, scores[:, 0]))

    def predict(self, X):
        return self._decision(X)[:, 0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class ProxSGDClassifier(ClassifierMixin, _ProxSGDBase):
    """Linear classifier with a (possibly nonsmooth) penalty, trained by AsyB-ProxSGD.

    Parameters are those of `ProxSGDRegressor`, except:

    loss : {"logistic", "smoothed_hinge", "squared", "sigmoid"}
        The margin loss (labels coded -1/+1); "sigmoid" is smooth and nonconvex.
    multi_class : {"ovr", "multinomial"}
        More than two classes: one-vs-rest columns, or softmax cross-entropy (loss="logistic" only).
    class_weight : dict, "balanced" or None
        Weights of the classes' samples in the loss (``{label: weight}``; "balanced": n_samples /
        (n_classes * count of the class), as scikit-learn computes them); they multiply ``sample_weight``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    history_, telemetry_, n_blocks_, batch_size_, step_size_, anchor_epochs_, smoothness_, column_scale_,
    draws_per_epoch_, n_iter_, t_ :
        as in `ProxSGDRegressor`.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.preprocessing import StandardScaler
    >>> from asyncopt import ProxSGDClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> clf = ProxSGDClassifier(penalty="l1", alpha=1e-3, random_state=0).fit(X, y)
    >>> float(clf.score(X, y)) > 0.95
    True
    """

    _parameter_constraints: dict = {
        **_ProxSGDBase._parameter_constraints,
        "multi_class": [StrOptions({"ovr", "multinomial"})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        loss="logistic",
        *,
        multi_class="ovr",
        class_weight=None,
        penalty="l2",
        alpha=1e-4,
        l1_ratio=0.15,
        groups=None,
        positive=False,
        bounds=None,
        nonconvex_strength=0.0,
        n_blocks="auto",
        push="auto",
        backend="serial",
        n_workers=1,
        threads_per_worker=None,
        batch_size="auto",
        step_size="auto",
        column_scaling="auto",
        row_splitting="auto",
        schedule="plateau",
        variance_reduction="auto",
        anchor_epochs="auto",
        max_epochs=100,
        tol=1e-4,
        n_iter_no_change=5,
        evals_per_epoch=1,
        max_delay=0,
        delay="fixed",
        inconsistent_reads=False,
        delay_adaptive="auto",
        synchronous=False,
        ray_address=None,
        resources_per_worker=None,
        task_samples="auto",
        fit_intercept=True,
        dtype="float64",
        device="cpu",
        time_limit=None,
        random_state=None,
        verbose=0,
        callback=None,
        checkpoint_dir=None,
        checkpoint_every=60.0,
    ):
        super().__init__(
            loss,
            penalty=penalty,
            alpha=alpha,
            l1_ratio=l1_ratio,
            groups=groups,
            positive=positive,
            bounds=bounds,
            nonconvex_strength=nonconvex_strength,
            n_blocks=n_blocks,
            push=push,
            backend=backend,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            batch_size=batch_size,
            step_size=step_size,
            column_scaling=column_scaling,
            row_splitting=row_splitting,
            schedule=schedule,
            variance_reduction=variance_reduction,
            anchor_epochs=anchor_epochs,
            max_epochs=max_epochs,
            tol=tol,
            n_iter_no_change=n_iter_no_change,
            evals_per_epoch=evals_per_epoch,
            max_delay=max_delay,
            delay=delay,
            inconsistent_reads=inconsistent_reads,
            delay_adaptive=delay_adaptive,
            synchronous=synchronous,
            ray_address=ray_address,
            resources_per_worker=resources_per_worker,
            task_samples=task_samples,
            fit_intercept=fit_intercept,
            dtype=dtype,
            device=device,
            time_limit=time_limit,
            random_state=random_state,
            verbose=verbose,
            callback=callback,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
        )
        self.multi_class = multi_class
        self.class_weight = class_weight

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, resume=False, sample_weight=None):
        """Fit to (X, y); optional (X_val, y_val) is scored (accuracy) at every history entry
        (``val_metric``); ``resume`` and ``sample_weight``: as in `ProxSGDRegressor.fit` (the weights
        multiply those of ``class_weight``)."""
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32])
        sample_weight = _checked_weights(sample_weight, X)
        self._check_engine_params()
        check_classification_targets(y)
        if self.class_weight is not None:
            from sklearn.utils.class_weight import compute_sample_weight

            by_class = compute_sample_weight(self.class_weight, y)
            sample_weight = by_class if sample_weight is None else sample_weight * by_class
            if not np.any(sample_weight > 0):
                raise ValueError("class_weight gives every sample weight 0: nothing is left to fit")
        self.classes_ = np.unique(y)
        codes = np.searchsorted(self.classes_, y)  # (unique's inverse, 3x faster on 2*10^6 labels)
        K = len(self.classes_)
        if K < 2:
            raise ValueError(
                f"ProxSGDClassifier needs samples of at least two classes; y has only one class ({self.classes_[0]!r})"
            )
        if self.loss not in ("logistic", "smoothed_hinge", "squared", "sigmoid"):
            raise ValueError(
                f"loss={self.loss!r} is not a classification loss: use 'logistic', 'smoothed_hinge', 'squared' "
                "or 'sigmoid'"
            )
        if K > 2 and self.multi_class == "multinomial":
            if self.loss != "logistic":
                raise ValueError(f"multi_class='multinomial' needs loss='logistic'; got loss={self.loss!r}")
            Y, loss = np.eye(K)[codes], "multinomial"
        elif K == 2:
            Y, loss = np.where(codes == 1, 1.0, -1.0).reshape(-1, 1), self.loss
        else:
            Y, loss = np.where(np.eye(K)[codes] == 1, 1.0, -1.0), self.loss
        validation = self._validation_set(X_val, y_val, Y.shape[1])
        self._fit_linear(X, Y, loss, resume, validation, sample_weight)
        self.coef_, self.intercept_ = self._coef.T.copy(), self._intercept.copy()
        return self

    @staticmethod
    def _score_scores(scores, codes):
        """Accuracy against y_val's class indices (-1, a label not in classes_, is never right)."""
        predicted = (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(1)
        return float(np.mean(predicted == codes))

    def decision_function(self, X):
        scores = self._decision(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[scores.argmax(1)]

    def predict_proba(self, X):
        """Class probabilities (loss="logistic" only): sigmoid, softmax (multinomial) or normalized OvR."""
        if self.loss != "logistic":
            raise AttributeError(f"predict_proba needs loss='logistic' (loss={self.loss!r})")
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-scores))
            return np.column_stack([1 - p, p])
        if self.multi_class == "multinomial":
            return softmax(scores)
        p = 1.0 / (1.0 + np.exp(-scores))
        return p / p.sum(1, keepdims=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
