"""Real processes: SIGTERM during a parallel fit leaves a checkpoint and a clean exit, the resumed
run reaches what an uninterrupted one does, and kill -9 during a checkpoint write loses nothing."""

import signal
import subprocess
import sys
import time

import pytest

from asyncopt.persistence import checkpoint_files, latest_checkpoint
from asyncopt.training import TrainingState
from tests.conftest import require_data

FIT_SCRIPT = """
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
model, backend, folder = sys.argv[1:4]
calls = []
def training(entry):
    calls.append(entry)
    if len(calls) == 2:  # two evaluations passed: workers up and training; the signal lands during this
        print("training", flush=True)
        time.sleep(2.0)
if model == "eigenpro":
    from asyncopt import EigenProClassifier
    from asyncopt.datasets import load_mnist
    X, y, _, _ = load_mnist()
    est = EigenProClassifier(bandwidth=10.0, epochs=4, evals_per_epoch=8, random_state=0, backend=backend,
                             n_workers=2, threads_per_worker=1, checkpoint_dir=folder, checkpoint_every=None,
                             callback=training)
    est.fit(X[:5_000], y[:5_000])
else:
    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a
    X, y, _, _ = load_a9a()
    est = ProxSGDClassifier(penalty="l1", alpha=1e-4, fit_intercept=False, max_epochs=15, evals_per_epoch=4, tol=None,
                            random_state=0, backend=backend, n_workers=2, threads_per_worker=1, checkpoint_dir=folder,
                            checkpoint_every=None, callback=training)
    est.fit(X, y)
print("finished", flush=True)
"""


def _sigterm_mid_run(model, backend, folder):
    proc = subprocess.Popen(
        [sys.executable, "-c", FIT_SCRIPT, model, backend, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == "training", proc.stderr.read() if proc.poll() is not None else line
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)  # a hang detector; ~1 s when idle
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2.0)
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"fit did not stop within 60 s of SIGTERM; the child's threads:\n{err[-6000:]}")
    return proc.returncode, out, err, time.monotonic() - sent


@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_sigterm_leaves_a_checkpoint_and_the_resumed_eigenpro_run_matches(backend, tmp_path, mnist):
    from asyncopt import EigenProClassifier

    code, out, err, seconds = _sigterm_mid_run("eigenpro", backend, tmp_path)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "finished" not in out and "checkpoint written to" in err
    state = TrainingState.read(latest_checkpoint(tmp_path))
    assert 0 < state.samples < 20_000
    X, y, Xt, yt = mnist
    params = dict(bandwidth=10.0, epochs=4, evals_per_epoch=8, random_state=0, checkpoint_every=None)
    resumed = EigenProClassifier(
        backend=backend, n_workers=2, threads_per_worker=1, checkpoint_dir=tmp_path, **params
    ).fit(X[:5_000], y[:5_000], resume=True)
    whole = EigenProClassifier(**params).fit(X[:5_000], y[:5_000])
    assert resumed.history_[-1]["samples"] == whole.history_[-1]["samples"] == 20_000
    assert len(resumed.history_) == len(whole.history_)
    assert resumed.score(X[:5_000], y[:5_000]) >= 0.999
    assert abs(resumed.score(Xt[:5000], yt[:5000]) - whole.score(Xt[:5000], yt[:5000])) <= 0.005
    print(f"{backend}: stopped {seconds:.1f} s after SIGTERM at sample {state.samples}")


@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_sigterm_leaves_a_checkpoint_and_the_resumed_proxsgd_run_matches(backend, tmp_path):
    require_data("a9a")
    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a

    code, out, err, seconds = _sigterm_mid_run("proxsgd", backend, tmp_path)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "checkpoint written to" in err
    state = TrainingState.read(latest_checkpoint(tmp_path))
    X, y, Xt, yt = load_a9a()
    assert 0 < state.samples < 15 * X.shape[0]
    params = dict(
        penalty="l1", alpha=1e-4, fit_intercept=False, max_epochs=15, evals_per_epoch=4, tol=None, random_state=0
    )
    resumed = ProxSGDClassifier(
        backend=backend, n_workers=2, threads_per_worker=1, checkpoint_dir=tmp_path, checkpoint_every=None, **params
    ).fit(X, y, resume=True)
    whole = ProxSGDClassifier(**params).fit(X, y)
    assert resumed.history_[-1]["epoch"] == whole.history_[-1]["epoch"] == 15
    f_resumed, f_whole = resumed.history_[-1]["objective"], whole.history_[-1]["objective"]
    # An asynchronous run's plateau schedule halves the step at other evaluations than the serial
    # run's, so the final objectives fall in modes: about 1e-3 or 3e-3 apart in 13 runs here, and
    # the code before the engines split shows the same 3e-3 mode under load (8 runs); 5.4e-3 once
    # in CI, where the two-worker test's 3e-3 failed.
    assert abs(f_resumed - f_whole) / f_whole < 1e-2
    assert abs(resumed.score(Xt, yt) - whole.score(Xt, yt)) <= 0.005
    print(f"{backend}: stopped {seconds:.1f} s after SIGTERM at sample {state.samples}")


KILL_SCRIPT = """
import os, sys, time
import torch
from asyncopt import persistence
from asyncopt.training import TrainingState
folder, where = sys.argv[1:3]
def state(value):
    return TrainingState(params=torch.full((2_000_000, 4), float(value)), coordinator={"stream": {"issued": value}},
                         telemetry={}, algorithm={}, run={}, history=[], training_seconds=0.0)
state(1).write(folder)  # a finished checkpoint
if where == "mid-write":  # the second write stops half way through its bytes
    real_fdopen = os.fdopen
    class Half:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *a): self.f.close()
        def write(self, data):
            self.f.write(data[: len(data) // 2]); self.f.flush()
            print("in-write", flush=True); time.sleep(60)
        def __getattr__(self, name): return getattr(self.f, name)
    os.fdopen = lambda *a, **k: Half(real_fdopen(*a, **k))
else:  # the second write is complete and synced, not yet renamed
    def stall(*a):
        print("in-write", flush=True); time.sleep(60)
    persistence.os.replace = stall
state(2).write(folder)
"""


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(where, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == "in-write", proc.stderr.read() if proc.poll() is not None else line
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the kill did not land inside the write"
    files = checkpoint_files(tmp_path)
    assert [f.name for f in files] == ["checkpoint-00000001.safetensors"]
    state = TrainingState.read(latest_checkpoint(tmp_path))
    assert state.samples == 1 and float(state.params[0, 0]) == 1.0
