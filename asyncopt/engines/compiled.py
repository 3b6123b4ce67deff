"""The compiled task loop of the shared-memory transports (threads and processes, servers in the workers).

A worker given a task runs all its batches in one compiled call: per batch it reads the parameters
lock-free and computes an update with the algorithm's worker kernel, then, for each server the
update goes to, takes that server's spinlock (engines/atomics.py), applies the server kernel,
ticks the server's clock and releases; then it counts the update in the version word that
staleness is measured against (or, with ASYNCOPT_STALENESS=clocks, staleness comes from the
servers' clocks: slower on this machine, results/clocks.md). The loop, the locks, the clocks and
the cursor of shared tasks are the engine's; the algorithm supplies three pure numba kernels
(`TaskKernels`) and their arguments.

numba caches nothing that takes a compiled function as an argument or closes over one (the cache
key of a closure pickles its cells, which differ in every process), so the loop is specialised
by binding the kernels as globals of a copy of `_task_loop` under a name derived from the
kernels and the stamps of their package's source files: one cache entry per algorithm, reused by
every process, invalidated when any of those files changes.
"""

from __future__ import annotations

import hashlib
import os
import types

import numpy as np
from numba import njit

from asyncopt.engines import atomics
from asyncopt.engines.base import Task, TaskKernels

LOCK_SPINS = 2**32  # a spinlock try is ~10-50 ns: over a minute before a lock is declared lost
TASK_DONE, LOCK_TIMEOUT = 0, -1  # loop statuses; a worker kernel's non-zero status stops the task too

# bound per algorithm by `_runner` (these placeholders are never called)
worker_step = route = server_apply = None


def _task_loop(sync, rows, sizes, keys, claim, stalenesses, max_spins, n_servers, ticks_per_update, worker, server):
    """The task's batches (rows cut by sizes, one key each); with `claim` the task is shared by
    every worker, each taking the next batch from the cursor word until none is left. Writes the
    staleness of each batch applied here (others keep theirs) and returns (status, batches applied
    here, detail): a worker kernel's status stops before its batch is applied; LOCK_TIMEOUT (detail:
    the server) when a lock stayed taken for max_spins tries.

    Staleness is the updates applied since the read. ticks_per_update = 0 (the default) counts them
    in the shared version word (one atomic add per update). ticks_per_update > 0 counts them from
    the servers' clocks: the ticks of all n_servers clocks since the read over the ticks one update
    makes, rounded up (an update with a part applied after the read counts as missed whole).
    Measured (benchmarks/results/clocks.md), the clocks were 4-16% slower on 2 cores: 2 x n_servers
    loads of contended lines per update cost more than one atomic add."""
    n_batches = sizes.shape[0]
    starts = np.zeros(n_batches + 1, dtype=np.int64)
    for t in range(n_batches):
        starts[t + 1] = starts[t] + sizes[t]
    seen = np.zeros(max(n_servers, 1), dtype=np.int64)
    targets = np.empty(n_servers + 1, dtype=np.int64)  # (block servers and the intercept's: at most n_servers)
    applied, t = 0, -1
    while True:
        t = atomics.fetch_add(sync, atomics.CURSOR_WORD, 1) if claim else t + 1
        if t >= n_batches:
            break
        if ticks_per_update > 0:
            for b in range(n_servers):
                seen[b] = atomics.load(sync, atomics.lock_word(b) + atomics.CLOCK_OFFSET)
        else:
            seen[0] = atomics.load(sync, atomics.VERSION_WORD)
        status, update = worker_step(worker, rows[starts[t] : starts[t + 1]], keys[t])  # noqa: F821
        if status != 0:
            return status, applied, 0
        if ticks_per_update > 0:
            ticks = 0
            for b in range(n_servers):
                ticks += atomics.load(sync, atomics.lock_word(b) + atomics.CLOCK_OFFSET) - seen[b]
            staleness = (ticks + ticks_per_update - 1) // ticks_per_update  # a part missed: a whole update
        else:
            staleness = atomics.load(sync, atomics.VERSION_WORD) - seen[0]
        first, stop, extra, step = route(server, update, staleness)  # noqa: F821
        # the servers the update goes to, taken in whichever order their locks come free: a worker
        # finding one server busy applies to another meanwhile (waiting for them in a fixed order,
        # 2 workers on news20's full push spun on a lock in 28% of their updates)
        left = 0
        for b in range(first, stop):
            targets[left] = b
            left += 1
        if extra >= 0:
            targets[left] = extra
            left += 1
        spins = 0
        while left > 0:
            taken = -1
            for i in range(left):
                word = atomics.lock_word(targets[i])
                if atomics.load(sync, word) == 0 and atomics.compare_and_swap(sync, word, 0, 1) == 0:
                    taken = i
                    break
            if taken < 0:
                spins += 1
                if spins >= max_spins:
                    return LOCK_TIMEOUT, applied, targets[0]
                continue
            target = targets[taken]
            word = atomics.lock_word(target)
            server_apply(server, target, update, step)  # noqa: F821
            sync[word + atomics.CLOCK_OFFSET] += 1  # the server's clock, under its lock
            atomics.release(sync, word)
            left -= 1
            targets[taken] = targets[left]  # (order among the rest does not matter)
        if ticks_per_update == 0:
            atomics.fetch_add(sync, atomics.VERSION_WORD, 1)
        stalenesses[t] = staleness
        applied += 1
    return TASK_DONE, applied, 0


