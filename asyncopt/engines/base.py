"""The contract between an algorithm and the engines that run it.

An engine knows nothing about kernels or losses. The algorithm supplies pure functions:
``compute(params, task)`` (what a worker computes from the parameters as it read them) and
``apply(params, update)`` (how the parameter server folds an update in). The engine decides
where and when they run, measures staleness, and stops on the schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import multiprocessing
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from asyncopt.engines.telemetry import Telemetry


class AsyncAlgorithm(Protocol):
    n_samples: int
    passthrough_errors: tuple  # exception types a worker's failure is raised as (others: WorkerFailed)

    def init_params(self) -> torch.Tensor:
        """The parameter store, created once (the engine shares or replicates it)."""

    def compute(self, params: torch.Tensor, batch: torch.Tensor, scale: float, key: int = 0) -> Any:
        """A worker's step on `batch` against `params` as read; `scale` multiplies its step size.

        `key` is a random integer drawn by the coordinator for this task (AsyB-ProxSGD draws its
        block from it), so serial runs stay reproducible whatever worker takes the task."""

    def apply(self, params: torch.Tensor, update: Any, staleness: int = 0) -> None:
        """The parameter server's rule: fold `update` into `params` in place; `staleness` is the
        number of updates applied since the worker read (for delay-adaptive steps)."""

    def check(self, update: Any, step: int, samples: int) -> None:
        """Raise when an update shows divergence."""

    def to(self, device: torch.device) -> AsyncAlgorithm:
        """A copy whose read-only data lives on `device` (for per-device replicas)."""

    def update_to(self, update: Any, device: torch.device) -> Any: ...

    def update_to_numpy(self, update: Any) -> Any: ...

    def update_from_numpy(self, payload: Any) -> Any: ...

    def state_dict(self) -> dict:
        """The rule state a resumed run needs (step schedule, anchors, lazy counters flushed):
        JSON-able values and arrays. Called with no update in flight."""

    def load_state_dict(self, state: dict, params: torch.Tensor) -> None:
        """Restore `state_dict`'s output (`params` are the restored parameters)."""


class TaskKernels(NamedTuple):
    """An algorithm's three module-level numba kernels for the compiled task loop (engines/compiled.py):

    - ``worker_step(worker_args, batch, key) -> (status, update)``: a worker's update from the
      parameters as read (lock-free); status 0, or the algorithm's non-zero code to stop the task;
    - ``route(server_args, update, staleness) -> (first, stop, extra, step)``: the update goes to
      servers first..stop-1, then to server `extra` (-1: none), with the rule's `step` for this
      staleness (computed once per update, not per server);
    - ``server_apply(server_args, server, update, step)``: that server's rule on its rows (the loop
      holds its lock and ticks its clock).
    Marked inline="always", they are inlined into the loop (no call or argument copies per batch)."""

    worker_step: Any
    route: Any
    server_apply: Any


class ServersInWorkers(AsyncAlgorithm, Protocol):
    """What `WorkerEngine(servers_in_workers=True)` needs on top: the servers' rule is applied by
    the workers, each part under its server's lock."""

    n_locks: int  # parameter servers (locks); the engine adds one for the version counter
    servers_per_update: int  # (compiled_tasks) the clock ticks one update makes: compiled.py's staleness
    compiled_tasks: bool  # whole tasks run in the engine's compiled loop (task_kernels / task_args)

    def server_parts(self, update: Any) -> list[tuple[int, Any]]:
        """(server, part) pairs: each part is applied under that server's lock."""

    def server_rows(self, server: int) -> tuple[int, int]:
        """The rows [lo, hi) of the parameter store that `server` owns."""

    def prepare(self) -> None:
        """Load compiled kernels (in a worker's start, before the clock of its first task)."""

    # with compiled_tasks:
    def task_kernels(self) -> tuple:
        """TaskKernels' three kernels, as a plain tuple (the algorithm imports no engine)."""

    def task_args(self, params: torch.Tensor, task: Task) -> tuple[tuple, tuple]:
        """(worker_args, server_args) for the kernels, over `params` (numpy views), for this task."""

    def task_failed(self, status: int) -> None:
        """Raise the error a worker kernel's non-zero status stands for."""


