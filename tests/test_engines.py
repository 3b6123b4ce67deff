"""Engines: serial delay simulation, threads and processes workers, telemetry and lifecycle."""

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from asyncopt import EigenProClassifier
from asyncopt.engines import Monitor, Schedule, SerialEngine, WorkerEngine, WorkerFailed


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


class Counting:
    """A toy algorithm: params count how often each sample was processed (apply is additive)."""

    n_samples = 50

    def __init__(self, fail_at=None, sleep=0.0):
        self.fail_at, self.sleep = fail_at, sleep

    def init_params(self):
        return torch.zeros(self.n_samples, 1)

    def compute(self, params, batch, scale, key=0):
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail_at is not None and int(params.sum()) >= self.fail_at:
            raise ArithmeticError("worker exploded on purpose")
        return batch.clone()

    def apply(self, params, update, staleness=0):
        params.index_add_(0, update, torch.ones(len(update), 1))

    def check(self, update, step, samples):
        pass

    def update_to_numpy(self, update):
        return update.numpy()

    def update_from_numpy(self, payload):
        return torch.as_tensor(payload)

    def share_memory(self, pack=None):
        pass

    def to(self, device):
        return self

    def update_to(self, update, device):
        return update.to(device)


def run(engine, algo, epochs=3, batch=7, evals=2, callback=None, time_limit=None):
    seen = []

    def evaluate(params, samples, steps, seconds):
        seen.append((samples, float(params.sum())))
        return {"samples": samples, "steps": steps, "seconds": seconds}

    monitor = Monitor(evaluate, callback)
    params, telemetry = engine.run(
        algo, Schedule(algo.n_samples, batch, epochs, evals), np.random.default_rng(0), monitor, time_limit=time_limit
    )
    return params, telemetry, seen


ENGINES = [
    SerialEngine(),
    SerialEngine(max_delay=3),
    WorkerEngine("threads", n_workers=2, threads_per_worker=1),
    WorkerEngine("threads", n_workers=2, threads_per_worker=1, synchronous=True),
    WorkerEngine("processes", n_workers=2, threads_per_worker=1),
    WorkerEngine("threads", devices=["cpu", "cpu"], threads_per_worker=1),
]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: repr(e))
def test_every_sample_is_processed_once_per_epoch_and_evaluations_are_exact(engine):
    params, telemetry, seen = run(engine, Counting())
    np.testing.assert_array_equal(params.numpy(), np.full((50, 1), 3.0))  # nothing lost, nothing twice
    assert [s for s, _ in seen] == [25, 50, 75, 100, 125, 150]
    assert [total for _, total in seen] == [25, 50, 75, 100, 125, 150]  # workers were drained
    assert telemetry.updates == sum(w.steps for w in telemetry.workers)
    assert sum(w.samples for w in telemetry.workers) == 150


def test_parallel_workers_share_work_and_report_staleness():
    _, telemetry, _ = run(
        WorkerEngine("threads", n_workers=2, threads_per_worker=1), Counting(sleep=0.002), epochs=4, batch=3
    )
    assert all(w.steps > 0 for w in telemetry.workers)
    assert max(telemetry.staleness) >= 1  # with two workers some updates are applied on top of a read


def test_serial_delay_is_simulated_exactly():
    _, telemetry, _ = run(SerialEngine(max_delay=3), Counting())
    # the first three steps cannot be older than the number of updates so far
    assert telemetry.staleness[0] == 1 and telemetry.staleness[1] == 1 and telemetry.staleness[2] == 1
    assert set(telemetry.staleness) == {0, 1, 2, 3}
    _, telemetry, _ = run(SerialEngine(max_delay=3, delay="random", inconsistent_reads=True), Counting())
    assert max(telemetry.staleness) <= 3


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_worker_exception_reaches_the_caller_quickly(backend):
    t0 = time.perf_counter()
    with pytest.raises(WorkerFailed, match="(?s)ArithmeticError: worker exploded on purpose"):
        run(WorkerEngine(backend, n_workers=2, threads_per_worker=1), Counting(fail_at=20))
    assert time.perf_counter() - t0 < 30


def test_callback_and_time_limit_stop_the_workers():
    engine = WorkerEngine("threads", n_workers=2, threads_per_worker=1)
    _, _, seen = run(engine, Counting(), epochs=100, callback=lambda entry: entry["samples"] >= 75)
    assert seen[-1][0] == 75
    t0 = time.perf_counter()
    _, _, seen = run(engine, Counting(sleep=0.01), epochs=10_000, time_limit=0.3)
    assert time.perf_counter() - t0 < 5 and seen[-1][0] < 10_000 * 50