# The A/B switch of benchmarks/bench_clocks.py: ASYNCOPT_STALENESS=clocks measures staleness from
# the servers' clocks (read where a worker runs its task, so it crosses into spawned processes).
def staleness_from_clocks() -> bool:
    return os.environ.get("ASYNCOPT_STALENESS", "version") == "clocks"


_RUNNERS: dict = {}


def cache_tag(kernels) -> str:
    """The kernels' names and the stamp of every source file in their folders: a kernel may call
    (and inline) code of a sibling module, and numba checks only the loop's own file."""
    names = [f"{k.py_func.__module__}.{k.py_func.__qualname__}" for k in kernels]
    folders = sorted({os.path.dirname(os.path.abspath(k.py_func.__code__.co_filename)) for k in kernels})
    stamps = []
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                stamps.append(f"{folder}/{name}:{st.st_mtime_ns}:{st.st_size}")
    return hashlib.blake2b("|".join(names + stamps).encode(), digest_size=8).hexdigest()


def _runner(kernels: TaskKernels):
    runner = _RUNNERS.get(kernels)
    if runner is None:
        tag = cache_tag(kernels)
        scope = dict(_task_loop.__globals__)
        scope.update(worker_step=kernels.worker_step, route=kernels.route, server_apply=kernels.server_apply)
        loop = types.FunctionType(_task_loop.__code__, scope, f"_task_loop_{tag}")
        loop.__qualname__ = loop.__name__  # numba names the cache file after it
        runner = _RUNNERS[kernels] = njit(cache=True, nogil=True)(loop)
    return runner


def run_task(algo, params, task: Task, sync: np.ndarray) -> tuple[np.ndarray, int]:
    """Run `task` here, the servers' rule applied under their spinlocks in `sync` (a worker of the
    servers-in-workers mode). Returns (the stalenesses of the updates applied here, their samples)."""
    if len(sync) < atomics.lock_word(algo.n_locks):  # (the kernel does not check bounds)
        raise ValueError(f"sync has {len(sync)} words: new_sync({algo.n_locks}) has the spinlocks needed")
    worker, server = algo.task_args(params, task)
    stalenesses = np.full(len(task.sizes), -1, dtype=np.int64)  # -1: a batch another worker took
    per_update = algo.servers_per_update if staleness_from_clocks() else 0
    status, done, detail = _runner(TaskKernels(*algo.task_kernels()))(
        sync, task.rows, task.sizes, task.keys, task.shared, stalenesses, LOCK_SPINS, algo.n_locks, per_update,
        worker, server,
    )  # fmt: skip
    if status == LOCK_TIMEOUT:
        raise RuntimeError(
            f"parameter server {detail}'s lock stayed taken for {LOCK_SPINS:,} tries (after {done} of this "
            "task's updates): a worker died or stalled while applying an update"
        )
    if status != TASK_DONE:
        algo.task_failed(int(status))  # raises the algorithm's error (e.g. TrainingDiverged)
        raise RuntimeError(f"the worker kernel stopped with status {status}")
    mine = stalenesses >= 0
    return stalenesses[mine], int(task.sizes[mine].sum())


def warm(algo) -> None:
    """Load (or compile) the loop for `algo` on a task of no batches (nothing shared changes)."""
    empty = np.zeros(0, dtype=np.int64)
    run_task(algo, algo.init_params(), Task(empty, empty, empty, 1), atomics.new_sync(algo.n_locks).numpy())


def server_clocks(sync: np.ndarray, n_servers: int) -> list[int]:
    """Updates each server has applied (its clock)."""
    return [int(sync[atomics.lock_word(b) + atomics.CLOCK_OFFSET]) for b in range(n_servers)]
