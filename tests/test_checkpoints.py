"""Checkpoints and resuming: the serial engine resumes bit-identically, refusals are clear, and
signals leave a checkpoint."""

import signal

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits

from asyncopt import EigenProClassifier, EigenProRegressor, ProxSGDClassifier, ProxSGDRegressor
from asyncopt.persistence import checkpoint_files, latest_checkpoint
from asyncopt.training import TrainingState
from asyncopt.training.checkpoints import RunCheckpointer


def _digits():
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16, y[:600]


def _wide_sparse(n=1500, d=20000, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=5e-4, random_state=rng, format="csr")
    w = rng.normal(size=d)
    return X, (X @ w + 0.1 * rng.normal(size=n) > 0).astype(int)


def _dense_regression(n=400, d=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=n)


CASES = {
    "eigenpro": (EigenProClassifier, dict(epochs=2, evals_per_epoch=4), _digits),
    "eigenpro-delay": (
        EigenProRegressor,
        dict(epochs=2, evals_per_epoch=3, batch_size=50, max_delay=3, delay="random", inconsistent_reads=True),
        _dense_regression,
    ),
    "proxsgd-eager": (
        ProxSGDRegressor,
        dict(penalty="l1", alpha=1e-3, max_epochs=4, evals_per_epoch=2),
        _dense_regression,
    ),
    "proxsgd-eager-blocks-delay": (
        ProxSGDRegressor,
        dict(penalty="l1", alpha=1e-3, max_epochs=4, evals_per_epoch=2, n_blocks=3, max_delay=2),
        _dense_regression,
    ),
    "proxsgd-svrg": (
        ProxSGDRegressor,
        dict(penalty="elasticnet", alpha=1e-3, max_epochs=4, evals_per_epoch=2, variance_reduction="svrg"),
        _dense_regression,
    ),
    "proxsgd-lazy": (
        ProxSGDClassifier,
        dict(penalty="l1", alpha=1e-4, batch_size=4, n_blocks=2, max_epochs=3, evals_per_epoch=3),
        _wide_sparse,
    ),
    "proxsgd-lazy-svrg": (
        ProxSGDClassifier,
        dict(
            penalty="l1",
            alpha=1e-4,
            batch_size=4,
            n_blocks=2,
            max_epochs=3,
            evals_per_epoch=3,
            variance_reduction="svrg",
        ),
        _wide_sparse,
    ),
}


