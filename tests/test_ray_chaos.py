"""The chaos test: Ray actors killed during a run (engines/ray_engine.py, "Failures")."""

import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from asyncopt import ActorFailureWarning, ProxSGDClassifier


def _kill_during_run(ray, stop: threading.Event, plan: list, killed: list) -> None:
    """Kill, at the planned seconds after the first actors show up, a worker of the run or its
    server `server` (by name: asyncopt-<run>-<worker|server>-<index>-<generation>)."""
    while not stop.is_set() and not _names(ray, "-worker-"):
        time.sleep(0.05)
    t0 = time.perf_counter()
    for at, kind in plan:
        while not stop.is_set() and time.perf_counter() - t0 < at:
            time.sleep(0.02)
        if stop.is_set():
            return
        names = _names(ray, kind)
        if names:
            try:
                ray.kill(ray.get_actor(names[-1]), no_restart=True)
                killed.append(names[-1])
            except ValueError:  # gone meanwhile
                pass


def _names(ray, kind: str) -> list[str]:
    from ray.util import list_named_actors

    return sorted(n for n in list_named_actors() if n.startswith("asyncopt-") and kind in n)


@pytest.mark.parametrize("restart, push", [("drained point", "auto"), ("file", "block")])
def test_killed_workers_and_a_killed_server_are_replaced_and_the_run_reaches_its_objective(
    ray_session, restart, push, tmp_path
):
    """A killed server restarts from the coordinator's copy of the last drained point, or, with
    checkpoint_dir, from the file it saved last (at the last drained point, or after a push 10 s
    after its last save). Both pushes: the default (the full push here: every update has a part at
    both block servers) and AsyB's block push (one block server an update)."""
    rng = np.random.default_rng(0)
    X = sp.random(2000, 60, density=0.1, random_state=0, format="csr")
    w = rng.normal(size=60) * (rng.random(60) < 0.3)
    y = np.where(X @ w + 0.05 * rng.normal(size=2000) > 0, 1, 0)
    # 60 epochs: with the default tasks ("auto": 250 samples here) an undisturbed run trains for 2-7 s,
    # and the plan's last kill comes 4 s after the first actors show up
    common = dict(penalty="l1", alpha=1e-3, max_epochs=60, tol=None, n_blocks=2, random_state=0)
    serial = ProxSGDClassifier(**common).fit(X, y)
    stop, killed = threading.Event(), []
    plan = [(1.0, "-worker-"), (2.5, "-server-0-"), (4.0, "-worker-")]
    killer = threading.Thread(target=_kill_during_run, args=(ray_session, stop, plan, killed))
    killer.start()
    try:
        with pytest.warns(ActorFailureWarning) as caught:  # (each death, as it is handled)
            est = ProxSGDClassifier(
                backend="ray", n_workers=2, threads_per_worker=1, evals_per_epoch=2,
                checkpoint_dir=tmp_path if restart == "file" else None, checkpoint_every=None, push=push, **common,
            ).fit(X, y)  # fmt: skip
    finally:
        stop.set()
        killer.join()
    t = est.telemetry_
    told = [str(w.message) for w in caught if w.category is ActorFailureWarning]
    assert len(told) == len(t["failures"]) and sum("server actor" in m for m in told) == 1, told
    kinds = [f["actor"] for f in t["failures"]]
    assert len(killed) == 3, killed  # the run lasted past the last planned kill
    assert kinds.count("worker") == 2 and kinds.count("server") == 1, t["failures"]
    assert [f["restored_from"] for f in t["failures"] if f["actor"] == "server"] == [restart]
    # the updates a restart lost (acknowledged after the restored state) were run again, none lost
    assert t["lost_updates"] == [0, 0, 0], t["failures"]
    assert not (tmp_path / "ray-servers").exists()  # the servers' files go with the run
    # the ledger: each update's block part and intercept part were applied once, or counted lost
    steps = est.history_[-1]["steps"]
    held = [t["server_updates"][b] + t["lost_updates"][b] for b in range(3)]
    if est.push_ == "block":  # each update's block part went to one of the two block servers
        assert held[0] + held[1] == steps
    else:
        assert est.push_ == "full" and held[0] == held[1] == steps
    assert held[2] == steps
    assert abs(est.history_[-1]["objective"] - serial.history_[-1]["objective"]) < 0.02


