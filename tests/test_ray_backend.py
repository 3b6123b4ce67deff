"""backend="ray": parameter servers and workers as Ray actors (engines/ray_engine.py), on a local Ray
bound to loopback (one session for the module: conftest.ray_session)."""

import numpy as np
import pytest
import scipy.sparse as sp

from asyncopt import EigenProClassifier, ProxSGDClassifier

RAY = dict(backend="ray", n_workers=2, threads_per_worker=1)


class _Additive:
    """EigenPro's server rule in miniature: parts added into the rows (for the actor classes called
    without Ray)."""

    additive = True

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape

    def init_params(self):
        import torch

        return torch.zeros(self.shape)

    def apply(self, params, part, staleness):
        params.index_add_(0, part.rows, part.delta)


def test_proxsgd_on_ray_agrees_with_serial_on_small_sparse_data(ray_session):
    rng = np.random.default_rng(0)
    X = sp.random(600, 50, density=0.1, random_state=0, format="csr")
    w = rng.normal(size=50) * (rng.random(50) < 0.3)
    y = np.where(X @ w + 0.05 * rng.normal(size=600) > 0, 1, 0)
    common = dict(penalty="l1", alpha=1e-3, max_epochs=20, tol=None, n_blocks=2, push="block", random_state=0)
    serial = ProxSGDClassifier(**common).fit(X, y)
    # one batch a task: the staleness of the serial engine's neighbourhood (with "auto", a task is a
    # quarter of these 600 samples, and 20 epochs end 6% above the serial run's F)
    on_ray = ProxSGDClassifier(**RAY, task_samples=None, **common).fit(X, y)
    assert abs(on_ray.history_[-1]["objective"] - serial.history_[-1]["objective"]) < 0.02
    t = on_ray.telemetry_
    assert t["updates"] == serial.telemetry_["updates"]
    # every update reaches its block's server and the intercept server: the clocks count them
    assert sum(t["server_updates"][:2]) == t["updates"] and t["server_updates"][2] == t["updates"]


