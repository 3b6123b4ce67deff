"""Transports: how tasks, updates and the shared parameters move between the coordinator and its
workers, and how workers start, are watched and stop.

- `ThreadTransport`: worker threads in this process; queues in memory, the parameters and the
  servers' words are the same tensors for everyone;
- `ProcessTransport`: spawned worker processes, kept between fits in a pool (engines/pool.py); the
  read-only data, the parameters and the servers' words are moved to shared memory once (mapped by
  every worker, never copied per step), tasks and replies travel through multiprocessing queues (a
  task is three small arrays).

A transport for a cluster (Ray actors, issue 12) offers the same: start workers on a link, put
tasks, get the next reply with liveness checks, shut down.
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np
import torch

from asyncopt.engines import handover, pool
from asyncopt.engines.base import (
    UNGUARDED_MAIN_EXIT,
    WORKER_NAME,
    UnguardedMainScript,
    WorkerFailed,
    blas_threads,
    exit_if_reimporting_main,
    unguarded_message,
)
from asyncopt.engines.pool import PooledLock
from asyncopt.engines.worker import POLL_SECONDS, WorkerLink, process_main, worker_loop


class ThreadTransport:
    kind = "threads"

    def __init__(self):
        self.tasks, self.results, self.stop = queue.Queue(), queue.Queue(), threading.Event()
        self.workers: list = []
        self.ready = False
        self._saved_threads = torch.get_num_threads()
        self._blas = None  # the BLAS thread limit while the workers run (blas_threads)

    def new_lock(self):
        return threading.Lock()

    def share(self, algo, params, *words) -> None:
        """Nothing to move: threads share this process's memory."""

    def link(self, threads: int, **placement) -> WorkerLink:
        return WorkerLink(self.tasks, self.results, self.stop, threads, False, **placement)

    def start(self, algo, params, links: list[WorkerLink]) -> None:
        if links and self._blas is None:  # (one process-wide limit: each worker's threads)
            self._blas = blas_threads(links[0].threads)
        for i, link in enumerate(links):
            w = threading.Thread(
                target=worker_loop, args=(i, algo, params, link), daemon=True, name=f"{WORKER_NAME}{i}"
            )
            self.workers.append(w)
            w.start()

    def dead(self) -> str | None:
        for i, w in enumerate(self.workers):
            if not w.is_alive():
                return f"worker {i} (threads) stopped unexpectedly"
        return None

    def next_result(self, timeout: float):
        """The next reply from any worker; raises when one failed, died, or all went silent."""
        waited = 0.0
        while True:
            try:
                msg = self.results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                waited += POLL_SECONDS
                dead = self.dead()
                if dead is not None:
                    raise WorkerFailed(dead) from None
                if waited > timeout:
                    raise WorkerFailed(f"no update from any worker for {timeout:.0f} s") from None
                continue
            if msg[0] == "error":
                if msg[3] is not None:  # the algorithm's own error: raised as itself, with the worker's traceback
                    msg[3].add_note(f"raised in worker {msg[1]} ({self.kind}):\n{msg[2]}")
                    raise msg[3]
                raise WorkerFailed(f"worker {msg[1]} ({self.kind}) raised:\n{msg[2]}")
            return msg

    def shutdown(self, clean: bool = False) -> None:
        if not self.workers:
            return
        self.stop.set()
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            self._join(w)
        self._finish()

    def _join(self, worker) -> None:
        worker.join(timeout=5.0)

    def _finish(self) -> None:
        torch.set_num_threads(self._saved_threads)
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None


def start_worker_pool(n_workers: int) -> None:
    """Spawn the reusable pool's worker processes now and return at once (public as
    asyncopt.start_worker_pool). Each imports torch and the package (seconds on a small machine)
    while the caller goes on, e.g. loading its data; the next processes fit of up to `n_workers`
    workers then leases them. Call it under `if __name__ == "__main__":` (spawned processes
    re-import the script)."""
    if isinstance(n_workers, bool) or not isinstance(n_workers, int | np.integer) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    import torch.multiprocessing as mp

    exit_if_reimporting_main()  # (a worker importing an unguarded script must not spawn more)
    pool.prestart(mp.get_context("spawn"), int(n_workers))


