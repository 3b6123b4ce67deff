"""Engines with real parallel workers: threads (one shared parameter tensor) and processes
(spawned workers over shared memory).

One coordinator, in the calling thread, plays the parameter server: it hands out batches, applies
each returned update as it arrives (the only writer), and measures staleness as the number of
updates applied between a worker's read and the application of its update. Workers read the
shared parameters without any lock, while the server writes: reads are stale and may mix
versions, exactly the regime AsyncEigenPro and AsyB-ProxSGD are designed for. With
``synchronous=True`` the same workers form the data-parallel baseline: a round of P batches is
read from one version and applied together (a barrier every step).

With ``devices=[...]`` (threads) each worker owns a replica of the parameters and of the read-only
data on its device; the server sends every applied update (the sparse rows it touched) to each
replica's inbox, and a worker applies what arrived before it reads. The same code runs on CPU
devices (tested) and on GPUs.

Every wait is bounded: a worker that raises or dies makes `run` raise `WorkerFailed` with its
traceback, and Ctrl-C stops the workers before it propagates.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import traceback

import numpy as np
import torch

from asyncopt.engines import atomics, compiled
from asyncopt.engines.base import (
    AsyncAlgorithm,
    BatchStream,
    Checkpointer,
    Monitor,
    Schedule,
    TrainingInterrupted,
    WorkerFailed,
)
from asyncopt.engines.telemetry import Telemetry

POLL_SECONDS = 0.2
TASKS_PER_WORKER = 4  # servers in the workers: tasks per worker between two evaluation points, at least


class _Counter:
    """The version counter for threads (a multiprocessing.Value stands in for processes)."""

    def __init__(self):
        self.value = 0


class _Replica:
    """A worker's own copy of the parameters (on its device), kept current from an inbox of deltas."""

    def __init__(self, algo, params, device):
        self.algo = algo.to(device)
        self.params = params.to(device, copy=True)
        self.device = device
        self.inbox: queue.Queue = queue.Queue()
        self.value = 0  # updates applied to this replica: its version

    def catch_up(self):
        while True:
            try:
                update, staleness = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.algo.apply(self.params, self.algo.update_to(update, self.device), staleness)
            self.value += 1


def _apply_here(algo, params, update, read_version, version, locks):
    """The parameter servers' rule run in the worker. `algo.server_parts(update)` says which
    server (block lock) gets which part; each part is applied under its server's lock, so the
    updates of one block are serialized as that server's inbox would serialize them, while parts
    for different servers proceed in parallel. Returns the staleness (counter under its own lock)."""
    with locks[-1]:
        staleness = version.value - read_version
    for key, part in algo.server_parts(update):
        with locks[key]:
            algo.apply(params, part, staleness)
    with locks[-1]:
        version.value += 1
    return staleness


def _consistent_read(params, version, seq):
    """A copy of the parameters that no update was being applied to while it was taken (a seqlock:
    the server makes `seq` odd while it writes). Without it a read can see an update's first part
    and not its second: EigenPro's batch rows without their Nystrom correction, an unpreconditioned
    step in the top eigendirections (with 2 threads, 1 fit in 4 to 8 ended far from interpolating).
    Stale but whole reads are what the algorithms are designed for. Returns (version, copy)."""
    while True:
        before = seq.value
        if before & 1:  # a write in progress: let the server finish
            time.sleep(0)
            continue
        read_version = version.value
        seen = params.clone()
        if seq.value == before:
            return read_version, seen