@pytest.mark.parametrize(
    "layout, penalty",
    [("sparse", "l1"), ("dense", "l1"), ("sparse-large-column", "l1"), ("sparse", "box"),
     ("sparse-large-column", "box"), ("sparse, pair bundles", "group_l1"), ("sparse", "l1 + smooth")],
)  # fmt: skip
def test_a_ray_task_of_several_batches_reads_its_own_updates(ray_session, layout, penalty, monkeypatch):
    """One worker, tasks of 10 batches: each batch reads the task's earlier updates (the worker
    applies them to its copy with the servers' rule), so the run is sequential SGD, the serial
    engine's, and no update is stale. (Read from the pull alone, batches 2-10 of a task would
    take other steps.) Sparse data runs a task in one compiled call and pushes bundles
    (proxsgd/bundles.py; tests/test_proxsgd_math.py), dense data batch by batch; a sparse column far
    larger than the rest is scaled down (column_scaling), its row's L1 threshold (or box) its own in
    both. Box, group L1 and the smooth regularizer take block_prox.py's sweep, with bundles of
    samples or (ASYNCOPT_BUNDLES=pairs) of gradient pairs."""
    if layout.endswith("pair bundles"):
        monkeypatch.setenv("ASYNCOPT_BUNDLES", "pairs")
    rng = np.random.default_rng(1)
    X = sp.random(400, 40, density=0.15, random_state=1, format="csr")
    y = np.where(X @ rng.normal(size=40) > 0, 1, 0)
    if layout == "sparse-large-column":
        X = sp.hstack([X, X[:, :1] * 1000.0]).tocsr()
    X = X.toarray() if layout == "dense" else X
    rule = {
        "l1": dict(penalty="l1", alpha=1e-3),
        "box": dict(penalty="box", bounds=(-0.3, 0.2)),
        "group_l1": dict(penalty="group_l1", alpha=1e-2, groups=np.arange(X.shape[1]) // 4),
        "l1 + smooth": dict(penalty="l1", alpha=1e-3, nonconvex_strength=0.05),
    }[penalty]
    common = dict(max_epochs=4, tol=None, n_blocks=2, push="block", batch_size=16, random_state=0, **rule)
    serial = ProxSGDClassifier(**common).fit(X, y)
    one = dict(backend="ray", n_workers=1, threads_per_worker=1)
    on_ray = ProxSGDClassifier(**one, task_samples=160, **common).fit(X, y)
    if layout == "sparse-large-column":
        assert serial._column_scaling(X)[1][-1] > 100  # (the large column is scaled)
    assert on_ray.telemetry_["updates"] == serial.telemetry_["updates"]
    assert on_ray.telemetry_["staleness"]["max"] == 0
    np.testing.assert_allclose(on_ray.coef_, serial.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(on_ray.intercept_, serial.intercept_, rtol=1e-9, atol=1e-12)


def test_a_ray_call_of_several_tasks_runs_them_in_order(ray_session, monkeypatch):
    """The coordinator sends a worker several tasks in one call (RayEngine._size_tasks), so that it
    is not on every batch's path; each task still pulls and pushes on its own. With one worker
    the run is then the serial engine's, batch for batch."""
    from asyncopt.engines.ray_engine import RayEngine

    calls = []
    submit = RayEngine._submit
    monkeypatch.setattr(
        RayEngine, "_submit", lambda self, sent, fl: (calls.append(len(sent.tasks)), submit(self, sent, fl))
    )
    rng = np.random.default_rng(2)
    X = sp.random(800, 30, density=0.2, random_state=2, format="csr")
    y = np.where(X @ rng.normal(size=30) > 0, 1, 0)
    common = dict(penalty="l1", alpha=1e-3, max_epochs=3, tol=None, n_blocks=2, push="block", batch_size=8,
                  random_state=0)  # fmt: skip
    serial = ProxSGDClassifier(**common).fit(X, y)
    one = dict(backend="ray", n_workers=1, threads_per_worker=1, task_samples=None)  # (one batch a task)
    on_ray = ProxSGDClassifier(**one, **common).fit(X, y)
    assert max(calls) > 1 and sum(calls) == serial.telemetry_["updates"]
    assert on_ray.telemetry_["updates"] == serial.telemetry_["updates"]
    np.testing.assert_allclose(on_ray.coef_, serial.coef_, rtol=1e-9, atol=1e-12)


def test_task_samples_is_for_ray_only():
    with pytest.raises(ValueError, match="task_samples=64 sets the size of a Ray task"):
        ProxSGDClassifier(task_samples=64, backend="processes", n_workers=2).fit(np.eye(4), [0, 1, 0, 1])
    # "auto" (the default) is every backend's
    ProxSGDClassifier(task_samples="auto", backend="threads", n_workers=2, tol=None, max_epochs=2).fit(
        np.eye(4), [0, 1, 0, 1]
    )


@pytest.mark.parametrize(
    "task_samples, n_workers, segment, batch, batches",
    [("auto", 2, 32_561, 32, 128),  # a9a's epoch: 4,096 samples a task
     ("auto", 2, 8_000, 32, 63),  # a short segment: two tasks a worker (2,000 samples)
     ("auto", 2, 32_561, 8_192, 1),  # batches larger than 4,096: one a task
     (None, 2, 32_561, 32, 1),
     (1_000, 4, 32_561, 32, 32)],
)  # fmt: skip
def test_the_ray_task_size(task_samples, n_workers, segment, batch, batches):
    from asyncopt.engines.ray_engine import RayEngine

    engine = RayEngine(n_workers=n_workers, task_samples=task_samples)
    engine._size_tasks(segment, batch)
    assert engine._task_batches == batches


def test_proxsgd_on_ray_matches_processes_on_a9a(ray_session, a9a):
    X, y, X_test, y_test = a9a
    # batches of 256: a Ray task is one batch and costs ~3 ms of messages (15 epochs of a9a's batches
    # of 32 take a minute on Ray, 3 s on processes)
    common = dict(
        penalty="l1", alpha=1e-4, fit_intercept=False, max_epochs=15, evals_per_epoch=2, tol=None, random_state=0,
        batch_size=256,
    )  # fmt: skip
    procs = ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, **common).fit(X, y)
    on_ray = ProxSGDClassifier(**RAY, **common).fit(X, y)
    f_procs, f_ray = procs.history_[-1]["objective"], on_ray.history_[-1]["objective"]
    assert abs(f_ray - f_procs) / f_procs < 3e-3
    assert abs(on_ray.score(X_test, y_test) - procs.score(X_test, y_test)) < 0.01
    assert on_ray.telemetry_["staleness"]["max"] >= 1  # asynchronous: servers counted others' updates


def test_eigenpro_on_ray_matches_serial_on_mnist_10k(ray_session, mnist):
    X, y, Xt, yt = mnist
    common = dict(bandwidth=10.0, epochs=4, random_state=0)
    serial = EigenProClassifier(**common).fit(X[:10_000], y[:10_000]).score(Xt[:5000], yt[:5000])
    clf = EigenProClassifier(**RAY, **common).fit(X[:10_000], y[:10_000])
    assert clf.history_[-1]["train_mse"] < 0.02
    assert clf.score(X[:10_000], y[:10_000]) >= 0.999
    assert abs(clf.score(Xt[:5000], yt[:5000]) - serial) <= 0.005
    assert clf.telemetry_["updates"] == clf.history_[-1]["steps"]
    assert clf.telemetry_["server_updates"] == [clf.telemetry_["updates"]]
    # workers keep a replica and pull the parts applied since their last pull, not all of alpha
    ws = clf.telemetry_["workers"]
    whole = clf.weights_.size * 4  # (float32)
    assert sum(w["pull_bytes"] for w in ws) < 0.8 * sum(w["steps"] for w in ws) * whole


def test_eigenpro_weights_sharded_over_ray_servers_are_read_whole(ray_session, mnist):
    """Each update's batch rows and Nystrom rows go to the shards that own them, and a worker's pull
    never holds a push that one shard applied and another not yet (ray_actors.lagging_servers). Before
    whole reads, MNIST 10k with 2 servers ended at train MSE 0.0017-0.062 over 7 runs; with them,
    0.00109-0.00118 over 3 seeds (2 servers) and 0.00113 (3), against 0.00115 with one server. Until
    a run's first pushes were compared too (session 17), about 1 run in 8 ended at 0.0053-0.0055 (an
    epoch-1 MSE of 0.30: a torn read of the first pushes, test_a_runs_first_push_applied_by_one_...)."""
    X, y = mnist[0][:10_000], mnist[1][:10_000]
    clf = EigenProClassifier(bandwidth=10.0, epochs=4, random_state=0, n_servers=2, **RAY).fit(X, y)
    t = clf.telemetry_
    # the subsample spans both halves of the rows, so every update reaches both servers
    keys = ("server_updates", "updates", "reads_torn", "reads_repaired", "failures", "staleness", "startup_seconds")
    seen = {k: t.get(k) for k in keys}
    fitted = ("batch_size_", "step_size_", "critical_batch_size_", "subsample_size_", "n_components_")
    seen |= {k: getattr(clf, k) for k in fitted} | {"staleness_histogram": t.get("staleness_histogram")}
    assert t["server_updates"] == [t["updates"], t["updates"]], seen
    assert t["reads_torn"] == 0, seen
    mse = [round(h["train_mse"], 5) for h in clf.history_]
    assert clf.history_[-1]["train_mse"] < 0.005 and clf.score(X, y) >= 0.999, f"train MSE per epoch {mse}, {seen}"


def test_lagging_servers_finds_a_push_not_yet_everywhere():
    from asyncopt.engines.ray_actors import Front, lagging_servers

    # worker 7's push 3 went to servers 0 and 1: server 1 has only its push 2 so far
    fronts = [Front({7: (3, (0, 1)), 8: (5, (0, 1, 2))}), Front({7: (2, (0, 1)), 8: (5, (0, 1, 2))}),
              Front({8: (5, (0, 1, 2))})]  # fmt: skip
    assert lagging_servers(fronts) == [1]
    fronts[1].pushes[7] = (3, (0, 1))
    assert lagging_servers(fronts) == []
    # a push to server 0 alone says nothing about server 1
    assert lagging_servers([Front({7: (4, (0,))}), Front({7: (3, (0, 1))})]) == []
    # a server that applied nothing from an origin is behind that origin's first push (the run's first
    # pushes: CI's intermittent bad MNIST runs read these torn) ...
    assert lagging_servers([Front({7: (1, (0, 1))}), Front({})]) == [1]
    # ... unless it cannot know: restored after a failure (it may have lost any origin's pushes), or
    # the origin is in the ledger it started from (a resumed run's earlier workers)
    assert lagging_servers([Front({7: (4, (0, 1))}), Front({}, restarted=True)]) == []
    assert lagging_servers([Front({7: (4, (0, 1))}), Front({}, unknown=frozenset({7}))]) == []


def test_a_runs_first_push_applied_by_one_server_is_waited_for():
    """The interleaving of CI's bad runs, with the actor class called without Ray: worker 1's first
    push reached server 1 and not yet server 0. A read of both then holds half an EigenPro update (the
    batch rows without their Nystrom correction, or the reverse): worker 0's second step read it, its
    residual was 17x the usual, and the first epoch ended at train MSE 0.30 instead of 0.066."""
    import torch

    from asyncopt.eigenpro.step import RowsDelta
    from asyncopt.engines.ray_actors import ServerShard, lagging_servers

    rule, rows = _Additive((4, 1)), np.zeros((2, 1), np.float32)
    servers = [ServerShard(rule, b, 2 * b, 2 * b + 2, rows, 0, None) for b in (0, 1)]
    part = lambda row: [(RowsDelta(torch.tensor([row]), torch.ones(1, 1)), 0)]  # noqa: E731
    for b, server in enumerate(servers):  # worker 0's first push, at both
        server.push(0, 1, part(2 * b), targets=[0, 1])
    servers[1].push(1, 1, part(3), targets=[0, 1])  # worker 1's, at server 1 only so far
    fronts = [server.pull(since=0, pushes=True)[3] for server in servers]
    assert lagging_servers(fronts) == [0]
    servers[0].push(1, 1, part(1), targets=[0, 1])
    assert lagging_servers([server.pull(pushes=True)[3] for server in servers]) == []
    # a server restored after a failure vouches only for the origins it heard from since
    restored = ServerShard(_Additive((4, 1)), 0, 0, 2, np.zeros((2, 1), np.float32), 0, None, restarted=True)
    assert lagging_servers([restored.pull(pushes=True)[3], servers[1].pull(pushes=True)[3]]) == []


def test_a_resumed_ray_run_applies_every_update(ray_session, mnist, tmp_path):
    """A resumed run's workers number their pushes from 1 again; under the earlier run's worker ids
    the restored ledgers refused them as applied (MNIST 4k: 24 of 36 updates held, train MSE 0.015
    against 0.0036 for the run without a stop)."""
    X, y = mnist[0][:4000], mnist[1][:4000]
    kw = dict(bandwidth=10.0, random_state=0, n_servers=2, **RAY)
    EigenProClassifier(epochs=1, checkpoint_dir=tmp_path, **kw).fit(X, y)
    resumed = EigenProClassifier(epochs=3, checkpoint_dir=tmp_path, **kw).fit(X, y, resume=True)
    whole = EigenProClassifier(epochs=3, **kw).fit(X, y)
    assert resumed.telemetry_["server_updates"] == whole.telemetry_["server_updates"]
    mse = [[round(h["train_mse"], 5) for h in e.history_] for e in (resumed, whole)]
    assert resumed.history_[-1]["train_mse"] < 1.5 * whole.history_[-1]["train_mse"], mse


def test_a_diverging_ray_worker_raises_training_diverged_itself(ray_session):
    from test_checkpoints import test_a_diverging_worker_raises_training_diverged_itself as diverging

    diverging("ray")  # (the threads and processes cases: tests/test_checkpoints.py)


def test_a_retried_push_is_applied_once(ray_session):
    """A server applies a worker's push once: the same (worker, sequence number) again is a no-op.
    Two servers in one actor (a host): each has its own clock and ledger."""
    import torch

    from asyncopt.eigenpro.step import RowsDelta
    from asyncopt.engines.ray_actors import ServerActor, ShardSpec

    class Additive:
        def init_params(self):
            return torch.zeros(6, 1)

        def apply(self, params, part, staleness):
            params.index_add_(0, part.rows, part.delta)

    specs = [ShardSpec(0, 0, 4, np.zeros((4, 1), np.float32)), ShardSpec(1, 4, 6, np.zeros((2, 1), np.float32))]
    host = ray_session.remote(ServerActor).remote(specs, Additive(), Additive())
    part, other = RowsDelta(torch.tensor([1]), torch.ones(1, 1)), RowsDelta(torch.tensor([5]), torch.ones(1, 1))
    push = lambda seq, n: host.push.remote([(0, 7, seq, [(part, 0)] * n), (1, 7, seq, [(other, 0)])])  # noqa: E731
    first = ray_session.get(push(1, 1))
    retry = ray_session.get(push(1, 1))  # the same push again: answered, not applied
    later = ray_session.get(push(3, 2))  # out of order: applied
    again = ray_session.get(push(3, 2))
    only = ray_session.get(host.push.remote([(1, 7, 4, [(other, 1)])]))  # to one of the two
    both = [(0, None, None, False), (1, None, None, False)]
    (clock, rows, _), (clock1, rows1, _) = ray_session.get(host.pull.remote(both))
    assert first == [([0], False), ([0], False)] and retry == [([0], True), ([0], True)]
    # (a push's parts are one task's: each read the earlier ones, so each is 1 update stale, not 1 and 2)
    assert later == [([1, 1], False), ([1], False)] and again == [([1, 1], True), ([1], True)]
    assert only == [([1], False)]
    assert clock == 3 and rows[1, 0] == 3.0 and clock1 == 3 and rows1[1, 0] == 3.0
    states = ray_session.get(host.state.remote())
    assert states[0]["refused"] == 2 and states[1]["refused"] == 2
    ray_session.kill(host)


def test_a_push_is_stepped_at_no_more_than_the_workers_copy_was():
    """The server's step for a push of a task's updates: that of its staleness, or of the staleness
    the worker's copy was stepped at (`stepped_at`) when that is larger, so that no update is applied
    further than the copy moved when the task's later batches read it. (The actor class, called here
    without Ray.)"""
    import torch

    from asyncopt.eigenpro.step import RowsDelta
    from asyncopt.engines.ray_actors import ServerShard

    class Recording:
        steps_at: list = []

        def init_params(self):
            return torch.zeros(4, 1)

        def apply(self, params, part, staleness):
            self.steps_at.append(staleness)

    server = ServerShard(Recording(), 0, 0, 4, np.zeros((4, 1), np.float32), 0, None)
    part = RowsDelta(torch.tensor([1]), torch.ones(1, 1))
    assert server.push(1, 1, [(part, 0), (part, 0)]) == ([0, 0], False)
    assert server.push(2, 1, [(part, 0)], stepped_at=5) == ([2], False)  # 2 updates since its read
    assert server.push(1, 2, [(part, 1), (part, 1)], stepped_at=1) == ([2, 2], False)
    assert server.algo.steps_at == [0, 0, 5, 2, 2]


def test_a_server_saves_its_state_and_a_new_one_starts_from_the_file(tmp_path):
    """ServerShard.save writes rows, clock and ledger (safetensors, atomically); after a push once
    save_every seconds have passed it saves by itself; a server started without rows reads them, and
    refuses a file that is another server's. (The actor class, called here without Ray.)"""
    import torch

    from asyncopt.eigenpro.step import RowsDelta
    from asyncopt.engines.ray_actors import ServerShard
    from asyncopt.persistence import FileFormatError

    class Additive:
        def init_params(self):
            return torch.zeros(6, 1)

        def apply(self, params, part, staleness):
            params.index_add_(0, part.rows, part.delta)

    from asyncopt.engines.ray_actors import write_server_file

    file = str(tmp_path / "servers" / "server-1.safetensors")
    write_server_file(file, 1, 2, 5, np.zeros((3, 1), np.float32), 0, None)  # (the coordinator's first)
    server = ServerShard(Additive(), 1, 2, 5, None, 0, None, file, 0.2)
    part = RowsDelta(torch.tensor([3]), torch.ones(1, 1))
    server.push(7, 1, [(part, 0)])  # (no save yet: 0.2 s have not passed)
    assert server.save() == 1
    server.push(7, 2, [(part, 1)])
    restarted = ServerShard(Additive(), 1, 2, 5, None, 0, None, file)
    assert restarted.clock == 1 and restarted.params[3, 0] == 1.0  # as saved, before the second push
    assert restarted.ledger.seen(7, 1) and not restarted.ledger.seen(7, 2)
    import time

    time.sleep(0.25)
    server.push(7, 3, [(part, 2)])  # 0.2 s after the last save: saved after this push
    restarted = ServerShard(Additive(), 1, 2, 5, None, 0, None, file)
    assert restarted.clock == 3 and restarted.params[3, 0] == 3.0 and restarted.ledger.seen(7, 3)
    with pytest.raises(FileFormatError, match="the file of server 1, not of server 0"):
        ServerShard(Additive(), 0, 0, 2, None, 0, None, file)


def test_a_replica_pulls_the_parts_since_its_clock_and_holds_the_servers_rows():
    """Additive rules (EigenPro): a pull with `since` returns the parts applied since that clock, in
    order, and a replica that adds them holds exactly the server's rows; the whole rows when the
    server no longer keeps them (more bytes than the rows) or its clock is behind the replica's (a
    restarted server). (The actor class, called here without Ray.)"""
    import torch

    from asyncopt.eigenpro.step import RowsDelta
    from asyncopt.engines.ray_actors import ServerShard

    rng = np.random.default_rng(0)
    server = ServerShard(_Additive((8, 2)), 0, 0, 8, np.zeros((8, 2), np.float32), 0, None)
    replica, clock = torch.zeros(8, 2), 0
    for seq in range(1, 6):
        part = RowsDelta(torch.tensor([1, 3, 3]), torch.tensor(rng.normal(size=(3, 2)), dtype=torch.float32))
        server.push(0, seq, [(part, server.clock)])
        now, rows, parts = server.pull(since=clock)
        assert rows is None and len(parts) == 1
        for p in parts:
            _Additive((8, 2)).apply(replica, p, 0)
        clock = now
    assert torch.equal(replica, server.params)  # (bitwise: the same additions in the same order)
    now, rows, parts = server.pull(since=0)  # 5 parts: 15 rows of (index, delta), more bytes than 8 rows
    assert parts is None and np.array_equal(rows, server.params.numpy())
    assert server.pull(since=99)[2] is None  # a replica ahead of the server: whole rows


def test_ray_without_ray_installed_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'asyncopt\[ray\]'"):
        ProxSGDClassifier(backend="ray").fit(np.eye(4), [0, 1, 0, 1])


def test_a_worker_sends_the_next_pulls_before_its_pushes_are_answered(monkeypatch):
    """Pipelined pushes (WorkerActor.run_tasks): a task's pushes are awaited together with the next
    task's pulls, one round trip instead of two, and the next task still reads them (a server answers
    one caller's calls in the order sent). The actor classes run here without Ray: a call runs when
    sent, as an actor runs one caller's calls in order, and `ray.get` records what it waited for."""
    import ray
    import torch

    from asyncopt.engines.base import Task
    from asyncopt.engines.ray_actors import ServerActor, ShardSpec, WorkerActor
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
    from asyncopt.proxsgd.data import LinearData
    from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
    from asyncopt.proxsgd.problem import LinearProblem, block_bounds
    from asyncopt.proxsgd.prox import make_penalty

    class Done:  # a call's result, tagged with what it was
        def __init__(self, kind, value):
            self.kind, self.value = kind, value

    class Handle:  # server.pull.remote(...) runs the call now
        def __init__(self, server):
            self.server = server

        def __getattr__(self, name):
            method = getattr(self.server, name)
            return type("M", (), {"remote": staticmethod(lambda *a, **k: Done(name, method(*a, **k)))})

    waits = []

    def get(refs, timeout=None):
        waits.append(sorted({r.kind for r in refs}))
        return [r.value for r in refs]

    monkeypatch.setattr(ray, "get", get)
    rng = np.random.default_rng(3)
    n, d = 200, 16
    X = sp.random(n, d, density=0.3, random_state=3, format="csr")
    problem = LinearProblem(
        LinearData.from_array(X, rng.choice([-1.0, 1.0], size=(n, 1))), LOSSES["logistic"],
        make_penalty("l1", 0.01), NonconvexRegularizer(0.0), True, block_bounds(d, 2),
    )  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 8, 0.5, "block")
    rows = [algo.server_rows(b) for b in range(algo.n_locks)]
    start = algo.init_params().numpy()
    placement = algo.server_placement()  # (the intercept server with block 0)
    assert placement == [[0, 2], [1]]
    hosts = [ServerActor([ShardSpec(b, *rows[b], start[slice(*rows[b])]) for b in servers],
                         *(algo.for_server(b) for b in servers)) for servers in placement]  # fmt: skip
    worker = WorkerActor(algo, [Handle(h) for h in hosts], placement, rows, 1)
    tasks = [Task(rng.choice(n, 8, replace=False), np.array([8]), np.array([t]), 8) for t in range(4)]
    reply = worker.run_tasks(tasks, 0, [1, 2, 3, 4])
    assert waits[0] == ["pull"] and all(w == ["pull", "push"] for w in waits[1:4]) and waits[4] == ["push"]
    assert [seq for seq, _ in reply["acks"]] == [1, 2, 3, 4] and reply["updates"] == 4
    # the same steps as a worker that waits for each push: the serial order, one update at a time
    ref = torch.as_tensor(start).clone()
    for t, task in enumerate(tasks):
        update = algo.compute(ref, torch.as_tensor(task.rows), 1.0, t)
        for _, part in algo.server_parts(update):
            algo.apply(ref, part, 0)
    shards = {b: shard for host in hosts for b, shard in host.shards.items()}
    held = np.concatenate([shards[b].params.numpy()[lo:hi] for b, (lo, hi) in enumerate(rows)])
    np.testing.assert_allclose(held, ref.numpy(), rtol=1e-12, atol=1e-14)
    assert reply["stalenesses"] == [0, 0, 0, 0]


