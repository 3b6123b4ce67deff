"""scikit-learn estimators for EigenPro kernel interpolation."""

from __future__ import annotations

import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from asyncopt.eigenpro.preconditioner import (
    DEFAULT_TARGET_BATCH,
    EXACT_EIGH_MAX,
    Preconditioner,
    auto_subsample_size,
    column_major,
    nystrom_preconditioner,
    step_size,
)
from asyncopt.eigenpro.step import KernelProblem
from asyncopt.engines import make_engine
from asyncopt.estimators.base import AsyncEstimator, data_fingerprint
from asyncopt.kernels.blocks import KernelData, MemoryBudgetError, kernel_product
from asyncopt.kernels.functions import RADIAL_PROFILES, make_kernel
from asyncopt.options import ComputeOptions
from asyncopt.training.eigenpro import EigenProSettings, run_eigenpro

QUERY_ROWS = 4096
# The automatic batch is m*/4: with the stability step rule a sample then moves the weights
# 1.6x as far as at m = m*, while the batch stays large enough for full matmul speed
# (benchmarks/README.md has the measurements behind this choice).
AUTO_BATCH_FRACTION = 0.25  # predict() evaluates queries in row blocks of this size


def median_distance(X: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> float:
    """Median Euclidean distance between distinct points of a random subsample (the 'auto' bandwidth)."""
    idx = rng.choice(len(X), size=min(len(X), sample), replace=False)
    Z = torch.as_tensor(X[idx], dtype=torch.float64)
    d = torch.cdist(Z, Z)
    d = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]
    d = d[d > 0]
    return float(d.median()) if len(d) else 1.0


def _preconditioner_dict(p: Preconditioner) -> dict:
    return {
        "indices": p.indices.cpu(),
        "V": p.V.cpu(),
        "D": p.D.cpu(),
        "eigenvalues": p.eigenvalues,
        "beta": p.beta,
        "n_components": p.n_components,
        "top_eigenvalue": p.top_eigenvalue,
    }


def _preconditioner_from(saved: dict, options: ComputeOptions) -> Preconditioner:
    to = lambda t: torch.as_tensor(t).to(options.device)  # noqa: E731
    return Preconditioner(
        indices=to(saved["indices"]),
        V=column_major(to(saved["V"]).to(options.dtype)),
        D=to(saved["D"]).to(options.dtype),
        eigenvalues=np.asarray(saved["eigenvalues"], dtype=np.float64),
        beta=float(saved["beta"]),
        n_components=int(saved["n_components"]),
        top_eigenvalue=float(saved["top_eigenvalue"]),
    )


