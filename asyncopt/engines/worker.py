"""A worker's body (a thread or a spawned process): take a task, read the parameters, compute, push.

Three ways its update reaches the parameters:
- `servers` (a ServerGroup: servers in the workers): the worker applies its own updates, each part
  under its server's lock, and sends back only their stalenesses (and what its snapshot reads
  re-copied, engines/snapshots.py); an algorithm with compiled tasks
  runs the whole task in the engine's compiled loop (engines/compiled.py);
- `publisher` (the coordinator applies): the worker reads a whole version (seqlock) and sends its
  update to the coordinator;
- `replica` (threads on several devices): the worker reads its own copy, first applying the deltas
  the coordinator sent it.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import time
import traceback
from typing import Any

import torch

from asyncopt.engines import compiled
from asyncopt.engines.base import blas_threads

POLL_SECONDS = 0.2


class Replica:
    """A worker's own copy of the parameters (on its device), kept current from an inbox of deltas."""

    def __init__(self, algo, params, device):
        self.algo = algo.to(device)
        self.params = params.to(device, copy=True)
        self.device = device
        self.inbox: queue.Queue = queue.Queue()
        self.version = 0  # updates applied to this replica

    def catch_up(self):
        while True:
            try:
                update, staleness = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.algo.apply(self.params, self.algo.update_to(update, self.device), staleness)
            self.version += 1


@dataclasses.dataclass
class WorkerLink:
    """What a worker is given besides the algorithm and the parameters (picklable for spawning)."""

    tasks: Any  # queue of Task (None: stop)
    results: Any  # queue of ("ready" | "ok" | "applied" | "error", worker, ...)
    stop: Any  # event
    threads: int  # torch threads of this worker
    to_numpy: bool  # send updates as numpy (across processes)
    servers: Any = None  # ServerGroup
    publisher: Any = None  # PublishingServer
    replica: Replica | None = None


def worker_loop(worker: int, algo, params: torch.Tensor, link: WorkerLink) -> None:
    try:
        torch.set_num_threads(link.threads)
        if link.to_numpy:  # a worker process (a pool's: each job sets it): its BLAS (threads: ThreadTransport)
            blas_threads(link.threads)
        if link.replica is not None:
            algo, params = link.replica.algo, link.replica.params
        compiled_tasks = link.servers is not None and getattr(algo, "compiled_tasks", False)
        if compiled_tasks:  # load (or compile) what this worker runs before the clock of its first task
            compiled.warm(algo)
        elif hasattr(algo, "prepare"):
            algo.prepare()
        link.results.put(("ready", worker))
        while True:
            t0 = time.perf_counter()
            try:
                task = link.tasks.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if link.stop.is_set():
                    return
                continue
            if task is None:
                return
            t1 = time.perf_counter()
            if link.servers is not None:
                if compiled_tasks:
                    stalenesses, samples = compiled.run_task(algo, params, task, link.servers.words)
                else:
                    if task.shared:
                        raise RuntimeError("a shared task needs an algorithm with compiled_tasks")
                    stalenesses, samples = [], 0
                    for batch, scale, key in task.batches():
                        read_version, seen = link.servers.read(params)
                        update = algo.compute(seen, torch.as_tensor(batch), scale, key)
                        algo.check(update, -1, -1)
                        stalenesses.append(link.servers.push(algo, params, update, read_version))
                        samples += len(batch)
                reads = link.servers.read_stats.take()
                link.results.put(("applied", worker, stalenesses, samples, time.perf_counter() - t1, t1 - t0, reads))
                continue
            (batch, scale, key) = next(task.batches())
            if link.replica is not None:
                link.replica.catch_up()
                read_version, seen = link.replica.version, params
            else:
                read_version, seen = link.publisher.read(params)
            update = algo.compute(seen, torch.as_tensor(batch), scale, key)
            payload = algo.update_to_numpy(update) if link.to_numpy else update
            link.results.put(("ok", worker, read_version, payload, len(batch), time.perf_counter() - t1, t1 - t0))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the caller
        # the exception itself travels when the algorithm declares it its own (e.g. TrainingDiverged)
        own = isinstance(exc, tuple(getattr(algo, "passthrough_errors", ())))
        link.results.put(("error", worker, traceback.format_exc(), exc if own else None))


def process_main(worker: int, algo, params: torch.Tensor, link: WorkerLink) -> None:
    os.environ["OMP_NUM_THREADS"] = str(link.threads)
    worker_loop(worker, algo, params, link)
