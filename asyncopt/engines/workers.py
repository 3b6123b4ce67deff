"""The coordinator of the real parallel workers (threads, or spawned processes over shared memory).

It schedules: hands out tasks of batches (never crossing an evaluation point), drains the
in-flight ones at evaluation points and checkpoints, records staleness and per-worker telemetry,
and runs the lifecycle (start, liveness, shutdown on every exit). The pieces it drives:
- a transport (engines/transports.py): threads or processes, queues, shared memory;
- the parameter servers (engines/servers.py): in the workers (`servers_in_workers`, a ServerGroup:
  each worker applies its own update, each part under its server's lock; algorithms with
  `snapshot_reads`, EigenPro, log each write and read whole versions without a lock,
  engines/snapshots.py), or the coordinator
  itself as the one server (a PublishingServer: it applies each update as it arrives, the only
  writer, published under a seqlock so that workers read whole versions);
- the workers (engines/worker.py), which compute through the algorithm's pure functions.

Staleness is the number of updates applied between a worker's read and the application of its
update. With ``synchronous=True`` the same workers form the data-parallel baseline: a round of P
batches is read from one version and applied together (a barrier every step). With
``devices=[...]`` (threads) each worker owns a replica of the parameters and of the read-only data
on its device; the coordinator sends every applied update (the sparse rows it touched) to each
replica's inbox, and a worker applies what arrived before it reads.

Every wait is bounded: a worker that raises or dies makes `run` raise `WorkerFailed` with its
traceback, and Ctrl-C stops the workers before it propagates.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch

from asyncopt.engines import atomics
from asyncopt.engines.base import (
    AsyncAlgorithm,
    BatchStream,
    Checkpointer,
    Monitor,
    Schedule,
    TrainingInterrupted,
    WorkerFailed,
    begin_run,
)
from asyncopt.engines.servers import PublishingServer, ServerGroup
from asyncopt.engines.telemetry import Telemetry
from asyncopt.engines.transports import ProcessTransport, ThreadTransport
from asyncopt.engines.worker import Replica

TASKS_PER_WORKER = 4  # servers in the workers: tasks per worker between two evaluation points, at least


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
    reuse_workers: bool = True  # processes: workers from the pool kept between fits (engines/pool.py)

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

    @property
    def coordinator_threads(self) -> int:
        """torch threads the coordinator may use while no worker computes (the setup before they
        start, drained points): the cores the run's workers use."""
        return min(os.cpu_count() or 1, self.n_workers * self.threads_per_worker)

    # -- workers ---------------------------------------------------------------------------
    def _start(self, algo, params, servers_state=None, batch_size=None):
        """The transport, the servers (in the workers, or the coordinator publishing), the workers."""
        if self.backend == "threads":
            transport = self._transport = ThreadTransport()
        else:  # (the pool's locks: one per server and the version lock, when the workers apply)
            n_locks = algo.n_locks + 1 if self.servers_in_workers else 0
            transport = self._transport = ProcessTransport(self.n_workers, n_locks, self.reuse_workers)
        self._replicas = [None] * self.n_workers
        self._servers = self._publisher = None
        if self.servers_in_workers:
            self._servers = ServerGroup(algo, transport.new_lock, batch_size)
            if servers_state is not None:
                self._servers.load_state_dict(servers_state)
        else:
            self._publisher = PublishingServer()
            if self.devices is not None:
                self._replicas = [Replica(algo, params, torch.device(d)) for d in self.devices]
        transport.share(algo, params, self._servers, self._publisher)
        links = [
            transport.link(self.threads_per_worker, servers=self._servers, publisher=self._publisher, replica=r)
            for r in self._replicas
        ]
        transport.start(algo, params, links)
        # wait until every worker is up (spawned processes import torch first), so that all
        # of them take part from the first batch
        for _ in links:
            if transport.next_result(self.timeout)[0] != "ready":
                raise WorkerFailed("a worker sent an update before reporting ready")
        transport.ready = True

    def _next_result(self):
        return self._transport.next_result(self.timeout)

    @property
    def _sync_words(self):
        """The servers' shared words (servers in the workers): version, cursor, locks and clocks."""
        return None if self._servers is None else self._servers.words

    def _coordinator_state(self, stream, steps) -> dict:
        state = {"stream": stream.state_dict(), "steps": steps}
        if self._servers is not None:
            state["servers"] = self._servers.state_dict()
        return state

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
        params, stream, steps, telemetry = begin_run(algo, schedule, rng, monitor, self.n_workers, params, resume)
        # drained, the workers' cores are the coordinator's (the SVRG anchor, the local step, F)
        monitor.drained_threads = self.coordinator_threads
        eval_at = schedule.evaluation_points()
        round_batch = schedule.batch_size * (self.n_workers if self.synchronous else 1)
        # compiled tasks: a round of batches goes to every worker at once and splits itself (atomics.py)
        shared_rounds = self.servers_in_workers and getattr(algo, "compiled_tasks", False)
        next_eval = int(np.searchsorted(eval_at, stream.issued, side="right"))
        applied, in_flight = stream.issued, 0
        stopping = draining = finished = False
        self._transport = None
        try:
            t0 = time.perf_counter()
            telemetry.setup_seconds = t0 - started if started is not None else 0.0
            self._start(algo, params, None if resume is None else resume.get("servers"), round_batch)
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
                            checkpointer.save(params, self._coordinator_state(stream, steps), telemetry)
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
                    _, worker, stalenesses, n, compute, wait, reads = pending[0]
                    telemetry.record_many(worker, stalenesses, n, compute, wait)
                    telemetry.record_reads(*reads)
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
                    staleness = self._publisher.version - read_version
                    algo.check(update, steps, applied)
                    self._publisher.apply(algo.apply, params, update, staleness, publish=not self.synchronous)
                    for replica in self._replicas:  # sparse deltas to every device's replica
                        if replica is not None:
                            replica.inbox.put((update, staleness))
                    telemetry.record(worker, staleness, n, compute, wait)
                    applied += n
                    steps += 1
                    in_flight -= 1
                    if progress is not None:
                        progress.update(n)
                if self.synchronous:
                    self._publisher.advance()
                if time_limit is not None and monitor.session_seconds() >= time_limit:
                    stopping = True
                if checkpointer is not None and not draining:  # drain, then save at in_flight == 0
                    draining = checkpointer.stop_requested() is not None or checkpointer.due(applied)
                if not self.synchronous and not stopping and not draining and not shared_rounds:
                    in_flight += self._send_task(stream, eval_at[next_eval], round_batch)
            if checkpointer is not None:
                checkpointer.save(params, self._coordinator_state(stream, steps), telemetry)
            finished = True
        finally:
            if self._transport is not None:
                self._transport.shutdown(clean=finished)
        if self._servers is not None:
            telemetry.server_updates = self._servers.clocks()
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
            self._transport.tasks.put(task)
        return self.n_workers

    def _send_task(self, stream: BatchStream, until: int, round_batch: int) -> int:
        """Queue one task (batches that do not cross the evaluation point `until`); returns 1 if sent."""
        if stream.issued >= until:
            return 0
        self._transport.tasks.put(stream.next_task(until - stream.issued, self._task_batches, round_batch))
        return 1
