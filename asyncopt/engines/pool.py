"""Worker processes kept alive between fits, so that a second fit with backend="processes" does not
pay the spawn (a fresh process imports torch and the package: seconds on this machine).

A `WorkerPool` owns spawned processes and the queues, event and locks they inherited at spawn (a
multiprocessing queue or lock cannot travel in a message later). An idle pool process waits on its
own job queue; a fit leases k processes and gives each a job (its worker index, the algorithm, the
parameters, its link: a handover.PackedJob, shared memory by handle, nothing copied), and the process runs the
ordinary worker loop on the pool's task and result queues. At the end of a clean run the
coordinator sends one stop sentinel per worker and waits until each reports idle; then every task
was answered and no sentinel is left over, so the next fit starts from empty queues. A run that
ends any other way (an error, a dead worker, Ctrl-C) terminates the pool: the next fit spawns a
fresh one, never reusing processes in an unknown state.

Locks: a `ServerGroup` needs one lock per parameter server and a version lock. The pool creates
`POOL_LOCKS` at spawn, and a lease hands out `PooledLock`s, which pickle as their index and are
resolved to the inherited lock in the worker. A run that needs more locks than that (a ProxSGD
model of more than POOL_LOCKS - 1 blocks) gets freshly spawned processes instead of the pool.

The pool grows to the largest worker count asked for; idle processes hold little besides the
imported libraries. `shutdown()` (also `asyncopt.shutdown_worker_pool()`, and at exit) stops them.
"""

from __future__ import annotations

import atexit
import dataclasses
import queue
import signal
import threading
import time
import traceback

POOL_LOCKS = 128
IDLE_TIMEOUT = 10.0  # seconds a worker may take to report idle after its stop sentinel

_CHILD_LOCKS: list = []  # in a pool process: the locks it inherited, by index


class PooledLock:
    """One of the pool's locks; pickles as its index (the worker resolves it to its inherited lock)."""

    def __init__(self, index: int, lock):
        self.index, self._lock = index, lock

    def acquire(self, *args, **kwargs):
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def __reduce__(self):
        return (_child_lock, (self.index,))


def _child_lock(index: int) -> PooledLock:
    return PooledLock(index, _CHILD_LOCKS[index])


def pool_main(slot: int, jobs, tasks, results, stop, locks) -> None:
    """A pool process: run one worker job after another until a None job. Job `slot` is always
    worker `slot` of its run. Ctrl-C in a terminal reaches the whole process group: the pool
    ignores it, and the coordinator (which turns it into a clean stop) ends the workers."""
    from asyncopt.engines.worker import worker_loop

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CHILD_LOCKS[:] = locks
    while True:
        try:
            job = jobs.get()
            job = job if job is None else job.open()  # (a handover.PackedJob)
        except Exception:  # noqa: BLE001 - e.g. a kernel's module this process cannot import
            results.put(("error", slot, traceback.format_exc(), None))
            continue
        if job is None:
            return
        worker, algo, params, link = job
        link = dataclasses.replace(link, tasks=tasks, results=results, stop=stop)
        worker_loop(worker, algo, params, link)
        del job, algo, params, link  # release the fit's shared memory before waiting
        results.put(("idle", worker))


class WorkerPool:
    def __init__(self, ctx):
        self.ctx = ctx
        self.tasks, self.results, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.locks = [ctx.Lock() for _ in range(POOL_LOCKS)]
        self.processes: list = []
        self.jobs: list = []
        self.leased = False

    def grow(self, size: int) -> None:
        from asyncopt.engines.base import WORKER_NAME

        while len(self.processes) < size:
            slot = len(self.processes)
            jobs = self.ctx.SimpleQueue()
            p = self.ctx.Process(
                target=pool_main,
                args=(slot, jobs, self.tasks, self.results, self.stop, self.locks),
                daemon=True,
                name=f"{WORKER_NAME}pool{slot}",
            )
            p.start()
            self.processes.append(p)
            self.jobs.append(jobs)

    def alive(self) -> bool:
        return all(p.exitcode is None for p in self.processes)

    def release(self, n_workers: int) -> bool:
        """After a clean run: one stop sentinel per worker, then wait until each is idle again.
        Returns whether the pool is reusable (otherwise it was terminated)."""
        for _ in range(n_workers):
            self.tasks.put(None)
        idle, deadline = 0, time.monotonic() + IDLE_TIMEOUT
        while idle < n_workers:
            try:
                msg = self.results.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if msg[0] != "idle":
                break
            idle += 1
        if idle == n_workers and self.alive():
            self.leased = False
            return True
        self.terminate()
        return False

    def terminate(self) -> None:
        self.stop.set()
        for p in self.processes:
            if p.exitcode is None:
                p.terminate()
        for p in self.processes:
            p.join(timeout=5.0)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.processes = []
        global _POOL
        with _GUARD:
            if _POOL is self:
                _POOL = None

    def close(self) -> None:
        """Stop idle processes gracefully (a None job each), then terminate what is left."""
        for jobs in self.jobs:
            try:
                jobs.put(None)
            except (OSError, ValueError):
                pass
        for p in self.processes:
            p.join(timeout=2.0)
        self.terminate()


_POOL: WorkerPool | None = None
_GUARD = threading.RLock()


def lease(ctx, n_workers: int, n_locks: int) -> WorkerPool | None:
    """The process pool grown to `n_workers`, leased to one run; None when it cannot be used
    (leased by a concurrent fit in this process, or more locks needed than it has)."""
    global _POOL
    if n_locks > POOL_LOCKS:
        return None
    with _GUARD:
        pool = _POOL
        if pool is not None and (pool.leased or not pool.alive()):
            if pool.leased:
                return None
            _POOL = None
            pool.terminate()
            pool = None
        if pool is None:
            pool = _POOL = WorkerPool(ctx)
        pool.leased = True
    try:
        pool.grow(n_workers)
    except BaseException:
        pool.terminate()
        raise
    return pool


def prestart(ctx, n_workers: int) -> None:
    """Spawn the pool's missing processes now, when a processes fit begins: they import torch and
    the package (seconds, the first fit of a session) while the fit's setup runs, instead of after
    it. Nothing happens when the pool is leased (a concurrent fit) or already that large; a pool
    with a dead process is replaced, as `lease` would. The processes stay in the pool whatever the
    fit does next."""
    global _POOL
    with _GUARD:
        pool = _POOL
        if pool is not None and pool.leased:
            return
        if pool is not None and not pool.alive():
            _POOL = None
            pool.terminate()
            pool = None
        if pool is None:
            pool = _POOL = WorkerPool(ctx)
        try:
            pool.grow(n_workers)
        except BaseException:
            pool.terminate()
            raise


def current_pool() -> WorkerPool | None:
    return _POOL


def shutdown() -> None:
    """Stop the idle worker processes kept for the next fit (they are started again when needed)."""
    pool = _POOL
    if pool is not None and not pool.leased:
        pool.close()


shutdown_worker_pool = shutdown  # (its public name: asyncopt.shutdown_worker_pool)
atexit.register(shutdown)