def _worker_loop(
    worker,
    algo,
    params,
    version,
    tasks,
    results,
    stop,
    threads,
    to_numpy,
    replica=None,
    locks=None,
    sync=None,
    seq=None,
):
    """Body of one worker (thread or process): take a task of batches, read params, compute, push.

    With a `replica` the worker reads its own copy, first applying the deltas the server sent.
    With `locks` (servers in the workers) the worker applies its own updates to the shared parameters
    and sends back only their staleness; an algorithm's compiled `run_task` synchronizes through the
    `sync` words (atomics.py) instead of the Python locks.
    """
    try:
        if threads:
            torch.set_num_threads(threads)
        if replica is not None:
            algo, params, version = replica.algo, replica.params, replica
        if sync is not None:
            sync = sync.numpy()
        if hasattr(algo, "prepare"):  # e.g. load compiled kernels before the clock of the first task
            algo.prepare()
        if locks is not None and getattr(algo, "compiled_tasks", False):
            compiled.warm(algo)
        results.put(("ready", worker))
        while True:
            t0 = time.perf_counter()
            try:
                task = tasks.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if task is None:
                return
            t1 = time.perf_counter()
            if locks is not None:
                # an algorithm may run the whole task compiled (same rule: lock-free reads, each
                # server's part under its lock); None means it cannot, and the loop below does it
                if getattr(algo, "compiled_tasks", False):
                    stalenesses, samples = compiled.run_task(algo, params, task, sync)
                    results.put(("applied", worker, stalenesses, samples, time.perf_counter() - t1, t1 - t0))
                    continue
                if task.shared:
                    raise RuntimeError("a shared task needs an algorithm with compiled_tasks")
                stalenesses, samples = [], 0
                for batch, scale, key in task.batches():
                    read_version = version.value
                    update = algo.compute(params, torch.as_tensor(batch), scale, key)
                    algo.check(update, -1, -1)
                    stalenesses.append(_apply_here(algo, params, update, read_version, version, locks))
                    samples += len(batch)
                results.put(("applied", worker, stalenesses, samples, time.perf_counter() - t1, t1 - t0))
                continue
            (batch, scale, key) = next(task.batches())
            if replica is not None:
                replica.catch_up()
                read_version, seen = version.value, params
            else:
                read_version, seen = _consistent_read(params, version, seq)
            update = algo.compute(seen, torch.as_tensor(batch), scale, key)
            payload = algo.update_to_numpy(update) if to_numpy else update
            results.put(("ok", worker, read_version, payload, len(batch), time.perf_counter() - t1, t1 - t0))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the caller
        # the exception itself travels when the algorithm declares it its own (e.g. TrainingDiverged)
        own = isinstance(exc, tuple(getattr(algo, "passthrough_errors", ())))
        results.put(("error", worker, traceback.format_exc(), exc if own else None))


def _process_main(worker, algo, params, version, tasks, results, stop, threads, locks, sync, seq):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _worker_loop(worker, algo, params, version, tasks, results, stop, threads, True, None, locks, sync, seq)


