"""The processes backend's reusable worker pool (engines/pool.py): reuse, growth, and that a run
ending badly never leaves its processes to the next fit."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from test_engines import Counting, run

import asyncopt
from asyncopt import EigenProClassifier, ProxSGDClassifier
from asyncopt.engines import WorkerEngine, WorkerFailed, pool, transports


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), (y % 2)


def pids():
    current = pool.current_pool()
    return [] if current is None else [p.pid for p in current.processes]


def test_a_second_fit_reuses_the_worker_processes(digits):
    X, y = digits
    asyncopt.shutdown_worker_pool()
    first = ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, max_epochs=5, random_state=0)
    first.fit(X, y)
    started = pids()
    assert len(started) == 2 and not pool.current_pool().leased
    second = ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, max_epochs=5, random_state=0)
    second.fit(X, y)
    assert pids() == started  # the same processes, not new ones
    assert second.score(X, y) > 0.85 and abs(second.score(X, y) - first.score(X, y)) < 0.05
    # a different algorithm on the same processes: EigenPro (its workers apply their own updates)
    ep = EigenProClassifier(backend="processes", n_workers=2, threads_per_worker=1, epochs=2, random_state=0)
    ep.fit(X[:600], y[:600])
    assert pids() == started and ep.score(X[:600], y[:600]) > 0.99


def test_the_pool_grows_to_the_workers_asked_for():
    asyncopt.shutdown_worker_pool()
    params, _, _ = run(WorkerEngine("processes", n_workers=1, threads_per_worker=1), Counting(), epochs=2)
    one = pids()
    params, _, _ = run(WorkerEngine("processes", n_workers=2, threads_per_worker=1), Counting(), epochs=2)
    assert torch.equal(params, torch.full_like(params, 2.0))  # every sample twice, nothing left over
    assert len(pids()) == 2 and pids()[0] == one[0]


def test_a_failed_run_does_not_hand_its_processes_to_the_next_fit():
    asyncopt.shutdown_worker_pool()
    run(WorkerEngine("processes", n_workers=2, threads_per_worker=1), Counting(), epochs=1)
    before = pids()
    with pytest.raises(WorkerFailed, match="worker exploded on purpose"):
        run(WorkerEngine("processes", n_workers=2, threads_per_worker=1), Counting(fail_at=20), epochs=5)
    assert pool.current_pool() is None  # terminated, not kept
    params, _, _ = run(WorkerEngine("processes", n_workers=2, threads_per_worker=1), Counting(), epochs=3)
    assert torch.equal(params, torch.full_like(params, 3.0))  # no stale task or sentinel from the failed run
    assert set(pids()).isdisjoint(before)


def test_more_servers_than_the_pools_locks_get_fresh_processes(digits, monkeypatch):
    X, y = digits
    asyncopt.shutdown_worker_pool()
    monkeypatch.setattr(transports, "idle_cores", lambda: 64)  # (the pool started beside the setup)
    leases, lease = [], pool.lease
    monkeypatch.setattr(pool, "lease", lambda *args: leases.append(lease(*args)) or leases[-1])
    clf = ProxSGDClassifier(
        backend="processes", n_workers=2, threads_per_worker=1, n_blocks=pool.POOL_LOCKS, max_epochs=2, random_state=0
    )
    clf.fit(X[:, :64].repeat(3, axis=1), y)  # 192 features: POOL_LOCKS blocks need one lock more than it has
    assert leases == [None] and clf.n_blocks_ == pool.POOL_LOCKS  # the pool refused the run: fresh processes
    assert not pool.current_pool().leased  # (the pool the fit started beside its setup stays idle for the next)


def test_reuse_can_be_turned_off():
    asyncopt.shutdown_worker_pool()
    params, _, _ = run(WorkerEngine("processes", n_workers=2, threads_per_worker=1, reuse_workers=False), Counting())
    assert pool.current_pool() is None and torch.equal(params, torch.full_like(params, 3.0))


@pytest.mark.parametrize("model", ["proxsgd", "eigenpro"])
def test_a_processes_fit_spawns_its_workers_before_its_setup(digits, monkeypatch, model):
    """The first processes fit of a session: the pool's processes are spawned as the fit begins, so
    that they import torch and the package while the setup (data conversion, power iteration,
    preconditioner) runs, and the fit then leases those same processes."""
    from asyncopt.estimators import eigenpro as eigenpro_estimator
    from asyncopt.estimators import proxsgd as proxsgd_estimator

    X, y = digits
    asyncopt.shutdown_worker_pool()
    monkeypatch.setattr(transports, "idle_cores", lambda: 64)  # (a machine with cores to spare)
    seen = []
    if model == "proxsgd":
        setup = proxsgd_estimator.LinearData.from_array
        monkeypatch.setattr(
            proxsgd_estimator.LinearData, "from_array", lambda *a, **k: seen.append(pids()) or setup(*a, **k)
        )
        est = ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, max_epochs=2, tol=None)
    else:
        setup = eigenpro_estimator.nystrom_preconditioner
        monkeypatch.setattr(
            eigenpro_estimator, "nystrom_preconditioner", lambda *a, **k: seen.append(pids()) or setup(*a, **k)
        )
        est = EigenProClassifier(backend="processes", n_workers=2, threads_per_worker=1, epochs=1)
    est.fit(X[:600], y[:600])
    assert len(seen) == 1 and len(seen[0]) == 2  # spawned before the setup ran
    assert pids() == seen[0]  # and the fit ran on them (they are back in the pool, not leased)
    assert not pool.current_pool().leased


def test_no_processes_are_spawned_before_the_setup_without_a_core_to_spare(digits, monkeypatch):
    """On a machine whose cores the setup's torch threads fill (this 2-core one), the imports would
    slow the setup more than they save: the workers spawn when the fit needs them."""
    X, y = digits
    asyncopt.shutdown_worker_pool()
    monkeypatch.setattr(transports, "idle_cores", lambda: 1)
    from asyncopt.estimators import proxsgd as proxsgd_estimator

    seen, setup = [], proxsgd_estimator.LinearData.from_array
    monkeypatch.setattr(
        proxsgd_estimator.LinearData, "from_array", lambda *a, **k: seen.append(pids()) or setup(*a, **k)
    )
    ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, max_epochs=2, tol=None).fit(X, y)
    assert seen == [[]] and len(pids()) == 2


def test_start_worker_pool_spawns_the_processes_the_next_fit_leases(digits):
    """asyncopt.start_worker_pool: the processes exist when it returns (importing in the background)
    and the next processes fit runs on them, spawning none of its own."""
    X, y = digits
    asyncopt.shutdown_worker_pool()
    asyncopt.start_worker_pool(2)
    started = pids()
    assert len(started) == 2 and all(p.is_alive() for p in pool.current_pool().processes)
    asyncopt.start_worker_pool(1)  # (already that large: nothing new)
    assert pids() == started
    est = ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, max_epochs=2, tol=None).fit(X, y)
    assert pids() == started and est.score(X, y) > 0.8


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_start_worker_pool_refuses_a_worker_count_that_is_not_a_positive_integer(bad):
    asyncopt.shutdown_worker_pool()
    with pytest.raises(ValueError, match="n_workers must be a positive integer"):
        asyncopt.start_worker_pool(bad)
    assert pool.current_pool() is None or not pool.current_pool().processes


@pytest.mark.parametrize("model, early", [("proxsgd", True), ("eigenpro", False)])
def test_a_processes_cli_fit_spawns_proxsgds_workers_before_reading_the_data(tmp_path, monkeypatch, model, early):
    """`asyncopt fit --backend processes`: ProxSGD's workers spawn before the file is read (their
    imports overlap the parsing); EigenPro's wait for the fit (imports beside its multi-threaded
    setup slowed it, benchmarks/results/first_fit.md)."""
    import asyncopt.readers
    from asyncopt.cli import main

    asyncopt.shutdown_worker_pool()
    seen, read = [], asyncopt.readers.read_data
    monkeypatch.setattr(asyncopt.readers, "read_data", lambda *a, **k: seen.append(pids()) or read(*a, **k))
    options = ["--max-epochs", "2"] if model == "proxsgd" else ["--epochs", "1"]
    argv = ["fit", "--model", model, "--data", "sklearn:digits", "--backend", "processes", "--n-workers", "2",
            "--threads-per-worker", "1", *options, "--output", str(tmp_path / "m.model"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert len(seen[0]) == (2 if early else 0)
    assert len(pids()) == 2  # the fit's workers, back in the pool


def test_start_worker_pool_replaces_a_pool_with_a_dead_process():
    asyncopt.shutdown_worker_pool()
    asyncopt.start_worker_pool(2)
    before = pool.current_pool()
    before.processes[0].kill()
    before.processes[0].join(timeout=10)
    asyncopt.start_worker_pool(2)
    after = pool.current_pool()
    assert after is not before and len(after.processes) == 2 and after.alive()
    assert not set(pids()) & {p.pid for p in before.processes}
