"""The intercept (row d of the parameters) has one owner, the intercept server (lock index n_blocks):
pushes to different blocks never read-modify-write row d concurrently under different locks."""

import threading

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from asyncopt.engines.servers import ServerGroup
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.data import LinearData
from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
from asyncopt.proxsgd.problem import LinearProblem, block_bounds
from asyncopt.proxsgd.prox import make_penalty

BARRIER_SECONDS = 1.0  # how long an apply of the intercept waits for a second one to have read row d


def small_problem(sparse=True, blocks=3, k=1, n=40, d=12, seed=0, fit_intercept=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5)
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, rng.choice([-1.0, 1.0], size=(n, k)))
    return LinearProblem(
        data, LOSSES["logistic"], make_penalty("l1", 0.02), NonconvexRegularizer(0.0), fit_intercept,
        block_bounds(d, blocks),
    )  # fmt: skip


def touches_intercept(part):
    return part.intercept is not None


@pytest.mark.parametrize("use_compiled", [True, False])
@pytest.mark.parametrize("vr", [False, True])
def test_two_block_pushes_never_lose_an_intercept_update(monkeypatch, use_compiled, vr):
    """Forces the interleaving: each apply of a part carrying the intercept reads the parameters, then
    waits (up to BARRIER_SECONDS) for a second such apply to have read them too, then writes back
    the rows it changed. With one owner lock for row d the second apply cannot start before the
    first wrote (the barrier times out, the applies serialize) and both steps add up; with row d
    under each block's own lock both reach the barrier and one intercept step is lost."""
    problem = small_problem()
    d = problem.data.d
    algo = ProxSGDAlgorithm(problem, 8, 0.5, "block", use_compiled=use_compiled, variance_reduction=vr)
    rng = np.random.default_rng(1)
    start = torch.tensor(rng.normal(size=(d + 1, 1)))
    if vr:
        algo.refresh_snapshot(start * 0.5)
    updates = [algo.compute(start, torch.as_tensor(rng.choice(40, 8, replace=False)), 1.0, key) for key in (0, 1)]
    assert [u.block for u in updates] == [0, 1] and all(u.intercept is not None for u in updates)

    expected = start.clone()  # the two updates one after the other (disjoint blocks, additive intercept)
    steps = []
    for u in updates:
        before = expected[d].clone()
        algo.apply(expected, u, 0)
        steps.append(before - expected[d])
    assert all(float(s.abs().max()) > 1e-6 for s in steps)  # both updates do move the intercept

    real_apply = algo.apply
    barrier = threading.Barrier(2)
    met = []

    def racy_apply(params, part, staleness=0):
        if not touches_intercept(part):
            return real_apply(params, part, staleness)
        read = params.clone()  # this server's read of the parameters, row d included
        try:
            barrier.wait(timeout=BARRIER_SECONDS)  # a second apply of the intercept has read them too
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        written = read.clone()
        real_apply(written, part, staleness)
        changed = (written != read).any(1)
        params[changed] = written[changed]  # the write of what was computed from the read

    monkeypatch.setattr(algo, "apply", racy_apply)
    params = start.clone()
    group = ServerGroup(algo, threading.Lock)  # as WorkerEngine's threads transport makes them
    errors = []

    def push(update):
        try:
            group.push(algo, params, update, 0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(u,)) for u in updates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert group.version == 2 and len(met) == 2
    assert group.clocks() == [1, 1, 0, 2]  # blocks 0 and 1 once each (of 3), the intercept server both
    np.testing.assert_allclose(params[d].numpy(), (start[d] - steps[0] - steps[1]).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(params.numpy(), expected.numpy(), rtol=0, atol=1e-12)
    assert not any(met)  # the second apply of row d never ran while the first was between read and write


@pytest.mark.parametrize("sparse, use_compiled, lazy", [(True, True, "off"), (True, True, "on"), (False, True, "off"),
                                                        (True, False, "off"), (False, False, "off")])  # fmt: skip
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
def test_server_parts_give_the_intercept_to_its_server_and_add_up_to_the_whole_update(push, vr, sparse, use_compiled,
                                                                                      lazy):  # fmt: skip
    problem = small_problem(sparse=sparse, blocks=3, k=2, seed=2)
    d, M = problem.data.d, problem.n_blocks

    def make():
        algo = ProxSGDAlgorithm(problem, 8, 0.5, push, use_compiled=use_compiled, variance_reduction=vr, lazy=lazy)
        if vr:
            algo.refresh_snapshot(start * 0.5)
        return algo

    rng = np.random.default_rng(3)
    start = torch.tensor(rng.normal(size=(d + 1, 2)))
    whole_algo, parts_algo = make(), make()  # (lazy updates keep per-block counts: one state each)
    assert whole_algo.n_locks == M + 1 and whole_algo.intercept_server == M
    assert whole_algo.lazy_active == (lazy == "on")
    whole, parted = start.clone(), start.clone()
    for key in range(4):  # (block pushes: blocks 0, 1, 2, 0)
        update = whole_algo.compute(whole, torch.as_tensor(rng.choice(40, 8, replace=False)), 1.0, key)
        assert update.intercept is not None
        parts = parts_algo.server_parts(update)
        servers = [server for server, _ in parts]
        assert servers == ([key % M] if push == "block" else list(range(M))) + [M]
        for server, part in parts:
            assert (part.intercept is not None) == (server == M)  # only the intercept server's part has it
            assert part.block == server
            if server == M:  # and it carries no coefficient entries
                assert part.values.shape[0] == 0 and (part.index is None or len(part.index) == 0)
                assert part.index is None if update.index is None else part.index is not None
        whole_algo.apply(whole, update, 1)
        for _, part in parts:
            parts_algo.apply(parted, part, 1)
        np.testing.assert_allclose(parted.numpy(), whole.numpy(), rtol=0, atol=1e-12)
    whole_algo.flush(whole)
    parts_algo.flush(parted)
    np.testing.assert_allclose(parted.numpy(), whole.numpy(), rtol=0, atol=1e-12)
    assert not torch.equal(whole[d], start[d])


@pytest.mark.parametrize("push", ["block", "full"])
def test_without_an_intercept_there_is_no_intercept_server(push):
    problem = small_problem(fit_intercept=False)
    algo = ProxSGDAlgorithm(problem, 8, 0.5, push)
    assert algo.n_locks == problem.n_blocks
    update = algo.compute(algo.init_params(), torch.arange(8), 1.0, 1)
    assert update.intercept is None
    assert all(server < problem.n_blocks and part.intercept is None for server, part in algo.server_parts(update))


def test_the_compiled_task_takes_the_intercept_servers_lock(monkeypatch):
    """The compiled task loop applies row d under lock_word(n_blocks): with that lock held it stops (after releasing
    the block's lock), and a sync without the intercept server's words is refused."""
    from asyncopt.engines import atomics, compiled
    from asyncopt.engines.base import Task

    problem = small_problem(blocks=2)
    algo = ProxSGDAlgorithm(problem, 4, 0.1)
    assert algo.fused and algo.n_locks == 3
    task = Task(np.arange(8), np.array([4, 4]), np.array([1, 0]), 4)
    with pytest.raises(ValueError, match="spinlocks"):
        compiled.run_task(algo, algo.init_params(), task, atomics.new_sync(problem.n_blocks).numpy())
    sync = atomics.new_sync(algo.n_locks).numpy()
    sync[atomics.lock_word(problem.n_blocks)] = 1  # the intercept server's lock, taken
    monkeypatch.setattr(compiled, "LOCK_SPINS", 1000)
    params = algo.init_params()
    with pytest.raises(RuntimeError, match=r"server 2's lock .*\(after 0 of this task's updates"):
        compiled.run_task(algo, params, task, sync)
    assert sync[atomics.lock_word(0)] == sync[atomics.lock_word(1)] == 0  # block 1's lock was released
    assert params[problem.data.d].abs().max() == 0 and params[:-1].abs().max() > 0  # block 1 applied, not row d
    assert sync[atomics.VERSION_WORD] == 0  # not counted


@pytest.mark.parametrize("vr", [False, True])
def test_two_threads_running_compiled_tasks_agree_with_serial_and_release_every_lock(vr):
    """The servers-in-workers threads run (the compiled task loop, 4 blocks and the intercept server) on a
    small sparse problem ends near the serial engine's objective, with every spinlock released."""
    from asyncopt.engines import Monitor, Schedule, SerialEngine, WorkerEngine, atomics, compiled

    n, d = 400, 60
    rng = np.random.default_rng(4)
    X = sp.random(n, d, density=0.1, random_state=4, format="csr")
    w = rng.normal(size=d) * (rng.random(d) < 0.3)
    y = np.where(X @ w + 0.5 + 0.05 * rng.normal(size=n) > 0, 1.0, -1.0).reshape(-1, 1)
    problem = LinearProblem(
        LinearData.from_array(X, y), LOSSES["logistic"], make_penalty("l1", 1e-3), NonconvexRegularizer(0.0), True,
        block_bounds(d, 4),
    )  # fmt: skip

    def run(engine):
        algo = ProxSGDAlgorithm(problem, 4, 0.5, "block", variance_reduction=vr)
        assert algo.compiled_tasks and algo.n_locks == 5
        if vr:
            algo.refresh_snapshot(algo.init_params())

        def refresh(params, samples):
            if vr:
                algo.refresh_snapshot(params)

        monitor = Monitor(lambda p, s, st, sec: problem.objective(p), None, None, refresh)
        params, telemetry = engine.run(algo, Schedule(n, 4, 15.0, 3), np.random.default_rng(0), monitor)
        return params, telemetry

    serial_params, serial_telemetry = run(SerialEngine())
    engine = WorkerEngine("threads", n_workers=2, threads_per_worker=1, servers_in_workers=True)
    params, telemetry = run(engine)
    f_serial, f_threads = problem.objective(serial_params), problem.objective(params)
    assert abs(f_threads - f_serial) / f_serial < 3e-3
    assert abs(float(params[d, 0] - serial_params[d, 0])) < 0.05  # the intercept too
    assert float(params[d, 0]) > 0.1  # (it was learned: the data's offset is +0.5)
    assert telemetry.updates == serial_telemetry.updates and all(w.steps > 0 for w in telemetry.workers)
    sync = engine._sync_words
    assert len(sync) == atomics.lock_word(5)  # 4 blocks' servers and the intercept server
    assert sync[atomics.VERSION_WORD] == telemetry.updates
    assert all(
        sync[atomics.lock_word(b)] == 0 for b in range(5)
    )  # every server lock released, the intercept's included
    clocks = compiled.server_clocks(sync, 5)
    assert sum(clocks[:4]) == clocks[4] == telemetry.updates  # a block each, and the intercept every time
