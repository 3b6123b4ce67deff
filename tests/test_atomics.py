"""The shared-memory words compiled tasks synchronize through (engines/atomics.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from numba import njit

from asyncopt.engines import atomics


@njit(nogil=True)
def _count_under_lock(sync, rounds):
    """Each round: count atomically, and count again with a plain += under the spinlock."""
    for _ in range(rounds):
        atomics.fetch_add(sync, atomics.VERSION_WORD, 1)
        if not atomics.acquire(sync, atomics.lock_word(0), 1 << 40):
            return False
        sync[atomics.lock_word(1) + 1] += 1  # a non-atomic read-modify-write: only the lock protects it
        atomics.release(sync, atomics.lock_word(0))
    return True


def test_two_threads_lose_no_count_and_the_spinlock_excludes():
    sync = atomics.new_sync(2).numpy()
    _count_under_lock(sync, 1)  # compile outside the threads
    sync[:] = 0
    rounds = 2_000_000  # long enough that the threads overlap (without the lock, counts are lost)
    threads = [threading.Thread(target=_count_under_lock, args=(sync, rounds)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sync[atomics.VERSION_WORD] == 2 * rounds
    assert sync[atomics.lock_word(1) + 1] == 2 * rounds
    assert sync[atomics.lock_word(0)] == 0  # released


def test_compare_and_swap_returns_the_old_value_and_swaps_only_on_a_match():
    @njit
    def cas(sync, expected, new):
        return atomics.compare_and_swap(sync, 3, expected, new)

    sync = np.zeros(8, dtype=np.int64)
    assert cas(sync, 1, 5) == 0 and sync[3] == 0
    assert cas(sync, 0, 5) == 0 and sync[3] == 5


def test_a_lock_held_by_a_dead_worker_times_out_instead_of_hanging():
    sync = atomics.new_sync(1).numpy()
    sync[atomics.lock_word(0)] = 1
    assert not atomics.acquire(sync, atomics.lock_word(0), 1000)


def test_a_compiled_task_reports_a_lock_never_released(monkeypatch):
    import scipy.sparse as sp

    from asyncopt.engines import compiled
    from asyncopt.engines.base import Task
    from asyncopt.proxsgd import algorithm
    from asyncopt.proxsgd.data import LinearData
    from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
    from asyncopt.proxsgd.problem import LinearProblem, block_bounds
    from asyncopt.proxsgd.prox import make_penalty

    rng = np.random.default_rng(0)
    X = sp.random(20, 6, density=0.5, random_state=0, format="csr")
    problem = LinearProblem(
        LinearData.from_array(X, rng.choice([-1.0, 1.0], size=(20, 1))),
        LOSSES["logistic"],
        make_penalty("l1", 0.01),
        NonconvexRegularizer(0.0),
        False,
        block_bounds(6, 1),
    )
    algo = algorithm.ProxSGDAlgorithm(problem, 4, 0.1)
    assert algo.fused
    sync = atomics.new_sync(algo.n_locks).numpy()
    sync[atomics.lock_word(0)] = 1  # taken, never to be released
    monkeypatch.setattr(compiled, "LOCK_SPINS", 1000)
    task = Task(np.arange(8), np.array([4, 4]), np.array([0, 1]), 4)
    with pytest.raises(RuntimeError, match="lock stayed taken for 1,000 tries"):
        compiled.run_task(algo, algo.init_params(), task, sync)


def test_the_task_loops_cache_tag_changes_with_a_sibling_source_file(tmp_path, monkeypatch):
    """The compiled loop is cached under a tag of its kernels and their folder's files: editing a
    module the kernels call (not the kernels' own file) gives a new tag, so no stale loop is used."""
    import importlib
    import os
    import sys

    from asyncopt.engines import compiled

    pkg = tmp_path / "kernels_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("from numba import njit\n\n@njit\ndef twice(x):\n    return 2 * x\n")
    (pkg / "kern.py").write_text(
        "from numba import njit\nfrom kernels_pkg.helper import twice\n\n"
        "@njit\ndef a(w, batch, key):\n    return 0, twice(key)\n\n"
        "@njit\ndef b(s, update, staleness):\n    return 0, 0, -1, 1.0\n\n"
        "@njit\ndef c(s, server, update, step):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    kern = importlib.import_module("kernels_pkg.kern")
    kernels = (kern.a, kern.b, kern.c)
    before = compiled.cache_tag(kernels)
    assert compiled.cache_tag(kernels) == before  # stable
    helper = pkg / "helper.py"
    helper.write_text(helper.read_text().replace("2 * x", "3 * x"))
    os.utime(helper, ns=(0, os.stat(helper).st_mtime_ns + 10**9))
    assert compiled.cache_tag(kernels) != before
    sys.modules.pop("kernels_pkg.kern", None)
    sys.modules.pop("kernels_pkg.helper", None)
    sys.modules.pop("kernels_pkg", None)