def test_serial_engine_is_bit_reproducible(digits):
    X, y = digits
    kw = dict(epochs=2, random_state=0, max_delay=3, delay="random", inconsistent_reads=True)
    a = EigenProClassifier(**kw).fit(X, y)
    b = EigenProClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert a.history_ == [{**h, "seconds": a.history_[i]["seconds"]} for i, h in enumerate(b.history_)]


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_eigenpro_workers_interpolate_the_digits(digits, backend):
    X, y = digits
    clf = EigenProClassifier(epochs=4, backend=backend, n_workers=2, threads_per_worker=1, random_state=0)
    clf.fit(X[:1400], y[:1400])
    assert clf.score(X[:1400], y[:1400]) == 1.0
    assert clf.score(X[1400:], y[1400:]) > 0.95
    tel = clf.telemetry_
    assert tel["n_workers"] == 2 and all(w["steps"] > 0 for w in tel["workers"])
    assert clf.history_[-1]["staleness_max"] >= 0


def test_processes_refuse_an_unpicklable_kernel(digits):
    X, y = digits
    clf = EigenProClassifier(
        kernel=lambda a, b, h: torch.exp(-torch.cdist(a, b) / h),
        bandwidth=3.0,
        epochs=1,
        backend="processes",
        n_workers=2,
        threads_per_worker=1,
    )
    with pytest.raises(WorkerFailed, match="(?i)pickl.*module-level"):
        clf.fit(X[:300], y[:300])


@pytest.fixture(scope="module")
def mnist_serial(mnist):
    X, y, Xt, yt = mnist
    clf = EigenProClassifier(bandwidth=10.0, epochs=4, random_state=0).fit(X[:10_000], y[:10_000])
    return clf.score(Xt[:5000], yt[:5000])


@pytest.mark.parametrize(
    "params",
    [
        dict(backend="threads", n_workers=2, threads_per_worker=1),
        dict(backend="processes", n_workers=2, threads_per_worker=1),
        dict(backend="threads", n_workers=2, threads_per_worker=1, synchronous=True),
        dict(backend="serial", max_delay=3, delay="random"),
        dict(backend="threads", devices=["cpu", "cpu"], threads_per_worker=1),
    ],
    ids=["threads", "processes", "synchronous", "serial-delay3", "device-replicas"],
)
def test_engines_agree_with_serial_on_mnist(mnist, mnist_serial, params):
    X, y, Xt, yt = mnist
    clf = EigenProClassifier(bandwidth=10.0, epochs=4, random_state=0, **params).fit(X[:10_000], y[:10_000])
    assert clf.history_[-1]["train_mse"] < 0.02
    assert clf.score(X[:10_000], y[:10_000]) >= 0.999
    assert abs(clf.score(Xt[:5000], yt[:5000]) - mnist_serial) <= 0.005
    assert clf.telemetry_["updates"] == clf.history_[-1]["steps"]


CTRL_C_SCRIPT = """
import faulthandler, signal, sys
from sklearn.datasets import load_digits
from asyncopt import EigenProClassifier
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test dumps the stacks if the run hangs
X, y = load_digits(return_X_y=True)
def training(entry):
    print("training", flush=True)  # an evaluation passed: the workers are up and training
EigenProClassifier(epochs=10**6, batch_size=20, backend=sys.argv[1], n_workers=2, threads_per_worker=1,
                   callback=training).fit(X, y)
"""


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_ctrl_c_stops_cleanly(backend):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Ctrl-C once training runs (not during the workers' start, which a loaded machine slows down)
    assert proc.stdout.readline().strip() == "training", proc.stderr.read() if proc.poll() is not None else ""
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)  # a hang detector: it exits in ~2 s on an idle machine
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to stderr
        time.sleep(2.0)
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"fit did not stop within 60 s of Ctrl-C; the child's threads:\n{err[-6000:]}")
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err


def test_fit_raises_a_failing_workers_exception(digits):
    X, y = digits
    import threading

    calls = {"n": 0}

    def flaky_kernel(a, b, h):
        if threading.current_thread().name.startswith("asyncopt-worker"):
            calls["n"] += 1
            if calls["n"] > 20:
                raise RuntimeError("kernel evaluation failed on purpose")
        return torch.exp(-torch.cdist(a, b) / h)

    clf = EigenProClassifier(
        kernel=flaky_kernel,
        bandwidth=3.0,
        epochs=50,
        backend="threads",
        n_workers=2,
        threads_per_worker=1,
        random_state=0,
    )
    t0 = time.perf_counter()
    with pytest.raises(WorkerFailed, match="(?s)worker .* raised.*kernel evaluation failed on purpose"):
        clf.fit(X, y)
    assert time.perf_counter() - t0 < 60