class _EigenProBase(AsyncEstimator):
    # threads / processes: workers apply their own updates (True) or send them to the coordinator,
    # which applies and publishes them (False: the engine before session 7, kept for
    # benchmarks/bench_workers.py to compare side by side; not a parameter)
    _workers_apply = True

    _parameter_constraints: dict = {
        **AsyncEstimator._shared_constraints,
        "kernel": [StrOptions(set(RADIAL_PROFILES)), callable],
        "bandwidth": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "epochs": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "subsample_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "step_size": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto", "eigenpro2"})],
        "memory_gb": [Interval(Real, 0, None, closed="neither")],
        "evals_per_epoch": [Interval(Integral, 1, None, closed="left")],
        "devices": [list, tuple, None],
        "n_servers": [Interval(Integral, 1, None, closed="left")],
        "val_target": [Real, None],
    }

    def __init__(
        self,
        kernel="laplacian",
        *,
        bandwidth="auto",
        epochs=10,
        batch_size="auto",
        subsample_size="auto",
        n_components="auto",
        step_size="auto",
        device="cpu",
        dtype="float32",
        memory_gb=4.0,
        evals_per_epoch=1,
        time_limit=None,
        random_state=None,
        verbose=0,
        callback=None,
        backend="serial",
        n_workers=1,
        threads_per_worker=None,
        max_delay=0,
        delay="fixed",
        inconsistent_reads=False,
        synchronous=False,
        devices=None,
        n_servers=1,
        ray_address=None,
        resources_per_worker=None,
        val_target=None,
        checkpoint_dir=None,
        checkpoint_every=60.0,
    ):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.epochs = epochs
        self.batch_size = batch_size
        self.subsample_size = subsample_size
        self.n_components = n_components
        self.step_size = step_size
        self.device = device
        self.dtype = dtype
        self.memory_gb = memory_gb
        self.evals_per_epoch = evals_per_epoch
        self.time_limit = time_limit
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.backend = backend
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.max_delay = max_delay
        self.delay = delay
        self.inconsistent_reads = inconsistent_reads
        self.synchronous = synchronous
        self.devices = devices
        self.n_servers = n_servers
        self.ray_address = ray_address
        self.resources_per_worker = resources_per_worker
        self.val_target = val_target
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every

    # -- fitting -----------------------------------------------------------------------
    def _validate_X(self, X, reset):
        """Queries (X_val, predict's X) as validated; sparse ones stay sparse, densified a row block at a time."""
        X = validate_data(self, X, reset=reset, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32])
        self._check_scale(X, "X")
        return X.tocsr() if sp.issparse(X) else X

    def _check_scale(self, X, name: str) -> None:
        """Values the kernels can square and sum in the compute dtype: beyond sqrt(max / d) the squared
        distances overflow to inf, and every kernel value becomes 0 or NaN (a wrong answer, not an error)."""
        values = X.data if sp.issparse(X) else X
        if values.size == 0:
            return
        largest = float(np.max(np.abs(values)))
        limit = math.sqrt(np.finfo(np.float32 if self.dtype == "float32" else np.float64).max / max(1, X.shape[1]))
        if largest > limit:
            raise ValueError(
                f"{name} holds values up to {largest:.3g}; with {X.shape[1]} features in {self.dtype} the kernel's "
                f"squared distances overflow beyond {limit:.3g}: rescale {name} (e.g. StandardScaler)"
                + (" or use dtype='float64'" if self.dtype == "float32" else "")
            )

    def _densify(self, X, name="X"):
        """Sparse training data as a dense array (the kernels need dense rows), once its size is known to
        fit memory_gb (densifying first, then checking, overran the budget several times over)."""
        if not sp.issparse(X):
            return X
        n, d = X.shape
        try:  # on the CPU the dense copy is in the budget's memory; on another device, the copy moved there
            on_cpu = torch.device(self.device).type == "cpu"
        except (RuntimeError, TypeError):
            on_cpu = True  # (an invalid device is reported by the setup)
        itemsize = X.dtype.itemsize if on_cpu else (8 if self.dtype == "float64" else 4)
        need, budget = n * d * itemsize, self.memory_gb * 2**30
        if need > budget:
            raise MemoryBudgetError(
                f"memory budget too small: the dense copy of the sparse {name} ({n} x {d}, {X.dtype}) needs "
                f"{need / 2**30:.3f} GiB but memory_gb={self.memory_gb} (EigenPro's kernels need dense rows); "
                f"raise memory_gb, or reduce the features or samples of {name}"
            )
        return X.toarray()

    def _fit_targets(self, X, Y, validation, resume=False):
        started = time.perf_counter()
        options = ComputeOptions.from_params(self.device, self.dtype, self.memory_gb)
        # (hashing full MNIST takes ~0.2 s: only when checkpoints are written or read)
        fingerprint = data_fingerprint(X, Y) if self.checkpoint_dir is not None else None
        state = self._load_resume(resume, fingerprint)
        seed = self._seed(state)
        rng = np.random.default_rng(seed)
        n = X.shape[0]
        itemsize = options.itemsize
        persistent = (X.shape[1] + 2 * Y.shape[1]) * n * itemsize
        if persistent > options.memory_bytes:
            raise MemoryBudgetError(
                f"memory budget too small: the training data, targets and weights need "
                f"{persistent / 2**30:.3f} GiB on {options.device} but memory_gb={self.memory_gb}"
            )
        if state is not None:  # the setup of the run being resumed (no second eigensolve)
            self.bandwidth_ = float(state.setup["bandwidth"])
        else:
            self.bandwidth_ = median_distance(X, rng) if self.bandwidth == "auto" else float(self.bandwidth)
        kernel = make_kernel(self.kernel, self.bandwidth_)
        data = KernelData.from_array(X, kernel, options)
        problem = KernelProblem(data, torch.as_tensor(Y).to(options.device, options.dtype))
        s = auto_subsample_size(n) if self.subsample_size == "auto" else min(self.subsample_size, n)
        # the float64 block and its float32 original at once; eigh's workspace doubles it (exact path)
        eigen_bytes = (3 if s <= EXACT_EIGH_MAX else 1.5) * s * s * 8
        if persistent + eigen_bytes > options.memory_bytes:
            raise MemoryBudgetError(
                f"memory budget too small: the float64 eigensolve of the {s} x {s} Nystrom block needs "
                f"{eigen_bytes / 2**30:.3f} GiB beyond the data's {persistent / 2**30:.3f} GiB; raise "
                f"memory_gb (now {self.memory_gb}) or lower subsample_size"
            )
        target = DEFAULT_TARGET_BATCH if self.batch_size == "auto" else self.batch_size
        if state is not None:
            precond = _preconditioner_from(state.setup["preconditioner"], options)
        else:
            precond = nystrom_preconditioner(data, s, self.n_components, target, rng)
        m_star = precond.critical_batch_size
        parallel = self.backend != "serial"
        if self.devices is not None and self.backend != "threads":
            raise ValueError(f"devices={self.devices!r} needs backend='threads' (one worker thread per device)")
        workers = (len(self.devices) if self.devices is not None else self.n_workers) if parallel else 1
        # in-flight rule (docs/algorithms.md 1.3): updates in flight times batch stays near the
        # single-worker batch, so each of P asynchronous workers (or each step of a tau-delayed
        # read) takes a P-th (a (tau+1)-th) of it; synchronous rounds split one batch P ways.
        in_flight = workers if parallel else self.max_delay + 1
        if self.batch_size != "auto":
            m = int(min(self.batch_size, n))
        else:
            full = m_star if self.step_size == "eigenpro2" else m_star * AUTO_BATCH_FRACTION
            m = int(min(max(1, round(full / in_flight)), n))
        # The step is that of the logical batch L = m * (updates in flight): each worker's step
        # is its m/L share of it, so P workers (or tau delayed reads) move the weights per sample
        # as one worker with batch L does, instead of P times as far (which diverged).
        logical = m * in_flight
        if isinstance(self.step_size, str):
            rule = "eigenpro2" if self.step_size == "eigenpro2" else "stability"
            eta = step_size(logical, precond.beta, precond.top_eigenvalue, rule)
            if not (parallel and self.synchronous):  # a synchronous round applies the whole L at once
                eta *= m / logical
        else:
            eta = float(self.step_size)
        self.subsample_size_, self.n_components_ = s, precond.n_components
        self.batch_size_, self.step_size_, self.critical_batch_size_ = m, eta, m_star
        self.setup_seconds_ = time.perf_counter() - started
        budget = options.memory_bytes - persistent - precond.V.numel() * itemsize
        validate = None
        if validation is not None:
            validate = self._validation_scorer(data, *validation, budget)
        settings = EigenProSettings(
            batch_size=m,
            eta=eta,
            epochs=float(self.epochs),
            evals_per_epoch=self.evals_per_epoch,
            time_limit=self.time_limit,
            n_servers=self.n_servers,
        )
        derived = {"batch_size": m, "step_size": eta, "subsample_size": s, "n_components": precond.n_components}
        self._check_derived(state, derived)
        checkpointing = self._checkpointing(
            seed, fingerprint, derived, {"bandwidth": self.bandwidth_, "preconditioner": _preconditioner_dict(precond)}
        )
        progress = self._progress(int(math.ceil(self.epochs * n)), state.samples if state is not None else 0)
        engine = make_engine(
            self.backend,
            self.n_workers,
            self.threads_per_worker,
            self.max_delay,
            self.delay,
            self.inconsistent_reads,
            self.synchronous,
            self.devices,
            # asynchronous workers on one store apply their own updates and read whole versions
            # without a lock (engines/snapshots.py); synchronous rounds and device replicas go
            # through the coordinator
            servers_in_workers=self._workers_apply
            and self.backend in ("threads", "processes")
            and not self.synchronous
            and not self.devices,
            ray_address=self.ray_address,
            resources_per_worker=self.resources_per_worker,
            server_folder=self._server_folder() if self.backend == "ray" else None,
        )
        try:
            with self._interruptible(checkpointing):
                alpha, history, telemetry = run_eigenpro(
                    problem,
                    precond,
                    settings,
                    rng,
                    budget_bytes=budget,
                    engine=engine,
                    validate=validate,
                    callback=self._stopping_rule(),
                    progress=progress,
                    started=started,
                    resume=state,
                    checkpointing=checkpointing,
                )
        finally:
            if progress is not None:
                progress.close()
        self._data = data
        self.weights_ = alpha.cpu().numpy()
        self.history_ = [entry.as_dict() for entry in history]
        self.telemetry_ = telemetry.as_dict()
        self.n_iter_ = history[-1].epoch if history else 0.0  # epochs, as in scikit-learn's SGD and ProxSGD
        self.t_ = history[-1].steps if history else 0  # updates applied
        self._budget = budget
        if self.val_target is not None and history and self.n_iter_ >= self.epochs - 1e-9:
            best = max((h.val_metric for h in history if h.val_metric is not None), default=float("nan"))
            if not best >= self.val_target:  # (the budget ended the fit, not the target)
                warnings.warn(
                    f"{type(self).__name__} stopped at epochs={self.epochs:g} before the validation metric reached "
                    f"val_target={self.val_target:g} (best {best:.4g}): raise epochs, or lower val_target",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        return self

    def _stopping_rule(self):
        """The user's callback, plus the validation target when one is set."""
        if self.val_target is None:
            return self.callback

        def stop(entry):
            if entry.val_metric is not None and entry.val_metric >= self.val_target:
                return True
            return self.callback(entry) if self.callback is not None else False

        return stop

    def _validation_scorer(self, data, X_val, y_val, budget):
        def score(alpha):
            return self._score_decision(self._decision(data, alpha, X_val, budget), y_val)

        return score

    @staticmethod
    def _decision(data, alpha, X, budget):
        blocks = []
        for start in range(0, X.shape[0], QUERY_ROWS):
            block = X[start : start + QUERY_ROWS]
            block = block.toarray() if sp.issparse(block) else block
            if len(block) < QUERY_ROWS:
                block = np.concatenate([block, np.zeros((QUERY_ROWS - len(block), X.shape[1]), X.dtype)])
            out, _ = kernel_product(data, alpha, queries=block, budget_bytes=budget)
            blocks.append(out[: min(QUERY_ROWS, X.shape[0] - start)])
        if not blocks:
            return torch.zeros(0, alpha.shape[1], dtype=alpha.dtype)
        return torch.cat(blocks)

    def _predict_raw(self, X):
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        alpha = torch.as_tensor(self.weights_, device=self._data.options.device)
        return self._decision(self._data, alpha, X, self._budget).cpu().numpy().astype(np.float64)

    def __getstate__(self):
        # the prepared training data holds tensors; pickle them as numpy-backed tensors on CPU
        state = self.__dict__.copy()
        if "_data" in state:
            data = state["_data"]
            state["_data_cpu"] = (
                data.X.cpu(),
                data.sqnorm.cpu() if data.sqnorm is not None else None,
                data.kept_columns,
                data.dropped_values,
            )
            state["_data_meta"] = (data.kernel, data.options)
            del state["_data"]
        return state

    def __setstate__(self, state):
        if "_data_cpu" in state:
            X, sq, kept, dropped = state.pop("_data_cpu")
            kernel, options = state.pop("_data_meta")
            state["_data"] = KernelData(kernel, X, sq, kept, dropped, options)
        self.__dict__.update(state)

    def save(self, path):
        """Write the fitted model to `path` (safetensors + JSON, no pickle); read it back with asyncopt.load."""
        from asyncopt.estimators.model_files import save_model

        check_is_fitted(self)
        return save_model(self, path)


class EigenProRegressor(RegressorMixin, _EigenProBase):
    """Kernel interpolation (ridgeless regression) trained by EigenPro 2.

    Finds weights ``alpha`` with ``K(X, X) alpha = y`` by preconditioned stochastic gradient
    descent; ``predict(x) = K(x, X) alpha``. Multi-output targets are supported.

    Parameters
    ----------
    kernel : {"laplacian", "gaussian", "rbf", "matern12", "matern32", "matern52"} or callable
        Kernel name, or ``f(A, B, bandwidth) -> (len(A), len(B))`` torch tensor or array.
    bandwidth : float or "auto"
        Kernel bandwidth h; "auto" is the median distance between training points.
    epochs : float
        Passes over the training data (fractions allowed).
    batch_size, subsample_size, n_components : int or "auto"
        EigenPro's m, s and q. "auto": s and q as in docs/algorithms.md section 1.2; m = m*/4
        (m = m* with step_size="eigenpro2").
    step_size : float, "auto" or "eigenpro2"
        eta. "auto": 0.99 * 2m / (beta + (m-1) lam1p), the stability bound of the preconditioned
        iteration; "eigenpro2": the public implementation's rule (m / beta below m*). With P
        asynchronous workers (or max_delay tau) the rule is applied to the logical batch
        L = m * P (m * (tau + 1)) and each step takes its m / L share; a number is used as given.
    device : str or torch.device
        Torch device for all kernel arithmetic ("cpu", "cuda", "cuda:1", ...).
    dtype : {"float32", "float64"}
        Precision of kernel evaluation and weights (the eigensolve is always float64).
    memory_gb : float
        Budget in GiB for everything the solver allocates on ``device``.
    evals_per_epoch : int
        History entries (and callback calls) per epoch.
    time_limit : float or None
        Stop after this many training seconds.
    random_state : int, RandomState or None
        Seeds the Nystrom subsample, the batch order and the 'auto' bandwidth sample.
    verbose : int
        Show a progress bar when > 0.
    callback : callable or None
        Called with each `HistoryEntry` (attributes ``entry.train_mse``, or ``entry["train_mse"]`` as in
        ``history_``); returning True or raising StopIteration stops training.
    backend : {"serial", "threads", "processes", "ray"}
        The engine: "serial" is deterministic (and can simulate delays), "threads" runs workers
        on one shared weight tensor, "processes" runs spawned workers over shared memory, "ray"
        runs the weight servers and workers as Ray actors, on one machine or a cluster
        (docs/cluster.md).
    ray_address, resources_per_worker, n_servers : str or None, dict or None, int
        backend="ray": the cluster to join (None: start or reuse a local Ray), each worker actor's
        Ray resources (default ``{"num_cpus": threads_per_worker}``), and the weight servers (row
        shards; a worker re-pulls a shard that has not yet applied a push another shard has, so its
        reads hold whole updates, docs/design.md).
    n_workers : int
        Parallel workers (threads, processes and ray backends; backend="serial" refuses n_workers > 1).
        More than 4 per core is warned about.
    threads_per_worker : int or None
        Torch threads per worker; None divides the machine's cores among the workers.
    max_delay, delay, inconsistent_reads : int, {"fixed", "random"}, bool or "torn"
        Serial backend only (other backends refuse them): read the weights ``max_delay`` updates late
        (exactly, or uniformly 0..max_delay), optionally each block of rows at its own age. With
        ``inconsistent_reads=True`` the read then follows the real engines' rule (every update is
        read whole or not at all: the version of the read's oldest block); ``"torn"`` reads each
        block as it was, parts of updates included (without the rule: it diverges).
    synchronous : bool
        Threads/processes: the data-parallel baseline, a barrier every step (round of n_workers batches).
    val_target : float or None
        Stop once the validation metric (given X_val, y_val) reaches this value.
    devices : list of str or torch.device, or None
        Threads backend: one worker per device, each keeping a replica of the weights and data
        there and receiving the sparse updates of the others (e.g. ["cuda:0", "cuda:1"]).
    checkpoint_dir : str, Path or None
        Folder for checkpoints (safetensors + JSON, written atomically; the newest two are kept):
        every ``checkpoint_every``, at the end of the fit, and when SIGINT / SIGTERM stops it
        (the workers are drained and stopped first). ``fit(..., resume=True)`` continues from it.
    checkpoint_every : float, str or None
        Seconds between checkpoints (training time), or a string "N samples"; None: only at the
        end and on a signal.

    Attributes
    ----------
    weights_ : ndarray of shape (n_samples, n_outputs)
    history_ : list of dict
        Per evaluation point: epoch, samples, seconds, train_mse, val_metric (R^2), steps.
    bandwidth_, batch_size_, step_size_, subsample_size_, n_components_, critical_batch_size_
        The values used, automatic or given.
    setup_seconds_ : float
        Seconds spent before the first step (data transfer, eigensolve).
    n_iter_ : float
        Epochs completed (the same meaning as in the ProxSGD estimators and scikit-learn's SGD).
    t_ : int
        Updates applied.
    telemetry_ : dict
        Staleness histogram of all updates and per-worker steps, samples, compute and wait seconds.

    Examples
    --------
    >>> import numpy as np
    >>> from asyncopt import EigenProRegressor
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> y = np.sin(X[:, 0])
    >>> model = EigenProRegressor(bandwidth=2.0, epochs=20, random_state=0).fit(X, y)
    >>> float(np.abs(model.predict(X) - y).max()) < 0.05
    True

    References
    ----------
    S. Ma, M. Belkin. Kernel machines that adapt to GPUs for effective large batch training.
    SysML 2019.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, resume=False):
        """Fit to (X, y); optional (X_val, y_val) is scored (R^2) at every history entry.

        ``resume=True`` continues from the latest checkpoint in ``checkpoint_dir`` (refused when it
        is of other data or settings); ``"auto"`` does so when there is one, else starts afresh."""
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=("csr", "csc"),
            dtype=[np.float64, np.float32],
            multi_output=True,
            y_numeric=True,
        )
        self._check_scale(X, "X")
        limit = math.sqrt(np.finfo(np.float32 if self.dtype == "float32" else np.float64).max)
        if y.size and float(np.max(np.abs(y))) > limit:  # (residuals and their products overflow beyond)
            raise ValueError(
                f"y holds values up to {float(np.max(np.abs(y))):.3g}, beyond {limit:.3g} where {self.dtype} "
                "residuals overflow: rescale y (e.g. divide by its standard deviation)"
            )
        self._check_engine_params()
        self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if self._y_1d else y
        validation = self._validation_set(X_val, y_val, Y.shape[1], self._y_1d)
        X = self._densify(X)
        return self._fit_targets(X, np.asarray(Y, dtype=np.float64), validation, resume)

    def _score_decision(self, decision, y):
        from sklearn.metrics import r2_score  # (sklearn.metrics on first use: ~50 ms of import)

        pred = decision.cpu().numpy()
        return float(r2_score(y, pred[:, 0] if self._y_1d else pred))

    def predict(self, X):
        """K(X, X_train) @ weights_."""
        out = self._predict_raw(X)
        return out[:, 0] if self._y_1d else out


class EigenProClassifier(ClassifierMixin, _EigenProBase):
    """Kernel interpolation classifier: EigenPro on one-hot targets, prediction by argmax.

    Parameters are those of `EigenProRegressor`; the validation metric is accuracy.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    weights_ : ndarray of shape (n_samples, n_classes)
    history_, bandwidth_, batch_size_, step_size_, subsample_size_, n_components_,
    critical_batch_size_, setup_seconds_ : as in `EigenProRegressor`.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from asyncopt import EigenProClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = EigenProClassifier(epochs=5, random_state=0).fit(X[:1000] / 16, y[:1000])
    >>> float(clf.score(X[1000:] / 16, y[1000:])) > 0.95
    True
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, X_val=None, y_val=None, resume=False):
        """Fit to (X, y); optional (X_val, y_val) is scored (accuracy) at every history entry.
        ``resume``: as in `EigenProRegressor.fit`."""
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32])
        self._check_scale(X, "X")
        self._check_engine_params()
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"EigenProClassifier needs samples of at least 2 classes in the data; y has only one class "
                f"({self.classes_.tolist()[0]!r})"
            )
        Y = np.eye(len(self.classes_))[codes]
        validation = self._validation_set(X_val, y_val, Y.shape[1])
        X = self._densify(X)
        return self._fit_targets(X, Y, validation, resume)

    def _score_decision(self, decision, codes):
        """Accuracy against y_val's class indices (-1, a label not in classes_, is never right)."""
        return float(np.mean(decision.argmax(1).cpu().numpy() == codes))

    def decision_function(self, X):
        """Kernel scores: one column per class, or for two classes one score (> 0 means classes_[1])."""
        scores = self._predict_raw(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[self._predict_raw(X).argmax(1)]
