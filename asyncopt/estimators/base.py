"""What the four estimators share: seeds, progress display, checkpoints and resuming, signals."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import sys
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _num_samples

from asyncopt.engines.base import TrainingInterrupted, UnguardedMainScript, exit_if_reimporting_main
from asyncopt.persistence import latest_checkpoint
from asyncopt.training import Checkpointing, StopSignals, TrainingState
from asyncopt.training.checkpoints import parse_every

# parameters a resumed fit may change: how long and how it runs, not what it computes
OVERSUBSCRIBED = 4  # threads / processes workers per core above which n_workers draws a warning

RESUME_FREE = frozenset(
    {
        "epochs",
        "max_epochs",
        "time_limit",
        "verbose",
        "callback",
        "checkpoint_dir",
        "checkpoint_every",
        "threads_per_worker",
        "tol",
        "n_iter_no_change",
        "val_target",
        "backend",
        "devices",
        "ray_address",
        "resources_per_worker",
        "task_samples",
    }
)


def data_fingerprint(X, Y, weights=None) -> dict:
    """Shape and a BLAKE2b digest of the training data, targets and sample weights (a resumed fit must
    see the same; without weights the digest is that of data and targets alone, as before weights)."""
    h = hashlib.blake2b(digest_size=16)
    if sp.issparse(X):
        X = X.tocsr()
        for a in (X.indptr, X.indices, X.data):
            h.update(np.ascontiguousarray(a).tobytes())
    else:
        h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(Y).tobytes())
    if weights is not None:
        h.update(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    return {"shape": [int(s) for s in X.shape], "dtype": str(X.dtype), "digest": h.hexdigest()}


def _json_param(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_param(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    if callable(value):
        return f"callable {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


class AsyncEstimator(BaseEstimator):
    """Base of the four estimators (each declares its own parameters, as scikit-learn requires)."""

    _shared_constraints: dict = {
        "backend": [StrOptions({"serial", "threads", "processes", "ray"})],
        "ray_address": [str, None],
        "resources_per_worker": [dict, None],
        "n_workers": [Interval(Integral, 1, None, closed="left")],
        "threads_per_worker": [Interval(Integral, 1, None, closed="left"), None],
        "max_delay": [Interval(Integral, 0, None, closed="left")],
        "delay": [StrOptions({"fixed", "random"})],
        "inconsistent_reads": ["boolean", StrOptions({"torn"})],
        "synchronous": ["boolean"],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "time_limit": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callback": [callable, None],
        "checkpoint_dir": [str, Path, None],
        "checkpoint_every": [Interval(Real, 0, None, closed="neither"), str, None],
    }

    # -- seeds and progress --------------------------------------------------------------
    def _seed(self, resume: TrainingState | None) -> int:
        """The run's seed: the checkpoint's when resuming (so setup draws the same), else from random_state."""
        if resume is not None:
            return int(resume.setup["seed"])
        rs = self.random_state
        if rs is None:
            return int(np.random.SeedSequence().entropy % 2**32)  # (a valid random_state for a rerun)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31))
        return int(rs)

    def _progress(self, total: int, done: int = 0):
        if not self.verbose:
            return None
        from asyncopt.estimators.progress import progress_bar

        return progress_bar(total, done, type(self).__name__)

    # -- parameters the backend uses or ignores --------------------------------------------
    def _check_engine_params(self) -> None:
        """Refuse settings the chosen backend would silently ignore (before any work is done).

        n_workers is for threads / processes / ray; max_delay, inconsistent_reads (and delay)
        simulate stale reads in the serial engine only; synchronous rounds need real workers.
        Far more workers than cores is allowed (a choice), but warned about. With backend="processes"
        the worker processes are then spawned (engines/pool.py), to import while the setup runs."""
        backend = self.backend
        if backend == "processes":
            exit_if_reimporting_main()  # a spawned worker importing an unguarded script: leave quietly
        if backend == "serial":
            if self.n_workers != 1:
                raise ValueError(
                    f"n_workers={self.n_workers} is used by backend='threads', 'processes' or 'ray'; "
                    "backend='serial' runs one worker: set backend='threads' (or 'processes', 'ray') for "
                    "parallel workers, or leave n_workers=1 (max_delay= simulates stale reads serially)"
                )
            if self.synchronous:
                raise ValueError(
                    "synchronous=True is the data-parallel baseline of backend='threads' or 'processes' "
                    "(a round of n_workers batches); backend='serial' would ignore it"
                )
            return
        simulated = [
            f"{name}={getattr(self, name)!r}"
            for name, default in (("max_delay", 0), ("inconsistent_reads", False), ("delay", "fixed"))
            if getattr(self, name) != default
        ]
        if simulated:
            raise ValueError(
                f"{', '.join(simulated)}: the delay simulator of backend='serial' only; backend={backend!r} "
                "has real delays (measured, in telemetry_). Leave max_delay=0, inconsistent_reads=False and "
                "delay='fixed', or use backend='serial' to simulate delays"
            )
        devices = getattr(self, "devices", None)
        cores = os.cpu_count() or 1
        if backend in ("threads", "processes") and devices is None and self.n_workers > OVERSUBSCRIBED * cores:
            warnings.warn(
                f"n_workers={self.n_workers} is more than {OVERSUBSCRIBED}x this machine's {cores} cores: "
                f"the {backend} workers will share cores and each step run slower (and staler); "
                f"n_workers <= {cores} is usually fastest",
                UserWarning,
                stacklevel=4,  # (the user's fit call, past sklearn's wrapper)
            )
        if backend == "processes":  # the checks passed: the workers spawn now and import during the setup
            from asyncopt.engines.transports import prestart_processes

            prestart_processes(self.n_workers)

    # -- validation sets -----------------------------------------------------------------
    def _validation_set(self, X_val, y_val, n_outputs: int, one_d: bool = True):
        """(X_val, targets) checked before any work (class indices for classifiers); None without one."""
        pair = self._validation_pair(X_val, y_val)
        if pair is None:
            return None
        X_val, y_val = pair
        X_val = self._validate_X(X_val, reset=False)
        if isinstance(self, ClassifierMixin):
            return X_val, self._validation_codes(y_val)
        return X_val, self._validation_targets(y_val, n_outputs, one_d)

    def _validation_pair(self, X_val, y_val):
        """(X_val, y_val as an array) after the checks both families share; None when neither is given."""
        if X_val is None and y_val is None:
            target = getattr(self, "val_target", None)
            if target is not None:
                raise ValueError(
                    f"val_target={target} stops training on the validation metric, which needs a "
                    "validation set: fit(X, y, X_val=..., y_val=...) (or leave val_target=None)"
                )
            return None
        if y_val is None:
            raise ValueError(
                "X_val given without y_val: val_metric needs both; call fit(X, y, X_val=X_val, y_val=y_val), "
                "or pass neither"
            )
        if X_val is None:
            raise ValueError(
                "y_val given without X_val: val_metric needs both; call fit(X, y, X_val=X_val, y_val=y_val), "
                "or pass neither"
            )
        if sp.issparse(y_val):
            raise ValueError("y_val must be a dense array-like, not a sparse matrix")
        y_val = np.asarray(y_val)
        n_val = _num_samples(X_val)
        if y_val.ndim == 0 or len(y_val) != n_val:
            got = "a scalar" if y_val.ndim == 0 else f"{len(y_val)} labels"
            raise ValueError(f"X_val has {n_val} samples but y_val has {got}: y_val needs one target per row of X_val")
        return X_val, y_val

    def _validation_codes(self, y_val) -> np.ndarray:
        """Classifiers: y_val as indices into classes_, -1 for labels never seen in training (warned
        about: those samples count as errors in val_metric)."""
        from sklearn.utils.validation import column_or_1d

        y_val = column_or_1d(y_val, input_name="y_val")
        index = {label: code for code, label in enumerate(self.classes_.tolist())}
        labels = y_val.tolist()
        codes = np.fromiter((index.get(v, -1) for v in labels), dtype=np.int64, count=len(labels))
        if (codes < 0).any():
            unseen = sorted({repr(v) for v, c in zip(labels, codes, strict=True) if c < 0})
            shown = ", ".join(unseen[:10]) + (" ..." if len(unseen) > 10 else "")
            warnings.warn(
                f"y_val has {int((codes < 0).sum())} sample(s) with labels never seen in training ({shown}; "
                f"classes_ are {', '.join(map(repr, self.classes_.tolist()[:10]))}"
                f"{' ...' if len(self.classes_) > 10 else ''}): they count as errors in val_metric",
                UserWarning,
                stacklevel=5,  # (the user's fit call)
            )
        return codes

    @staticmethod
    def _validation_targets(y_val, n_outputs: int, one_d: bool) -> np.ndarray:
        """Regressors: y_val as float64 of the training targets' shape (1-D, or n_outputs columns)."""
        from sklearn.utils.validation import check_array

        y_val = check_array(y_val, ensure_2d=False, dtype=np.float64, input_name="y_val")
        if one_d:
            if y_val.ndim == 2 and y_val.shape[1] == 1:
                y_val = y_val[:, 0]
            if y_val.ndim != 1:
                raise ValueError(f"y was one target per sample but y_val has shape {y_val.shape}")
        elif y_val.ndim != 2 or y_val.shape[1] != n_outputs:
            raise ValueError(f"y has {n_outputs} targets per sample but y_val has shape {y_val.shape}")
        return y_val

    # -- checkpoints ---------------------------------------------------------------------
    def _resume_params(self) -> dict:
        return {k: _json_param(v) for k, v in self.get_params(deep=False).items() if k not in RESUME_FREE}

    def _server_folder(self) -> Path | None:
        """Where Ray's server actors save their state, so that a dead one restarts from it: inside
        checkpoint_dir (which every node of a cluster must then reach); removed when the fit ends."""
        return None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / "ray-servers"

    def _load_resume(self, resume, fingerprint: dict) -> TrainingState | None:
        """The checkpoint to continue (resume=True: the latest, refused if it is of another problem;
        "auto": the same when there is one); None to start afresh."""
        if resume is False or resume is None:
            return None
        if resume not in (True, "auto"):
            raise ValueError(f"resume={resume!r} must be False, True or 'auto'")
        if self.checkpoint_dir is None:
            raise ValueError("resume needs checkpoint_dir= (the folder the interrupted fit wrote its checkpoints to)")
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            if resume == "auto":
                return None
            raise FileNotFoundError(
                f"resume=True: no checkpoint in {self.checkpoint_dir} (use resume='auto' to start afresh)"
            )
        state = TrainingState.read(path)
        setup = state.setup
        if setup.get("estimator") != type(self).__name__:
            raise ValueError(f"{path}: a checkpoint of {setup.get('estimator')}, not of {type(self).__name__}")
        if setup.get("data") != fingerprint:
            raise ValueError(
                f"{path}: the checkpoint was written for other training data "
                f"(shape {(setup.get('data') or {}).get('shape')}, "
                f"now {fingerprint['shape']}; or the same shape with other values); resume needs the same X and y"
            )
        saved, now = setup.get("params", {}), self._resume_params()
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            shown = ", ".join(f"{k}={saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ValueError(
                f"{path}: the checkpoint's settings differ ({shown}); a resumed fit may change only "
                f"{', '.join(sorted(RESUME_FREE))}"
            )
        self._resumed_from = str(path)
        return state

    def _check_derived(self, resume: TrainingState | None, derived: dict, missing: dict | None = None) -> None:
        """Refuse a resume whose derived settings differ from the checkpoint's; `missing`: the values of
        keys that checkpoints of earlier versions do not hold."""
        if resume is None:
            return
        saved = {**(missing or {}), **resume.setup.get("derived", {})}
        changed = [k for k in derived if k in saved and not _same(saved[k], derived[k])]
        if changed:
            shown = ", ".join(f"{k}: {saved[k]!r} -> {derived[k]!r}" for k in changed)
            raise ValueError(
                f"{self._resumed_from}: settings derived for this fit differ from the checkpoint's ({shown})"
            )

    def _checkpointing(self, seed: int, fingerprint: dict, derived: dict, extra: dict | None = None) -> Checkpointing:
        parse_every(self.checkpoint_every)  # a bad value fails before any work
        setup = {
            "estimator": type(self).__name__,
            "params": self._resume_params(),
            "data": fingerprint,
            "seed": seed,
            "derived": derived,
            **(extra or {}),
        }
        folder = None if self.checkpoint_dir is None else Path(self.checkpoint_dir)
        return Checkpointing(folder, self.checkpoint_every, setup)

    @contextlib.contextmanager
    def _interruptible(self, checkpointing: Checkpointing):
        """SIGINT / SIGTERM during the run: the engine drains, saves (with checkpoint_dir) and stops the
        workers; then SIGINT raises KeyboardInterrupt and SIGTERM exits with status 128 + 15."""
        with StopSignals() as signals:
            checkpointing.signals = signals
            try:
                yield
            except TrainingInterrupted as stop:
                where = (
                    f"checkpoint written to {checkpointing.written[-1]}"
                    if checkpointing.written
                    else "no checkpoint_dir"
                )
                message = f"{type(self).__name__}.fit stopped by signal {stop.signum} ({where})"
                if stop.signum == signal.SIGINT:
                    raise KeyboardInterrupt(message) from None
                print(f"asyncopt: {message}", file=sys.stderr, flush=True)
                raise SystemExit(128 + stop.signum) from None
            except UnguardedMainScript as exc:
                # the message says it all, without the engine's frames (a new exception: contextlib would
                # give the same one its old traceback back)
                raise UnguardedMainScript(str(exc)) from None
            finally:
                checkpointing.signals = None

    def save(self, path):
        """Write the fitted model to `path` (safetensors + JSON, no pickle); read it back with asyncopt.load."""
        from sklearn.utils.validation import check_is_fitted

        from asyncopt.estimators.model_files import save_model

        check_is_fitted(self)
        return save_model(self, path)


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b