@dataclasses.dataclass
class WorkerEngine:
    backend: str = "threads"  # "threads" or "processes"
    n_workers: int = 2
    threads_per_worker: int | None = None
    synchronous: bool = False
    devices: list | None = None  # threads only: one worker per torch device, each with a replica
    timeout: float = 300.0  # longest wait for any one update before the run is declared hung
    # servers in the workers: each worker applies its own updates under per-block locks (algorithms
    # with `n_locks` and `server_parts`), and a task carries up to `task_samples` samples (fewer when
    # evaluation points are close: `_size_tasks`), so that the coordinator only schedules: with
    # compiled steps of ~20 us a task of a few small batches would leave the workers waiting on it
    servers_in_workers: bool = False
    task_samples: int = 4096

    def __post_init__(self):
        if self.backend not in ("threads", "processes"):
            raise ValueError(f"backend={self.backend!r} must be 'threads' or 'processes'")
        if self.n_workers < 1:
            raise ValueError(f"n_workers={self.n_workers} must be >= 1")
        if self.devices is not None:
            if self.backend != "threads":
                raise ValueError("devices= needs backend='threads' (one worker thread per device)")
            self.n_workers = len(self.devices)
        if self.threads_per_worker is None:
            self.threads_per_worker = max(1, (os.cpu_count() or 1) // self.n_workers)
        if self.servers_in_workers and (self.synchronous or self.devices is not None):
            raise ValueError("servers_in_workers needs asynchronous workers on one shared parameter store")

    # -- workers -------------------------------------------------------------------------
    def _start(self, algo, params):
        if self.backend == "threads":
            self._version, self._seq = _Counter(), _Counter()
            self._tasks, self._results = queue.Queue(), queue.Queue()
            self._stop = threading.Event()
            self._saved_threads = torch.get_num_threads()
            self._replicas = (
                [_Replica(algo, params, torch.device(d)) for d in self.devices]
                if self.devices is not None
                else [None] * self.n_workers
            )
            self._locks = [threading.Lock() for _ in range(algo.n_locks + 1)] if self.servers_in_workers else None
            self._sync = atomics.new_sync(algo.n_locks) if self.servers_in_workers else None
            self._sync_words = None if self._sync is None else self._sync.numpy()
            self._workers = [
                threading.Thread(
                    target=_worker_loop,
                    args=(
                        i,
                        algo,
                        params,
                        self._version,
                        self._tasks,
                        self._results,
                        self._stop,
                        self.threads_per_worker,
                        False,
                        self._replicas[i],
                        self._locks,
                        self._sync,
                        self._seq,
                    ),
                    daemon=True,
                    name=f"asyncopt-worker-{i}",
                )
                for i in range(self.n_workers)
            ]
        else:
            import torch.multiprocessing as mp

            ctx = mp.get_context("spawn")
            algo.share_memory()
            params.share_memory_()
            self._replicas = [None] * self.n_workers
            self._version = ctx.Value("q", 0, lock=False)
            self._seq = ctx.Value("q", 0, lock=False)  # odd while the server writes (_consistent_read)
            self._tasks, self._results, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
            self._locks = [ctx.Lock() for _ in range(algo.n_locks + 1)] if self.servers_in_workers else None
            self._sync = atomics.new_sync(algo.n_locks).share_memory_() if self.servers_in_workers else None
            self._sync_words = None if self._sync is None else self._sync.numpy()  # (after the move to shared memory)
            self._workers = [
                ctx.Process(
                    target=_process_main,
                    args=(
                        i,
                        algo,
                        params,
                        self._version,
                        self._tasks,
                        self._results,
                        self._stop,
                        self.threads_per_worker,
                        self._locks,
                        self._sync,
                        self._seq,
                    ),
                    daemon=True,
                    name=f"asyncopt-worker-{i}",
                )
                for i in range(self.n_workers)
            ]
        for w in self._workers:
            try:
                w.start()
            except Exception as exc:  # typically pickling the algorithm for a spawned process
                self._workers = [v for v in self._workers if v.ident is not None]
                raise WorkerFailed(
                    f"could not start a {self.backend} worker: {type(exc).__name__}: {exc}. The processes "
                    "backend pickles the algorithm: kernel callables must be importable module-level "
                    "functions, not lambdas or closures (or use backend='threads')"
                ) from exc
        # wait until every worker is up (spawned processes import torch first), so that all
        # of them take part from the first batch
        for _ in self._workers:
            if self._next_result()[0] != "ready":
                raise WorkerFailed("a worker sent an update before reporting ready")

    def _alive_check(self):
        for i, w in enumerate(self._workers):
            dead = (not w.is_alive()) if self.backend == "threads" else (w.exitcode is not None)
            if dead:
                code = "" if self.backend == "threads" else f" with exit code {w.exitcode}"
                raise WorkerFailed(f"worker {i} ({self.backend}) stopped unexpectedly{code}")

    def _next_result(self):
        """The next message from any worker; raises if one failed, died, or all went silent."""
        waited = 0.0
        while True:
            try:
                msg = self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                waited += POLL_SECONDS
                self._alive_check()
                if waited > self.timeout:
                    raise WorkerFailed(f"no update from any worker for {self.timeout:.0f} s") from None
                continue
            if msg[0] == "error":
                if msg[3] is not None:  # the algorithm's own error: raised as itself, with the worker's traceback
                    msg[3].add_note(f"raised in worker {msg[1]} ({self.backend}):\n{msg[2]}")
                    raise msg[3]
                raise WorkerFailed(f"worker {msg[1]} ({self.backend}) raised:\n{msg[2]}")
            return msg

    def _shutdown(self):
        if not self._workers:
            return
        self._stop.set()
        for _ in self._workers:
            self._tasks.put(None)
        for w in self._workers:
            w.join(timeout=5.0)
            if self.backend == "processes" and w.is_alive():
                w.terminate()
                w.join(timeout=5.0)
        if self.backend == "threads":
            torch.set_num_threads(self._saved_threads)
        else:
            self._tasks.cancel_join_thread()
            self._results.cancel_join_thread()

    # -- the parameter server ------------------------------------------------------------
    def run(
        self,
        algo: AsyncAlgorithm,
        schedule: Schedule,
        rng: np.random.Generator,
        monitor: Monitor,
        time_limit: float | None = None,
        started: float | None = None,
        progress=None,
        *,
        params: torch.Tensor | None = None,
        resume: dict | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> tuple[torch.Tensor, Telemetry]:
        """Train from `params` (default `algo.init_params()`), continuing the coordinator state
        `resume` a checkpointer saved. A due checkpoint (or a stop request) makes the coordinator
        stop handing out tasks; once the in-flight ones are applied it saves (and for a stop,
        shuts the workers down and raises TrainingInterrupted)."""
        params = algo.init_params() if params is None else params
        stream = BatchStream(schedule, rng)
        telemetry = Telemetry(n_workers=self.n_workers)
        steps = 0
        if resume is not None:
            stream.load_state_dict(resume["stream"])
            steps = int(resume["steps"])
            telemetry = Telemetry.from_dict(resume["telemetry"], self.n_workers)
        monitor.telemetry = telemetry
        eval_at = schedule.evaluation_points()
        round_batch = schedule.batch_size * (self.n_workers if self.synchronous else 1)
        # compiled tasks: a round of batches goes to every worker at once and splits itself (atomics.py)
        shared_rounds = self.servers_in_workers and getattr(algo, "compiled_tasks", False)
        next_eval = int(np.searchsorted(eval_at, stream.issued, side="right"))
        applied, in_flight = stream.issued, 0
        stopping = draining = False
        self._workers = []
        try:
            t0 = time.perf_counter()
            telemetry.setup_seconds = t0 - started if started is not None else 0.0
            self._start(algo, params)
            telemetry.startup_seconds = time.perf_counter() - t0
            while next_eval < len(eval_at):
                if in_flight == 0:
                    if stopping or stream.issued == eval_at[next_eval]:
                        if stream.issued == eval_at[next_eval]:
                            next_eval += 1
                        if monitor(params, applied, steps) or stopping or next_eval == len(eval_at):
                            break
                    if checkpointer is not None:
                        draining = False
                        signum = checkpointer.stop_requested()
                        if signum is not None or checkpointer.due(applied):
                            checkpointer.save(params, {"stream": stream.state_dict(), "steps": steps}, telemetry)
                            if signum is not None:
                                raise TrainingInterrupted(signum)
                    if shared_rounds:
                        in_flight += self._send_round(stream, eval_at[next_eval], schedule.batch_size)
                        continue
                    # fill every worker (a full round when synchronous); with servers in the workers
                    # each gets a second task queued, so it never idles while the coordinator replies
                    self._size_tasks(eval_at[next_eval] - stream.issued, schedule.batch_size)
                    for _ in range(self.n_workers * (2 if self.servers_in_workers else 1)):
                        in_flight += self._send_task(stream, eval_at[next_eval], round_batch)
                    continue
                pending = [self._next_result() for _ in range(in_flight if self.synchronous else 1)]
                if pending[0][0] == "applied":  # the worker applied its updates itself
                    _, worker, stalenesses, n, compute, wait = pending[0]
                    telemetry.record_many(worker, stalenesses, n, compute, wait)
                    applied += n
                    steps += len(stalenesses)
                    in_flight -= 1
                    if progress is not None:
                        progress.update(n)
                    pending = []
                for _, worker, read_version, payload, n, compute, wait in pending:
                    update = algo.update_from_numpy(payload) if self.backend == "processes" else payload
                    if self.devices is not None:
                        update = algo.update_to(update, params.device)
                    staleness = self._version.value - read_version
                    algo.check(update, steps, applied)
                    self._seq.value += 1  # odd: workers do not copy the parameters now
                    algo.apply(params, update, staleness)
                    self._seq.value += 1
                    for replica in self._replicas:  # sparse deltas to every device's replica
                        if replica is not None:
                            replica.inbox.put((update, staleness))
                    telemetry.record(worker, staleness, n, compute, wait)
                    if not self.synchronous:
                        self._version.value += 1
                    applied += n
                    steps += 1
                    in_flight -= 1
                    if progress is not None:
                        progress.update(n)
                if self.synchronous:
                    self._version.value += 1
                if time_limit is not None and monitor.session_seconds() >= time_limit:
                    stopping = True
                if checkpointer is not None and not draining:  # drain, then save at in_flight == 0
                    draining = checkpointer.stop_requested() is not None or checkpointer.due(applied)
                if not self.synchronous and not stopping and not draining and not shared_rounds:
                    in_flight += self._send_task(stream, eval_at[next_eval], round_batch)
            if checkpointer is not None:
                checkpointer.save(params, {"stream": stream.state_dict(), "steps": steps}, telemetry)
        finally:
            self._shutdown()
        return params, telemetry

    def _size_tasks(self, segment: int, batch_size: int) -> None:
        """Batches per task until the next evaluation point (`segment` samples away): one without
        servers in the workers; with them, task_samples, but small enough that every worker gets
        TASKS_PER_WORKER tasks of the segment (a segment in one task would leave the others idle)."""
        if not self.servers_in_workers:
            self._task_batches = 1
            return
        samples = min(self.task_samples, -(-segment // (TASKS_PER_WORKER * self.n_workers)))
        self._task_batches = max(1, -(-samples // batch_size))

    def _send_round(self, stream: BatchStream, until: int, batch_size: int) -> int:
        """One shared task for all workers (up to task_samples x TASKS_PER_WORKER per worker, not past
        the evaluation point `until`), its cursor reset; returns the messages now in flight.
        One message per worker per round, and no worker idles while another has batches queued."""
        if stream.issued >= until:
            return 0
        samples = min(until - stream.issued, self.task_samples * TASKS_PER_WORKER * self.n_workers)
        task = stream.next_task(samples, -(-samples // batch_size))
        task.shared = True
        self._sync_words[atomics.CURSOR_WORD] = 0  # (no worker holds a task: all replied)
        for _ in range(self.n_workers):
            self._tasks.put(task)
        return self.n_workers

    def _send_task(self, stream: BatchStream, until: int, round_batch: int) -> int:
        """Queue one task (batches that do not cross the evaluation point `until`); returns 1 if sent."""
        if stream.issued >= until:
            return 0
        self._tasks.put(stream.next_task(until - stream.issued, self._task_batches, round_batch))
        return 1