def test_a_task_of_batches_is_the_same_batches_and_keys_as_one_by_one():
    """Worker engines ship `next_task` (arrays); the serial engine draws with `next`: both must see
    the same batches and keys, across epoch ends (n = 23, batch 4), evaluation points and refills
    of the key buffer (1024 keys at a time)."""
    from asyncopt.engines.base import BatchStream, Schedule

    schedule = Schedule(23, 4, 400.0, 3)
    one, many = BatchStream(schedule, np.random.default_rng(3)), BatchStream(schedule, np.random.default_rng(3))
    singles, grouped = [], []
    for until in schedule.evaluation_points():
        while one.issued < until:
            singles.append(one.next(until - one.issued))
        while many.issued < until:
            task = many.next_task(until - many.issued, 3)
            grouped += [(batch, key) for batch, _, key in task.batches()]
            assert task.n_samples == task.sizes.sum() <= 12
    assert len(singles) == len(grouped) > 2 * 1024
    for (b1, k1), (b2, k2) in zip(singles, grouped, strict=True):
        np.testing.assert_array_equal(b1, b2)
        assert k1 == k2
    first_epoch = np.concatenate([b for b, _ in singles[:6]])
    assert sorted(first_epoch.tolist()) == list(range(23))


def test_lazy_proxsgd_in_worker_processes_gives_the_eager_threads_parameters():
    """The fused lazy path in spawned workers, with the coordinator's kernels loaded before the
    parameters move to shared memory (as the estimator does), equals eager updates in a thread."""
    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
    from asyncopt.proxsgd.data import LinearData
    from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
    from asyncopt.proxsgd.problem import LinearProblem, block_bounds
    from asyncopt.proxsgd.prox import make_penalty

    def run(backend, lazy):
        X = sp.random(300, 2000, density=0.01, random_state=1, format="csr")
        y = np.random.default_rng(0).choice([-1.0, 1.0], size=(300, 1))
        problem = LinearProblem(
            LinearData.from_array(X, y),
            LOSSES["logistic"],
            make_penalty("l1", 1e-3),
            NonconvexRegularizer(0.0),
            False,
            block_bounds(2000, 1),
        )
        algo = ProxSGDAlgorithm(problem, 4, 0.5, "full", variance_reduction=True, lazy=lazy)
        algo.prepare()
        algo.refresh_snapshot(algo.init_params())

        def refresh(params, samples):
            algo.flush(params)
            algo.refresh_snapshot(params)

        monitor = Monitor(lambda p, s, st, sec: float(p.abs().sum()), None, None, refresh)
        engine = WorkerEngine(backend, 1, 1, servers_in_workers=True)
        params, _ = engine.run(algo, Schedule(300, 4, 3.0, 1), np.random.default_rng(0), monitor)
        algo.flush(params)
        assert algo.lazy_active == (lazy == "on")
        return params

    np.testing.assert_allclose(run("processes", "on").numpy(), run("threads", "off").numpy(), rtol=1e-9, atol=1e-12)


def test_a_worker_read_never_mixes_a_write_in_progress():
    """The server writes an update in two parts (as EigenPro's batch rows, then its Nystrom rows);
    `PublishingServer.read` (the seqlock workers read through) never returns one part without the other,
    while a plain copy does."""
    import threading

    from asyncopt.engines.servers import PublishingServer

    params, server_of_all_rows = torch.zeros(2, 200_000), PublishingServer()
    done = threading.Event()

    def rule(p, v, staleness):
        p[0].fill_(v)
        p[1].fill_(v)

    def server():
        for v in range(1, 400):
            server_of_all_rows.apply(rule, params, v, 0)
            time.sleep(0.0005)  # (a server applies when an update arrives, not back to back)
        done.set()

    writer = threading.Thread(target=server)
    writer.start()
    torn_plain = torn_consistent = reads = 0
    while not done.is_set():
        plain = params.clone()
        torn_plain += bool(plain[0, -1] != plain[1, 0])
        _, seen = server_of_all_rows.read(params)
        torn_consistent += bool((seen[0] != seen[1]).any() or (seen[0] != seen[0, 0]).any())
        reads += 1
    writer.join()
    assert torn_consistent == 0
    assert reads > 10
    print(f"{reads} reads: {torn_plain} plain copies were torn, none through the seqlock")


def test_an_unguarded_script_with_processes_workers_is_told_about_the_main_guard(tmp_path):
    """A spawned worker imports the main script again; without `if __name__ == "__main__":` it leaves
    before it is ready, and the one error says what to do (not only "stopped unexpectedly"; both
    algorithms and the short stderr: tests/test_input_hardening.py)."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import numpy as np\n"
        "from asyncopt import ProxSGDRegressor\n"
        "X = np.random.default_rng(0).normal(size=(200, 5))\n"
        "ProxSGDRegressor(backend='processes', n_workers=2, max_epochs=1).fit(X, X @ np.ones(5))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "re-import your script" in done.stderr and "if __name__ == '__main__':" in done.stderr