class PlacedServers(AsyncAlgorithm, Protocol):
    """What an engine whose servers live apart from the workers (Ray) needs on top: the servers
    (`n_locks`, `server_rows`, `server_parts`, as ServersInWorkers) and what a step reads."""

    n_locks: int

    def server_rows(self, server: int) -> tuple[int, int]: ...

    def server_parts(self, update: Any) -> list[tuple[int, Any]]: ...

    def rows_read(self, rows: np.ndarray) -> np.ndarray | None:
        """The sorted parameter rows a step on samples `rows` reads (None: all): what a worker pulls."""


class WorkerFailed(RuntimeError):
    """A worker raised; the message carries its traceback."""


WORKER_NAME = "asyncopt-worker-"  # a worker's name: this prefix and its index
# the exit status of a spawned worker that found the parent's main script fitting while it imported it
UNGUARDED_MAIN_EXIT = 86


class UnguardedMainScript(RuntimeError):
    """backend="processes" from a script without the ``if __name__ == "__main__":`` guard."""


def reimporting_main() -> bool:
    """True in a spawned asyncopt worker while it imports the parent's main script (multiprocessing's
    spawn start runs the script again, as ``__mp_main__``, before the worker's own code): a fit
    called then comes from unguarded module-level code, not from the worker."""
    process = multiprocessing.current_process()
    return process.name.startswith(WORKER_NAME) and bool(getattr(process, "_inheriting", True))


def exit_if_reimporting_main() -> None:
    """In a worker importing an unguarded script: exit at once, quietly, with UNGUARDED_MAIN_EXIT
    (the coordinator then raises one clear error instead of every worker printing tracebacks)."""
    if reimporting_main():
        raise SystemExit(UNGUARDED_MAIN_EXIT)


def unguarded_message() -> str:
    script = getattr(sys.modules.get("__main__"), "__file__", None) or "(the main module)"
    return (
        f"backend='processes' starts workers that re-import your script {script}; put the code that fits "
        "(and any asyncopt.start_worker_pool call) under `if __name__ == '__main__':`"
    )


class TrainingInterrupted(Exception):
    """A stop was requested (SIGINT / SIGTERM) and the engine stopped at a drained point, after
    the checkpointer (if any) saved; `signum` says which signal."""

    def __init__(self, signum: int, checkpoint=None):
        super().__init__(f"training interrupted by signal {signum}")
        self.signum, self.checkpoint = signum, checkpoint


class Checkpointer(Protocol):
    """What an engine asks at its drained points (no update in flight): serial after every step,
    worker engines after draining when `due` says so or a stop was requested."""

    def due(self, samples: int) -> bool:
        """A periodic checkpoint is due (time or samples since the last one)."""

    def stop_requested(self) -> int | None:
        """The signal number when a stop was requested, else None."""

    def samples_until_due(self, samples: int) -> int | None:
        """Samples left until a checkpoint by sample count is due, or None (the serial engine ends its
        compiled tasks there, as it asks after every batch otherwise)."""

    def save(self, params: torch.Tensor, coordinator: dict, telemetry) -> None:
        """Write the run's state: `coordinator` is the engine's part (`BatchStream` position, steps)."""