def _kill_after_updates(ray, stop: threading.Event, plan: list, killed: list) -> None:
    """Kill, once the run's servers have applied the planned number of updates (their clocks, asked
    of the server actors), a worker or the server `kind` names: mid-training, not in the start-up."""
    for at, kind in plan:
        while not stop.is_set():
            clock = 0
            for name in _names(ray, "-server-"):
                try:
                    states = ray.get(ray.get_actor(name).state.remote(), timeout=10)
                    clock = max([clock, *(state["clock"] for state in states.values())])
                except Exception:  # (dead, or gone meanwhile)
                    pass
            if clock >= at:
                break
            time.sleep(0.05)
        if stop.is_set():
            return
        names = _names(ray, kind)
        if names:
            ray.kill(ray.get_actor(names[-1]), no_restart=True)
            killed.append(names[-1])


def test_eigenpro_whole_reads_survive_a_killed_server_and_worker(ray_session, mnist):
    """EigenPro over 2 Ray servers with a server and a worker killed mid-run (after 20 and 60 of the
    run's 116 updates): every server rolls back to the last drained point and the tasks done since
    are run again, the restored server reports only the origins it heard from since
    (ray_actors.Front), the replaced worker's origin is new to every server, no read is torn, and the
    run keeps improving to a model near an undisturbed one's (0.0011 train MSE)."""
    from asyncopt import EigenProClassifier

    X, y = mnist[0][:10_000], mnist[1][:10_000]
    stop, killed = threading.Event(), []
    plan = [(20, "-server-1-"), (60, "-worker-")]
    killer = threading.Thread(target=_kill_after_updates, args=(ray_session, stop, plan, killed))
    killer.start()
    try:
        with pytest.warns(ActorFailureWarning) as caught:
            clf = EigenProClassifier(
                bandwidth=10.0, epochs=4, random_state=0, n_servers=2, backend="ray", n_workers=2, threads_per_worker=1
            ).fit(X, y)
    finally:
        stop.set()
        killer.join()
    t = clf.telemetry_
    told = sorted(str(w.message) for w in caught if w.category is ActorFailureWarning)
    assert len(told) == 2 and "rolled back with it" in told[0] and "worker actor" in told[1], told
    assert len(killed) == 2, killed  # the run lasted past the last planned kill
    assert sorted(f["actor"] for f in t["failures"]) == ["server", "worker"], t["failures"]
    assert all(f["samples"] > 0 for f in t["failures"]), t["failures"]  # (mid-training)
    mse = [round(h["train_mse"], 5) for h in clf.history_]
    seen = (mse, t["server_updates"], t["lost_updates"], t["failures"])
    # Half-applied updates (the bug this test found) ended at train MSE 38. With every server rolled
    # back but the updates since counted lost, the run ended at 0.0022, or at 0.0077-0.0116 when the
    # kill landed late in the epoch (all of its updates lost: first epoch 0.87-1.07 against 0.064).
    # The tasks are now run again: every update is held once by both servers. Of 18 runs, one ended
    # at 0.0054, its first epoch at 0.30: the servers, restored together, did not report the redone
    # pushes' tears (ray_actors.ServerShard `aligned`, since); with it 8 of 8 at 0.0011-0.0012. One
    # run in 18 ended at 0.0024 (epoch 3, after the worker's death; cause open), hence the bound.
    assert t["lost_updates"] == [0, 0] and t["server_updates"] == [clf.history_[-1]["steps"]] * 2, seen
    assert mse[0] < 0.1, seen  # (the first epoch: 0.064-0.067 in the good runs; lost updates 0.18)
    assert t["reads_torn"] == 0 and clf.history_[-1]["train_mse"] < 0.02, seen
    assert all(later < earlier for earlier, later in zip(mse, mse[1:], strict=False)), seen


