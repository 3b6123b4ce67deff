"""Staleness in the compiled task loop comes from the servers' clocks (engines/compiled.py).

Toy kernels stand in for an algorithm: the worker kernel plays "other workers" by ticking server
clocks between the loop's read and its push, as a concurrent update would, so the staleness the
loop measures is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from asyncopt.engines import atomics, compiled
from asyncopt.engines.base import Task


@njit(nogil=True, inline="always")
def _toy_worker_step(w, batch, key):
    """Ticks every server's clock `others[key]` times (that many concurrent full-reach updates)."""
    sync, others, n_servers = w
    for b in range(n_servers):
        sync[atomics.lock_word(b) + atomics.CLOCK_OFFSET] += others[key]
    return 0, key


@njit(nogil=True, inline="always")
def _toy_route(s, update, staleness):
    """Every server, with the staleness as the step (recorded by the server kernel)."""
    n_servers = s[0].shape[0]
    return 0, n_servers - 1, n_servers - 1, float(staleness)


@njit(nogil=True, inline="always")
def _toy_server_apply(s, server, update, step):
    s[0][server] += step


class _ToyAlgo:
    compiled_tasks = True

    def __init__(self, n_servers, others, sync):
        self.n_locks = self.servers_per_update = n_servers
        self.others, self.sync = others, sync
        self.received = np.zeros(n_servers)

    def task_kernels(self):
        return _toy_worker_step, _toy_route, _toy_server_apply

    def task_args(self, params, task):
        return (self.sync, self.others, self.n_locks), (self.received,)


@pytest.mark.parametrize("mode", ["clocks", "version"])
def test_staleness_counts_the_updates_the_servers_applied_since_the_read(mode, monkeypatch):
    monkeypatch.setenv("ASYNCOPT_STALENESS", mode)
    n_servers = 3
    others = np.array([0, 2, 5, 1], dtype=np.int64)  # concurrent updates during each batch's step
    sync = atomics.new_sync(n_servers).numpy()
    algo = _ToyAlgo(n_servers, others, sync)
    keys = np.arange(4, dtype=np.int64)
    task = Task(np.arange(4, dtype=np.int64), np.ones(4, dtype=np.int64), keys, 1)
    stalenesses, samples = compiled.run_task(algo, None, task, sync)
    clocks = compiled.server_clocks(sync, n_servers)
    assert clocks == [int(others.sum()) + 4] * n_servers  # the others' ticks and this task's 4 updates
    assert samples == 4 and all(sync[atomics.lock_word(b)] == 0 for b in range(n_servers))
    if mode == "clocks":
        assert stalenesses.tolist() == others.tolist()  # exactly the updates that came in between
        assert sync[atomics.VERSION_WORD] == 0  # no shared word written per update
        assert algo.received.tolist() == [float(others.sum())] * n_servers  # each got the step of its staleness
    else:  # the version word sees only this task's own updates (the toy's "others" tick clocks only)
        assert stalenesses.tolist() == [0, 0, 0, 0] and sync[atomics.VERSION_WORD] == 4