def test_a_worker_pulls_whole_blocks_when_its_samples_have_as_many_entries_as_a_block_has_rows():
    """WorkerActor._wanted: the rows a task reads of each server (rows_read), unless finding them costs
    more than shipping the rest: whole blocks when the task's samples have at least as many entries
    as a block has rows, even where they read few of its rows. (The actor class, without Ray.)"""
    from asyncopt.engines.ray_actors import WorkerActor
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
    from asyncopt.proxsgd.data import LinearData
    from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
    from asyncopt.proxsgd.problem import LinearProblem, block_bounds
    from asyncopt.proxsgd.prox import make_penalty

    n, d = 300, 400
    cols = np.tile([0, 1, 2, 200, 201], n)  # every sample: 3 columns of block 0, 2 of block 1
    X = sp.csr_matrix((np.ones(5 * n), cols, np.arange(0, 5 * n + 1, 5)), shape=(n, d))
    problem = LinearProblem(
        LinearData.from_array(X, np.ones((n, 1))), LOSSES["logistic"], make_penalty("l1", 0.01),
        NonconvexRegularizer(0.0), True, block_bounds(d, 2),
    )  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 8, 0.5, "full")
    rows = [algo.server_rows(b) for b in range(algo.n_locks)]
    worker = WorkerActor(algo, [], algo.server_placement(), rows, 1)
    few = worker._wanted(np.arange(8))  # 40 entries, blocks of 200 rows: the rows read
    assert [list(w) for w in few[:2]] == [[0, 1, 2], [200, 201]] and few[2] is None  # (the intercept's one row)
    assert worker._wanted(np.arange(40)) == [None, None, None]  # 200 entries: whole blocks