def test_a_server_dead_at_a_drained_point_has_the_updates_it_lost_run_again(ray_session, monkeypatch):
    """A server that dies after the segment's last push and before the drained point's snapshot (the
    case that lost a whole epoch's updates, found by the test above) restarts from the snapshot
    before, and the tasks done since run again before the snapshot is taken: every update is held
    once by each of its servers, none counted lost, and the run ends where an undisturbed one does."""
    from asyncopt.engines import ray_engine

    take_snapshot, calls = ray_engine.RayEngine._take_snapshot, []

    def killing_snapshot(engine, ray, algo, params):
        calls.append(len(calls))
        if len(calls) == 2:  # (the first is the run's start; the second its first evaluation point)
            host = engine._hosts[0]
            ray.kill(host, no_restart=True)
            while True:  # (ray.kill returns before the actor is gone: it could still answer the snapshot)
                try:
                    ray.get(host.ping.remote(), timeout=10)
                except ray.exceptions.RayActorError:
                    break
                time.sleep(0.02)
        return take_snapshot(engine, ray, algo, params)

    monkeypatch.setattr(ray_engine.RayEngine, "_take_snapshot", killing_snapshot)
    rng = np.random.default_rng(0)
    X = sp.random(2000, 60, density=0.1, random_state=0, format="csr")
    w = rng.normal(size=60) * (rng.random(60) < 0.3)
    y = np.where(X @ w + 0.05 * rng.normal(size=2000) > 0, 1, 0)
    common = dict(penalty="l1", alpha=1e-3, max_epochs=10, tol=None, n_blocks=2, random_state=0, push="full")
    serial = ProxSGDClassifier(**common).fit(X, y)
    told = r"server actor 0 \(servers \[0, 2\]\) died after 1,000 samples; restarted from the drained point, [1-9]"
    with pytest.warns(ActorFailureWarning, match=told):
        # one batch a task, whose undisturbed runs end within 1e-3 of the serial F (tasks of 250
        # samples, "auto" here, end 0.022 above it undisturbed: their staleness on 2,000 samples)
        est = ProxSGDClassifier(backend="ray", n_workers=2, threads_per_worker=1, evals_per_epoch=2,
                                task_samples=None, **common).fit(X, y)  # fmt: skip
    t = est.telemetry_
    servers = [f for f in t["failures"] if f["actor"] == "server"]
    assert len(servers) == 1 and servers[0]["restored_from"] == "drained point", t["failures"]
    steps = est.history_[-1]["steps"]
    assert servers[0]["redone_updates"] > 0 and servers[0]["lost_updates"] == 0, servers
    # server 0's actor holds block 0 and the intercept server: each acknowledged its share of the
    # first segment's updates, and ran them again
    assert t["lost_updates"] == [0, 0, 0] and t["server_updates"] == [steps] * 3, t
    assert abs(est.history_[-1]["objective"] - serial.history_[-1]["objective"]) < 0.02


def _kill_each_as_it_appears(ray, stop: threading.Event, names: list, killed: list) -> None:
    """Kill the actors whose names end as `names` do, each as soon as it is listed (in its start)."""
    for suffix in names:
        while not stop.is_set():
            found = [n for n in _names(ray, "-worker-") if n.endswith(suffix)]
            if found:
                try:
                    ray.kill(ray.get_actor(found[0]), no_restart=True)
                    killed.append(found[0])
                except ValueError:  # gone meanwhile
                    pass
                break
            time.sleep(0.01)