def prestart_processes(n_workers: int) -> None:
    """Spawn the reusable pool's processes as a processes fit begins, so that they import while its
    setup runs (pool.prestart); the fit's transport then leases them as usual. Only where a core is
    free for each beside the setup's threads: on 2 cores the imports slowed the setup more
    than they saved (EigenPro on MNIST 10k 0.76x the fit's speed; benchmarks/results/first_fit.md)."""
    import torch.multiprocessing as mp

    exit_if_reimporting_main()  # (a worker importing an unguarded script must not spawn more)
    if idle_cores() >= n_workers:
        pool.prestart(mp.get_context("spawn"), n_workers)


SETUP_THREADS = 2  # ProxSGD's setup: the main thread and the one building X^T (proxsgd/data.py)


def idle_cores() -> int:
    """Cores this process may use beyond the threads its setup runs on (torch's, and at least two)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores - max(torch.get_num_threads(), SETUP_THREADS)


class ProcessTransport(ThreadTransport):
    """Spawned worker processes: those of the reusable pool (engines/pool.py) when it can serve the
    run (`reuse=True`, no concurrent fit holding it, `n_locks` within its locks), else fresh ones."""

    kind = "processes"

    def __init__(self, n_workers: int = 1, n_locks: int = 0, reuse: bool = True):
        import torch.multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.workers = []
        self.ready = False  # every worker reported ready (set by the coordinator)
        exit_if_reimporting_main()  # (a worker of an unguarded script that fits at import: it must not start more)
        self.pool = pool.lease(self.ctx, n_workers, n_locks) if reuse else None
        if self.pool is not None:
            self.tasks, self.results, self.stop = self.pool.tasks, self.pool.results, self.pool.stop
            self.workers = self.pool.processes[:n_workers]
            self._locks_given = 0
        else:
            self.tasks, self.results, self.stop = self.ctx.Queue(), self.ctx.Queue(), self.ctx.Event()

    def new_lock(self):
        if self.pool is None:
            return self.ctx.Lock()
        index = self._locks_given
        self._locks_given += 1
        return PooledLock(index, self.pool.locks[index])

    def share(self, algo, params, *words) -> None:
        """Read-only data, the parameters and the servers' words to shared memory, once: for pool
        processes each group packed into one block (handover.py), which travels in one piece."""
        pack = handover.pack_shared if self.pool is not None else handover.share_each
        algo.share_memory(pack)
        pack([params])
        for w in words:
            if w is not None:
                w.share_memory_(pack)

    def link(self, threads: int, **placement) -> WorkerLink:
        if self.pool is not None:  # (a pool process links its inherited queues itself)
            return WorkerLink(None, None, None, threads, True, **placement)
        return WorkerLink(self.tasks, self.results, self.stop, threads, True, **placement)

    def start(self, algo, params, links: list[WorkerLink]) -> None:
        try:
            if self.pool is not None:
                for i, link in enumerate(links):
                    self.pool.jobs[i].put(handover.PackedJob((i, algo, params, link)))
                return
            for i, link in enumerate(links):
                w = self.ctx.Process(
                    target=process_main, args=(i, algo, params, link), daemon=True, name=f"{WORKER_NAME}{i}"
                )
                w.start()
                self.workers.append(w)
        except Exception as exc:  # typically pickling the algorithm for a spawned process
            raise WorkerFailed(
                f"could not start a processes worker: {type(exc).__name__}: {exc}. The processes "
                "backend pickles the algorithm: kernel callables must be importable module-level "
                "functions, not lambdas or closures (or use backend='threads')"
            ) from exc

    def dead(self) -> str | None:
        for i, w in enumerate(self.workers):
            if w.exitcode == UNGUARDED_MAIN_EXIT and not self.ready:
                raise UnguardedMainScript(unguarded_message())
            if w.exitcode is not None:
                hint = (
                    ""
                    if self.ready
                    else " before it was ready. A spawned worker imports the main script again: a script that "
                    "trains with backend='processes' must do so under `if __name__ == \"__main__\":` "
                    "(see its traceback above)"
                )
                return f"worker {i} (processes) stopped unexpectedly with exit code {w.exitcode}{hint}"
        return None

    def shutdown(self, clean: bool = False) -> None:
        """Stop the workers. Pool processes go back to the pool after a clean run (every task
        answered); after anything else the pool is terminated."""
        if self.pool is None:
            super().shutdown()
            return
        pool_, self.pool = self.pool, None
        if clean and self.ready:
            pool_.release(len(self.workers))  # (terminates the pool itself when a worker does not come back)
        else:
            pool_.terminate()

    def _join(self, worker) -> None:
        worker.join(timeout=5.0)
        if worker.is_alive():
            worker.terminate()
            worker.join(timeout=5.0)

    def _finish(self) -> None:
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()