def _without_time(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def _fitted_arrays(est):
    return est.weights_ if hasattr(est, "weights_") else np.concatenate([np.ravel(est.coef_), np.ravel(est.intercept_)])


def _stop_at(k):
    seen = {"n": 0}

    def callback(entry):
        seen["n"] += 1
        return seen["n"] == k

    return callback


@pytest.mark.parametrize("stop_after", [1, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_serial_resume_at_an_evaluation_point_is_bit_identical(case, stop_after, tmp_path):
    cls, params, data = CASES[case]
    X, y = data()
    params = {**params, "random_state": 0, "checkpoint_every": None}
    if cls in (ProxSGDRegressor, ProxSGDClassifier):
        params["tol"] = None
    whole = cls(**params).fit(X, y)
    stopped = cls(**params, callback=_stop_at(stop_after), checkpoint_dir=tmp_path).fit(X, y)
    assert len(stopped.history_) == stop_after < len(whole.history_)
    resumed = cls(**params, checkpoint_dir=tmp_path).fit(X, y, resume=True)
    assert np.array_equal(_fitted_arrays(resumed), _fitted_arrays(whole))
    assert _without_time(resumed.history_) == _without_time(whole.history_)
    assert resumed.telemetry_["staleness_histogram"] == whole.telemetry_["staleness_histogram"]


def test_lazy_cases_do_run_lazily():
    """The lazy cases above exercise the just-in-time prox (a checkpoint catches its rows up)."""
    from asyncopt.estimators import proxsgd as module

    made = []
    original = module.ProxSGDAlgorithm.__post_init__

    def spy(self):
        original(self)
        made.append(self)

    module.ProxSGDAlgorithm.__post_init__ = spy
    try:
        cls, params, data = CASES["proxsgd-lazy-svrg"]
        cls(**params, random_state=0).fit(*data())
    finally:
        module.ProxSGDAlgorithm.__post_init__ = original
    assert made and made[-1].lazy_active and made[-1].variance_reduction


@pytest.mark.parametrize("case", ["eigenpro", "proxsgd-eager", "proxsgd-lazy"])
def test_a_stop_between_evaluation_points_saves_and_resumes(case, tmp_path, monkeypatch):
    """A signal mid-segment: the engine saves at the next drained point, fit raises
    KeyboardInterrupt; the resumed fit ends where the uninterrupted one does (exactly for eager
    updates; lazy rows are caught up in the checkpoint, a different rounding)."""
    cls, params, data = CASES[case]
    X, y = data()
    params = {**params, "random_state": 0, "checkpoint_every": None, **({} if "eigenpro" in case else {"tol": None})}
    whole = cls(**params).fit(X, y)
    calls = {"n": 0}

    def stop_requested(self):
        calls["n"] += 1
        return signal.SIGINT if calls["n"] == 2 else None  # the serial engine asks after every step

    monkeypatch.setattr(RunCheckpointer, "stop_requested", stop_requested)
    # (tasks of one batch, so that the serial engine asks between batches: its compiled tasks, which
    # dense data takes too since session 32, hold up to 4,096 samples, the whole of this epoch; the
    # resumed fit, with the usual tasks, still ends where the uninterrupted one does)
    monkeypatch.setattr("asyncopt.engines.serial.TASK_SAMPLES", 1)
    with pytest.raises(KeyboardInterrupt, match="checkpoint written to"):
        cls(**params, checkpoint_dir=tmp_path).fit(X, y)
    monkeypatch.undo()
    state = TrainingState.read(latest_checkpoint(tmp_path))
    assert 0 < state.samples < X.shape[0]
    resumed = cls(**params, checkpoint_dir=tmp_path).fit(X, y, resume=True)
    if case == "proxsgd-lazy":
        np.testing.assert_allclose(_fitted_arrays(resumed), _fitted_arrays(whole), rtol=0, atol=1e-9)
    else:
        assert np.array_equal(_fitted_arrays(resumed), _fitted_arrays(whole))
    assert len(resumed.history_) == len(whole.history_)


def test_resume_extends_a_finished_run(tmp_path):
    X, y = _dense_regression()
    params = dict(penalty="l1", alpha=1e-3, evals_per_epoch=2, random_state=0, tol=None, checkpoint_every=None)
    whole = ProxSGDRegressor(max_epochs=4, **params).fit(X, y)
    ProxSGDRegressor(max_epochs=2, checkpoint_dir=tmp_path, **params).fit(X, y)
    longer = ProxSGDRegressor(max_epochs=4, checkpoint_dir=tmp_path, **params).fit(X, y, resume=True)
    assert np.array_equal(longer.coef_, whole.coef_)
    assert [e["epoch"] for e in longer.history_] == [e["epoch"] for e in whole.history_]


def test_checkpoints_every_n_samples_keep_the_newest_two(tmp_path):
    X, y = _dense_regression()
    ProxSGDRegressor(
        max_epochs=3, random_state=0, tol=None, checkpoint_dir=tmp_path, checkpoint_every="100 samples"
    ).fit(X, y)
    files = checkpoint_files(tmp_path)
    assert len(files) == 2
    numbers = [int(f.name.split("-")[1].split(".")[0]) for f in files]
    assert numbers[1] == numbers[0] + 1 and numbers[1] >= 10  # 1200 samples in batches of 32: 9 due + the end
    assert TrainingState.read(files[-1]).samples == 1200


def test_history_seconds_continue_across_a_resume(tmp_path):
    X, y = _digits()
    params = dict(epochs=2, evals_per_epoch=2, random_state=0, checkpoint_dir=tmp_path, checkpoint_every=None)
    first = EigenProClassifier(**params, callback=_stop_at(2)).fit(X, y)
    resumed = EigenProClassifier(**params).fit(X, y, resume=True)
    seconds = [e["seconds"] for e in resumed.history_]
    assert seconds[:2] == [e["seconds"] for e in first.history_]
    assert seconds[2] > seconds[1]


def test_random_state_none_resumes_with_the_checkpoints_seed(tmp_path):
    X, y = _digits()
    params = dict(epochs=2, evals_per_epoch=2, checkpoint_dir=tmp_path, checkpoint_every=None)
    EigenProClassifier(**params, callback=_stop_at(1)).fit(X, y)
    seed = TrainingState.read(latest_checkpoint(tmp_path)).setup["seed"]
    resumed = EigenProClassifier(**params).fit(X, y, resume=True)
    whole = EigenProClassifier(epochs=2, evals_per_epoch=2, random_state=seed).fit(X, y)
    assert np.array_equal(resumed.weights_, whole.weights_)


# -- refusals ------------------------------------------------------------------------------
@pytest.fixture
def proxsgd_checkpoint(tmp_path):
    X, y = _dense_regression()
    params = dict(penalty="l1", alpha=1e-3, max_epochs=2, random_state=0, checkpoint_dir=tmp_path)
    ProxSGDRegressor(**params).fit(X, y)
    return X, y, params


def test_resume_refuses_other_data(proxsgd_checkpoint):
    X, y, params = proxsgd_checkpoint
    with pytest.raises(ValueError, match="other training data"):
        ProxSGDRegressor(**params).fit(X[:-1], y[:-1], resume=True)
    X2 = X.copy()
    X2[0, 0] += 1.0
    with pytest.raises(ValueError, match="other training data"):
        ProxSGDRegressor(**params).fit(X2, y, resume=True)


def test_resume_refuses_other_settings_and_names_them(proxsgd_checkpoint):
    X, y, params = proxsgd_checkpoint
    with pytest.raises(ValueError, match=r"alpha=0\.001 -> 0\.01"):
        ProxSGDRegressor(**{**params, "alpha": 1e-2}).fit(X, y, resume=True)
    with pytest.raises(ValueError, match="batch_size"):
        ProxSGDRegressor(**{**params, "batch_size": 7}).fit(X, y, resume=True)


def test_resume_refuses_a_checkpoint_of_another_estimator(proxsgd_checkpoint):
    X, y, params = proxsgd_checkpoint
    with pytest.raises(ValueError, match="a checkpoint of ProxSGDRegressor, not of EigenProRegressor"):
        EigenProRegressor(checkpoint_dir=params["checkpoint_dir"]).fit(X, y, resume=True)


def test_resume_without_a_checkpoint(tmp_path):
    X, y = _dense_regression()
    with pytest.raises(ValueError, match="resume needs checkpoint_dir"):
        ProxSGDRegressor().fit(X, y, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        ProxSGDRegressor(checkpoint_dir=tmp_path).fit(X, y, resume=True)
    fresh = ProxSGDRegressor(checkpoint_dir=tmp_path, max_epochs=1, random_state=0).fit(X, y, resume="auto")
    assert fresh.history_ and latest_checkpoint(tmp_path) is not None
    with pytest.raises(ValueError, match="must be False, True or 'auto'"):
        ProxSGDRegressor(checkpoint_dir=tmp_path).fit(X, y, resume="yes")


def test_bad_checkpoint_every_is_a_clear_error(tmp_path):
    X, y = _dense_regression()
    with pytest.raises(ValueError, match="checkpoint_every"):
        ProxSGDRegressor(checkpoint_dir=tmp_path, checkpoint_every="often").fit(X, y)


def test_a_damaged_checkpoint_names_the_file(proxsgd_checkpoint):
    X, y, params = proxsgd_checkpoint
    path = latest_checkpoint(params["checkpoint_dir"])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=str(path)):
        ProxSGDRegressor(**params).fit(X, y, resume=True)


def test_a_checkpoint_holds_no_pickle(proxsgd_checkpoint, monkeypatch):
    import pickle

    X, y, params = proxsgd_checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while reading a checkpoint")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    state = TrainingState.read(latest_checkpoint(params["checkpoint_dir"]))
    assert state.samples == 2 * X.shape[0]


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_diverging_worker_raises_training_diverged_itself(backend):
    from asyncopt import TrainingDiverged

    rng = np.random.default_rng(0)
    X = sp.random(3000, 50, density=0.2, random_state=0, format="csr") * 100
    y = rng.integers(0, 2, 3000)
    est = ProxSGDClassifier(loss="squared", penalty="l1", step_size=1e8, backend=backend, n_workers=2, max_epochs=5)
    with pytest.raises(TrainingDiverged, match="Lower step_size") as info:
        est.fit(X, y)
    assert any("raised in worker" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("sparse", [False, True])
def test_server_clocks_continue_across_a_resume(sparse, tmp_path):
    """Servers in the workers (threads): each server's clock is saved with the coordinator's state
    and a resumed run continues it, so the intercept server's clock equals every update of the
    whole run, and the block servers' clocks add up to it (Python path dense, compiled sparse)."""
    X, y = _dense_regression()
    X = sp.csr_matrix(X) if sparse else X
    params = dict(penalty="l1", alpha=1e-3, n_blocks=2, push="block", random_state=0, tol=None,  # (one server an
                  checkpoint_every=None, backend="threads", n_workers=2, threads_per_worker=1,  # update)
                  checkpoint_dir=tmp_path)  # fmt: skip
    first = ProxSGDRegressor(max_epochs=2, **params).fit(X, y)
    longer = ProxSGDRegressor(max_epochs=4, **params).fit(X, y, resume=True)
    before, after = first.telemetry_, longer.telemetry_
    assert after["updates"] > before["updates"] > 0
    assert sum(after["server_updates"][:2]) == after["server_updates"][2] == after["updates"]
    assert all(a > b for a, b in zip(after["server_updates"], before["server_updates"], strict=True))