MAX_EVALUATIONS = 10**7  # evaluation points of one fit (the list of them is made up front)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which samples are processed, in what batches, and when to evaluate.

    Batches are consecutive slices of one random permutation per epoch, handed to whichever
    worker asks next; a batch never crosses an evaluation point, so history entries fall at
    exact sample counts.
    """

    n_samples: int  # draws an epoch
    batch_size: int
    epochs: float
    evals_per_epoch: int = 1
    # the rows one epoch draws, in any order (n_samples of them, a row possibly more than once: an
    # algorithm's weighted draws); None: each of n_samples rows once
    draws: np.ndarray | None = None

    def evaluation_points(self) -> list[int]:
        n, per = self.n_samples, max(1, self.evals_per_epoch)
        count = self.epochs * per
        if not math.isfinite(count) or count > MAX_EVALUATIONS or self.epochs * n > 2**62:
            raise ValueError(
                f"{self.epochs:g} epochs x {per} evaluations an epoch is {count:.3g} evaluation points "
                f"(at most {MAX_EVALUATIONS:,}): lower the epochs (a fit that should run until stopped "
                "takes time_limit= or a callback)"
            )
        total = int(math.ceil(self.epochs * n))
        points = {int(round(k * n / per)) for k in range(1, int(math.ceil(self.epochs * per)) + 1)}
        return sorted(p for p in points if 0 < p < total) + [total]


KEY_CHUNK = 1024  # batch keys are drawn this many at a time


@dataclasses.dataclass
class Task:
    """Consecutive batches for one worker, shipped as three arrays (a list of small arrays costs
    microseconds per batch to pickle, as much as a compiled step)."""

    rows: np.ndarray  # the batches' sample indices, concatenated
    sizes: np.ndarray  # samples per batch
    keys: np.ndarray  # one random key per batch
    round_batch: int  # a batch's step is scaled by len(batch) / round_batch
    shared: bool = False  # sent to every worker, each taking the next batch left (engines/atomics.py cursor)

    def batches(self):
        """(batch, scale, key) for each batch, in order."""
        start = 0
        for size, key in zip(self.sizes.tolist(), self.keys.tolist(), strict=True):
            yield self.rows[start : start + size], size / self.round_batch, key
            start += size

    @property
    def n_samples(self) -> int:
        return int(self.rows.shape[0])


class BatchStream:
    """Draws batches from per-epoch permutations (deterministic from the generator)."""

    def __init__(self, schedule: Schedule, rng: np.random.Generator, state: dict | None = None):
        self.schedule, self.rng = schedule, rng
        self.order = np.empty(0, dtype=np.int64)
        self.issued = 0
        self._keys, self._used = np.empty(0, dtype=np.int64), 0
        if state is not None:
            self.load_state_dict(state)

    def state_dict(self) -> dict:
        """Everything the stream continues from: the epoch's remaining order, drawn keys, the
        generator's state (with every engine's draws: the serial simulator's delays too)."""
        return {
            "order": self.order.copy(),
            "issued": int(self.issued),
            "keys": self._keys[self._used :].copy(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.order = np.asarray(state["order"], dtype=np.int64).copy()
        self.issued = int(state["issued"])
        self._keys, self._used = np.asarray(state["keys"], dtype=np.int64).copy(), 0
        self.rng.bit_generator.state = state["rng"]

    def _next_keys(self, count: int) -> np.ndarray:
        if self._used + count > len(self._keys):
            fresh = self.rng.integers(2**62, size=max(KEY_CHUNK, count))
            self._keys, self._used = np.concatenate([self._keys[self._used :], fresh]), 0
        self._used += count
        return self._keys[self._used - count : self._used]

    def next(self, limit: int) -> tuple[np.ndarray, int]:
        """The next batch, at most `limit` samples, and its random key."""
        task = self.next_task(limit, 1)
        return task.rows, int(task.keys[0])

    def next_task(self, limit: int, batches: int, round_batch: int | None = None) -> Task:
        """Up to `batches` batches, at most `limit` samples, none crossing the end of an epoch: the
        same batches and keys as that many calls of `next`."""
        if len(self.order) == 0:
            draws = self.schedule.draws
            self.order = (
                self.rng.permutation(self.schedule.n_samples)
                if draws is None
                else draws[self.rng.permutation(len(draws))]
            )
        B = self.schedule.batch_size
        take = min(len(self.order), limit, batches * B)
        count = -(-take // B)
        sizes = np.full(count, B, dtype=np.int64)
        sizes[-1] = take - B * (count - 1)
        rows, self.order = self.order[:take], self.order[take:]
        self.issued += take
        return Task(rows, sizes, self._next_keys(count).copy(), B if round_batch is None else round_batch)


class Monitor:
    """Evaluation points: engines call ``monitor(params, samples, steps) -> stop?`` with workers drained.

    ``evaluate(params, samples, steps, seconds)`` (the algorithm's) returns a history entry;
    ``callback(entry)`` may stop training by returning True or raising StopIteration.
    Evaluation time is excluded from the training seconds; ``refresh(params, samples)``, training
    work that needs the workers drained (a variance-reduction snapshot), runs first and is timed.
    """

    def __init__(
        self,
        evaluate: Callable,
        callback: Callable | None = None,
        started: float | None = None,
        refresh: Callable | None = None,
    ):
        import time

        self._clock = time.perf_counter
        self.evaluate, self.callback = evaluate, callback
        self.refresh = refresh  # refresh(params, samples): training work done with workers drained (timed)
        self.started = self._clock() if started is None else started
        self.eval_seconds = 0.0
        self.earlier_seconds = 0.0  # training seconds of the run before it was resumed
        self.history: list = []
        # CPU threads the drained work may use: the engine's workers are idle then, so the coordinator
        # takes their cores for the refresh's and the evaluation's passes over the data (None: as it is)
        self.drained_threads: int | None = None

    def training_seconds(self) -> float:
        """Of the whole run (earlier fits of a resumed run included): what history entries record."""
        return self._clock() - self.started - self.eval_seconds + self.earlier_seconds

    def session_seconds(self) -> float:
        """Of this fit only: what `time_limit` bounds."""
        return self._clock() - self.started - self.eval_seconds

    def __call__(self, params: torch.Tensor, samples: int, steps: int) -> bool:
        with torch_threads(self.drained_threads):
            if self.refresh is not None:
                self.refresh(params, samples)
            t0 = self._clock()
            entry = self.evaluate(params, samples, steps, t0 - self.started - self.eval_seconds + self.earlier_seconds)
        self.history.append(entry)
        self.eval_seconds += self._clock() - t0
        if self.callback is None:
            return False
        try:
            return bool(self.callback(entry))
        except StopIteration:
            return True


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads raised to n inside the block (never lowered), restored after."""
    before = torch.get_num_threads()
    if not n or n <= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def blas_threads(n: int):
    """Hold the BLAS that compiled kernels call (numba's np.dot: scipy's OpenBLAS) to n threads, until
    the returned limiter's `restore_original_limits()`. Two worker threads each calling an OpenBLAS of
    2 threads got 0.76x one caller's throughput, held to 1 thread 1.55x (a scratch run, session 33)."""
    return _blas_controller().limit(limits=max(1, int(n)), user_api="blas")


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once (a scan: 3-12 ms; a limit: ~0.1)."""
    import scipy.linalg.cython_blas  # noqa: F401  (loaded first: threadpoolctl sees the loaded libraries)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def begin_run(algo, schedule: Schedule, rng, monitor: Monitor, n_workers: int, params, resume: dict | None):
    """What every engine's run starts with: the parameters (default `algo.init_params()`), the
    batch stream, the step count and the telemetry, continued from the coordinator state `resume`
    a checkpointer saved (stream position, steps, telemetry) when there is one."""
    params = algo.init_params() if params is None else params
    stream = BatchStream(schedule, rng)
    telemetry, steps = Telemetry(n_workers=n_workers), 0
    if resume is not None:
        stream.load_state_dict(resume["stream"])
        steps = int(resume["steps"])
        telemetry = Telemetry.from_dict(resume["telemetry"], n_workers)
    monitor.telemetry = telemetry
    return params, stream, steps, telemetry