def test_a_replacement_worker_killed_in_its_start_is_replaced_again(ray_session):
    # CI once killed a replacement that had waited 3 s for its CPU: the error of its start escaped the
    # handler that was replacing the first one, and the fit failed with ActorDiedError
    rng = np.random.default_rng(1)
    X = sp.random(600, 30, density=0.2, random_state=1, format="csr")
    y = np.where(X @ rng.normal(size=30) > 0, 1, 0)
    stop, killed = threading.Event(), []
    plan = ["-worker-1-1", "-worker-1-2"]  # worker 1 (named by slot and origin), then its replacement
    killer = threading.Thread(target=_kill_each_as_it_appears, args=(ray_session, stop, plan, killed))
    killer.start()
    try:
        with pytest.warns(ActorFailureWarning):
            est = ProxSGDClassifier(penalty="l1", alpha=1e-3, max_epochs=3, tol=None, backend="ray", n_workers=2,
                                    threads_per_worker=1, random_state=0).fit(X, y)  # fmt: skip
    finally:
        stop.set()
        killer.join()
    assert killed and killed[0].endswith("-worker-1-1"), killed
    assert [f["actor"] for f in est.telemetry_["failures"]].count("worker") == len(killed)
    assert est.history_[-1]["epoch"] == 3


def _arm_mid_push_death(ray, stop: threading.Event, suffix: str, armed: list) -> None:
    """Arm the worker whose name ends with `suffix` to die in the middle of its next push, once the
    run's servers have applied some updates (WorkerActor.arm_push_fault: its parts reach the first
    host only)."""
    while not stop.is_set():
        found = [n for n in _names(ray, "-worker-") if n.endswith(suffix)]
        if found and any(_clock(ray, name) >= 200 for name in _names(ray, "-server-")):
            ray.get_actor(found[0]).arm_push_fault.remote(1)
            armed.append(found[0])
            return
        time.sleep(0.05)


def _clock(ray, name: str) -> int:
    try:
        return max(state["clock"] for state in ray.get(ray.get_actor(name).state.remote(), timeout=10).values())
    except Exception:  # (gone meanwhile)
        return 0


def test_a_worker_dead_in_the_middle_of_a_push_has_it_completed_once_by_its_replacement(ray_session):
    """A worker that dies after its push reached one server host and not the other: its replacement
    runs the task again with the same numbers, so the host that applied the push refuses it by its
    ledger and the other applies it. Every update ends up held once by each of its servers (none
    lost, none twice), and the run ends where an undisturbed one does."""
    rng = np.random.default_rng(2)
    X = sp.random(2000, 60, density=0.1, random_state=2, format="csr")
    w = rng.normal(size=60) * (rng.random(60) < 0.3)
    y = np.where(X @ w + 0.05 * rng.normal(size=2000) > 0, 1, 0)
    common = dict(penalty="l1", alpha=1e-3, max_epochs=20, tol=None, n_blocks=2, push="full", random_state=0)
    serial = ProxSGDClassifier(**common).fit(X, y)
    stop, armed = threading.Event(), []
    arming = threading.Thread(target=_arm_mid_push_death, args=(ray_session, stop, "-worker-1-1", armed))
    arming.start()
    try:
        with pytest.warns(ActorFailureWarning, match="worker actor 1 died"):
            est = ProxSGDClassifier(backend="ray", n_workers=2, threads_per_worker=1, **common).fit(X, y)
    finally:
        stop.set()
        arming.join()
    assert armed, "the run ended before the worker was armed"
    t = est.telemetry_
    assert [f["actor"] for f in t["failures"]] == ["worker"], t["failures"]
    # the host that applied the dying worker's push refused its reissue (block 0's and the intercept's
    # servers), the other applied it
    assert t["refused_pushes"][0] >= 1 and t["refused_pushes"][2] >= 1 and t["refused_pushes"][1] == 0, t
    steps = est.history_[-1]["steps"]
    # server 0's host holds block 0 and the intercept server (the parts it applied before the death),
    # server 1's host block 1 (the parts it never got): each update once at each
    assert t["lost_updates"] == [0, 0, 0] and t["server_updates"] == [steps] * 3, t
    assert abs(est.history_[-1]["objective"] - serial.history_[-1]["objective"]) < 0.02
