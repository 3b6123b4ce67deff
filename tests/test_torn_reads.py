"""Lock-free snapshot reads (engines/snapshots.py): a copy torn by a write is repaired to one whole
version, and EigenPro on the real threads engine converges with torn reads forced on a worker (and
does not without the repair: the control that shows the test can fail)."""

import threading
import time

import numpy as np
import pytest
import torch

from asyncopt import EigenProClassifier, TrainingDiverged
from asyncopt.engines import atomics, servers, snapshots


class _Store:
    """A store of 100 rows written by logged writes, as ServerGroup writes EigenPro's updates."""

    def __init__(self):
        self.words = atomics.new_sync(1).numpy()
        self.log = snapshots.WriteLog(capacity=100)
        self.params = torch.zeros((100, 2), dtype=torch.float64)
        self.lock = threading.Lock()

    def write(self, rows, value, pause=0.0):
        rows = torch.as_tensor(rows)

        def apply():
            for i, r in enumerate(rows.tolist()):  # row by row, so that a copy can cut through it
                self.params[r] += value
                if pause and i == len(rows) // 2:
                    time.sleep(pause)

        with self.lock:
            snapshots.logged_write(self.words, self.log, rows, apply)

    def read(self, copy):
        return snapshots.snapshot_read(self.words, self.log, self.params, self.lock, snapshots.ReadStats(), copy)


def test_copy_torn_by_a_finished_write_is_repaired():
    store = _Store()
    store.write([1, 60], 1.0)
    rows = [3, 10, 70, 99]  # two rows in each half of the copy

    def tearing_copy(params):
        out = torch.empty_like(params)
        out[:50] = params[:50]
        store.write(rows, 2.0)  # lands between the halves: the copy holds rows 70, 99 of it only
        out[50:] = params[50:]
        return out

    version, seen = store.read(tearing_copy)
    assert version == 2
    assert torch.equal(seen, store.params)


def test_copy_torn_by_a_write_in_progress_waits_for_it_and_repairs():
    store = _Store()
    writer = threading.Thread(target=store.write, args=(list(range(0, 100, 7)), 5.0, 0.2))

    def tearing_copy(params):
        out = torch.empty_like(params)
        out[:50] = params[:50]
        writer.start()
        time.sleep(0.05)  # the writer is half way through its rows
        out[50:] = params[50:]
        return out

    version, seen = store.read(tearing_copy)
    writer.join()
    assert version == 1
    assert torch.equal(seen, store.params)  # the whole write, though the copy ended in its middle


def test_without_the_log_a_torn_copy_mixes_part_of_an_update():
    """What the repair removes: the same tear, read plainly, is no version of the store."""
    store = _Store()
    out = torch.empty_like(store.params)
    out[:50] = store.params[:50]
    store.write([3, 70], 2.0)
    out[50:] = store.params[50:]
    assert not torch.equal(out, store.params) and not torch.equal(out, torch.zeros_like(out))


def test_overrun_ring_falls_back_to_a_locked_copy():
    store = _Store()

    def slow_copy(params):
        out = params.clone()
        for k in range(snapshots.SLOTS + 3):  # more writes than the ring holds, during the copy
            store.write([k % 100], 1.0)
        return out

    stats = snapshots.ReadStats()
    version, seen = snapshots.snapshot_read(store.words, store.log, store.params, store.lock, stats, slow_copy)
    assert version == snapshots.SLOTS + 3 and torch.equal(seen, store.params)
    assert stats.locked == 1


def _tear_one_worker(monkeypatch):
    """Every copy of the first worker thread reads the first half of the rows, waits until another
    worker's write has begun, then reads the second half: half before, half after an update."""
    seen = {"worker": None, "tears": 0}

    def tearing_copy(self, params):
        if seen["worker"] is None:
            seen["worker"] = threading.get_ident()
        if threading.get_ident() != seen["worker"]:
            return params.clone()
        half = params.shape[0] // 2
        out = torch.empty_like(params)
        out[:half] = params[:half]
        begun = int(self.words[atomics.BEGIN_WORD])
        deadline = time.monotonic() + 2.0
        while int(self.words[atomics.BEGIN_WORD]) == begun and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(0.002)  # let the write land
        seen["tears"] += int(self.words[atomics.BEGIN_WORD]) > begun
        out[half:] = params[half:]
        return out

    monkeypatch.setattr(servers.ServerGroup, "_copy", tearing_copy)
    return seen


def _fit_mnist_3000(mnist):
    X, y = mnist[0][:3000], mnist[1][:3000]
    est = EigenProClassifier(backend="threads", n_workers=2, threads_per_worker=1, epochs=3, random_state=0)
    est.fit(X, y)
    return est, X, y


def test_threads_engine_converges_with_forced_torn_reads(monkeypatch, mnist):
    torn = _tear_one_worker(monkeypatch)
    est, X, y = _fit_mnist_3000(mnist)
    assert torn["tears"] >= 3  # reads really were torn by updates
    assert est.telemetry_["reads_repaired"] >= torn["tears"]
    assert est.score(X, y) >= 0.99
    assert est.history_[-1]["train_mse"] < 0.02
    assert est.score(mnist[2][:2000], mnist[3][:2000]) >= 0.88


def test_control_without_the_repair_torn_reads_break_the_fit(monkeypatch, mnist):
    """The same tears read plainly (the old lock-free read): far from interpolating, or diverged."""
    torn = _tear_one_worker(monkeypatch)

    def plain_read(words, log, params, lock, stats, copy=torch.clone):
        return int(words[atomics.VERSION_WORD]), copy(params)

    monkeypatch.setattr(snapshots, "snapshot_read", plain_read)
    try:
        est, X, y = _fit_mnist_3000(mnist)
    except Exception as exc:  # noqa: BLE001 - diverging is one way to break
        assert "diverged" in str(exc)
        return
    assert torn["tears"] >= 3
    assert est.history_[-1]["train_mse"] > 0.5 or not np.isfinite(est.history_[-1]["train_mse"])


def test_simulator_whole_rule_reads_one_version_and_torn_reads_do_not():
    from asyncopt.engines.serial import SerialEngine

    rng = np.random.default_rng(0)
    diffs = [torch.randn(64, 3, dtype=torch.float64) for _ in range(7)]
    params = sum(diffs)
    versions = [params - sum(diffs[len(diffs) - k :], torch.zeros_like(params)) for k in range(8)]
    engine = SerialEngine(max_delay=7, inconsistent_reads=True)
    for _ in range(20):
        seen, staleness = engine._read(params, diffs, rng, whole=True)
        assert torch.allclose(seen, versions[staleness])
    torn = [engine._read(params, diffs, rng, whole=False) for _ in range(20)]
    assert not all(torch.allclose(seen, versions[s]) for seen, s in torn)


def test_serial_eigenpro_with_the_rule_converges_where_torn_reads_break():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16
    common = dict(backend="serial", max_delay=7, epochs=4, random_state=0)
    whole = EigenProClassifier(inconsistent_reads=True, **common).fit(X, y)
    assert whole.score(X, y) >= 0.99
    # torn: the train MSE grows past 1e6 times that of zero weights, which stops the fit (it used
    # to end at 2.5e30 with no error)
    with pytest.raises(TrainingDiverged, match="times that of zero weights"):
        EigenProClassifier(inconsistent_reads="torn", **common).fit(X, y)


def test_inconsistent_reads_takes_a_bool_or_torn():
    with pytest.raises(ValueError, match="inconsistent_reads"):
        EigenProClassifier(inconsistent_reads="sometimes").fit(np.eye(4), [0, 1, 0, 1])
