"""Inputs that used to give silent wrong answers: each is now a clear error or a warning."""

import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from asyncopt import (
    EigenProClassifier,
    EigenProRegressor,
    MemoryBudgetError,
    ProxSGDClassifier,
    ProxSGDRegressor,
    TrainingDiverged,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _classification(n=200, n_val=50, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X, Xv = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
    return X, (X[:, 0] > 0).astype(int), Xv, (Xv[:, 0] > 0).astype(int)


def _regression(n=200, n_val=50, d=5, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    X, Xv = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
    return X, X @ w + 0.01 * rng.normal(size=n), Xv, Xv @ w


CLASSIFIERS = [
    pytest.param(lambda **kw: EigenProClassifier(epochs=2, random_state=0, **kw), id="EigenProClassifier"),
    pytest.param(lambda **kw: ProxSGDClassifier(max_epochs=2, random_state=0, **kw), id="ProxSGDClassifier"),
]
REGRESSORS = [
    pytest.param(lambda **kw: EigenProRegressor(epochs=2, bandwidth=3.0, random_state=0, **kw), id="EigenProRegressor"),
    pytest.param(lambda **kw: ProxSGDRegressor(max_epochs=3, random_state=0, **kw), id="ProxSGDRegressor"),
]
ALL = CLASSIFIERS + REGRESSORS


def _data_for(est):
    return _classification() if hasattr(est, "predict_proba") or "Classifier" in type(est).__name__ else _regression()


# -- 1, 2: validation sets -----------------------------------------------------------------------
@pytest.mark.parametrize("make", ALL)
def test_X_val_without_y_val_and_the_reverse_are_errors(make):
    est = make()
    X, y, Xv, yv = _data_for(est)
    with pytest.raises(ValueError, match="X_val given without y_val"):
        est.fit(X, y, X_val=Xv)
    with pytest.raises(ValueError, match="y_val given without X_val"):
        est.fit(X, y, y_val=yv)


@pytest.mark.parametrize("make", ALL)
def test_y_val_of_the_wrong_length_names_both_lengths(make):
    est = make()
    X, y, Xv, yv = _data_for(est)
    with pytest.raises(ValueError, match="X_val has 50 samples but y_val has 40"):
        est.fit(X, y, X_val=Xv, y_val=yv[:40])


def test_val_target_without_a_validation_set_is_an_error():
    X, y, _, _ = _classification()
    with pytest.raises(ValueError, match="val_target=0.9 .* needs a validation set"):
        EigenProClassifier(epochs=2, val_target=0.9).fit(X, y)


@pytest.mark.parametrize("make", CLASSIFIERS)
def test_unseen_validation_labels_count_as_errors_and_are_warned_about(make):
    X, y, Xv, yv = _classification()
    y_unseen = np.where(yv == 1, 7, yv)  # class 1 of the validation set relabelled 7, never seen in training
    est = make()
    with pytest.warns(UserWarning, match=r"labels never seen in training \(7;"):
        est.fit(X, y, X_val=Xv, y_val=y_unseen)
    expected = float(np.mean(est.predict(Xv) == y_unseen))  # the 7s are all errors
    assert 0 < expected < 1
    assert est.history_[-1]["val_metric"] == pytest.approx(expected)
    with pytest.warns(UserWarning, match=r"never seen in training \('0', '1'"):  # str labels, int classes
        est.fit(X, y, X_val=Xv, y_val=yv.astype(str))


@pytest.mark.parametrize("make", CLASSIFIERS)
def test_validation_accuracy_is_recorded_at_every_entry(make):
    X, y, Xv, yv = _classification()
    est = make().fit(X, y, X_val=Xv, y_val=list(yv))
    assert all(h["val_metric"] is not None and 0 <= h["val_metric"] <= 1 for h in est.history_)
    assert est.history_[-1]["val_metric"] == pytest.approx(est.score(Xv, yv))


@pytest.mark.parametrize("make", REGRESSORS)
def test_validation_r2_is_recorded_at_every_entry(make):
    X, y, Xv, yv = _regression()
    est = make().fit(X, y, X_val=Xv, y_val=yv.reshape(-1, 1))  # a column is one target per sample
    assert all(h["val_metric"] is not None for h in est.history_)
    assert est.history_[-1]["val_metric"] == pytest.approx(est.score(Xv, yv))
    with pytest.raises(ValueError, match=r"y_val has shape \(50, 2\)"):
        make().fit(X, y, X_val=Xv, y_val=np.c_[yv, yv])


def test_proxsgd_validation_with_sparse_group_permuted_and_multiclass_data():
    rng = np.random.default_rng(1)
    X = sp.random(400, 30, density=0.3, format="csr", random_state=1)
    w = rng.normal(size=30)
    y = np.asarray(X @ w).ravel()
    Xv, yv = X[:100], y[:100]
    groups = np.arange(30) % 4  # penalty="group_l1" permutes the features: the validation set too
    model = ProxSGDRegressor(penalty="group_l1", groups=groups, alpha=1e-4, max_epochs=3, random_state=0)
    model.fit(X, y, X_val=Xv, y_val=yv)
    assert model.history_[-1]["val_metric"] == pytest.approx(model.score(Xv, yv))
    labels = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    for multi_class in ("ovr", "multinomial"):
        clf = ProxSGDClassifier(multi_class=multi_class, max_epochs=3, random_state=0)
        clf.fit(X, labels, X_val=Xv, y_val=labels[:100])
        assert clf.history_[-1]["val_metric"] == pytest.approx(clf.score(Xv, labels[:100]))


def test_proxsgd_validation_survives_a_checkpoint_and_resume(tmp_path):
    X, y, Xv, yv = _classification(n=300)
    params = dict(max_epochs=4, tol=None, random_state=0, checkpoint_dir=tmp_path, checkpoint_every=None)
    whole = ProxSGDClassifier(**{**params, "checkpoint_dir": None}).fit(X, y, X_val=Xv, y_val=yv)
    stopped = ProxSGDClassifier(**params, callback=lambda e: e.epoch >= 2).fit(X, y, X_val=Xv, y_val=yv)
    assert len(stopped.history_) == 2
    resumed = ProxSGDClassifier(**params).fit(X, y, X_val=Xv, y_val=yv, resume=True)
    assert [h["val_metric"] for h in resumed.history_] == [h["val_metric"] for h in whole.history_]
    assert np.array_equal(resumed.coef_, whole.coef_)


# -- 3: divergence before overflow ---------------------------------------------------------------
def test_proxsgd_divergence_is_caught_long_before_overflow():
    X, y, _, _ = _regression(n=300)
    with pytest.raises(TrainingDiverged, match=r"objective grew from .* Lower step_size \(now 1e\+06"):
        ProxSGDRegressor(step_size=1e6, random_state=0).fit(X, y)


def test_proxsgd_divergence_test_leaves_normal_and_noisy_runs_alone():
    X, y, _, _ = _regression(n=300)
    for step in ("auto", 1.0):  # 1.0: about twice the automatic step, noisy but not diverging
        model = ProxSGDRegressor(step_size=step, schedule="constant", tol=None, max_epochs=5, random_state=0)
        assert np.isfinite(model.fit(X, y).coef_).all()


# -- 4: one class -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [EigenProClassifier, ProxSGDClassifier])
def test_one_class_is_an_error_like_scikit_learns(cls):
    X, _, _, _ = _classification()
    with pytest.raises(ValueError, match="at least (2|two) classes"):
        cls().fit(X, np.full(len(X), 3))


# -- 5: parameters a backend ignores -------------------------------------------------------------
@pytest.mark.parametrize("cls", [EigenProClassifier, ProxSGDClassifier])
def test_parameters_the_backend_would_ignore_are_errors(cls):
    X, y, _, _ = _classification()
    with pytest.raises(ValueError, match="n_workers=2 is used by backend='threads', 'processes' or 'ray'"):
        cls(n_workers=2).fit(X, y)
    with pytest.raises(ValueError, match="synchronous=True .* backend='serial' would ignore it"):
        cls(synchronous=True).fit(X, y)
    with pytest.raises(ValueError, match="max_delay=3: the delay simulator of backend='serial' only"):
        cls(backend="threads", max_delay=3).fit(X, y)
    with pytest.raises(ValueError, match="inconsistent_reads=True: the delay simulator"):
        cls(backend="processes", n_workers=2, inconsistent_reads=True).fit(X, y)


@pytest.mark.parametrize("cls", [EigenProClassifier, ProxSGDClassifier])
def test_many_more_workers_than_cores_is_a_warning(cls, monkeypatch):
    X, y, _, _ = _classification()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    epochs = {"epochs": 1} if cls is EigenProClassifier else {"max_epochs": 1}
    with pytest.warns(UserWarning, match="n_workers=5 is more than 4x this machine's 1 cores"):
        cls(backend="threads", n_workers=5, threads_per_worker=1, random_state=0, **epochs).fit(X, y)


# -- 6: the memory budget before densifying ------------------------------------------------------
def test_sparse_training_data_is_checked_against_the_budget_before_it_is_densified():
    rng = np.random.default_rng(0)
    X = sp.random(20_000, 3_000, density=1e-3, format="csr", random_state=rng)  # dense: 0.45 GiB in float64
    y = np.ones(X.shape[0])
    tracemalloc.start()
    try:
        with pytest.raises(MemoryBudgetError, match=r"dense copy of the sparse X \(20000 x 3000, float64\)"):
            EigenProRegressor(memory_gb=0.1).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * 2**30  # refused before the dense copy was made


def test_sparse_queries_are_densified_a_block_at_a_time():
    X, y, _, _ = _classification()
    clf = EigenProClassifier(epochs=2, random_state=0).fit(X, y, X_val=sp.csr_matrix(X[:50]), y_val=y[:50])
    assert np.array_equal(clf.predict(sp.csc_matrix(X)), clf.predict(X))
    assert clf.history_[-1]["val_metric"] == pytest.approx(clf.score(X[:50], y[:50]))


# -- 7: callback entries read like history_ rows --------------------------------------------------
@pytest.mark.parametrize("make", ALL)
def test_callback_entries_read_as_attributes_and_as_dicts(make):
    seen = []
    est = make(callback=seen.append)
    X, y, Xv, yv = _data_for(est)
    est.fit(X, y, X_val=Xv, y_val=yv)
    assert len(seen) == len(est.history_) > 0
    for entry, row in zip(seen, est.history_, strict=True):
        assert list(entry.keys()) == list(row.keys()) and len(entry) == len(row)
        assert dict(entry) == row and dict(entry.items()) == row and list(entry.values()) == list(row.values())
        assert entry["val_metric"] == entry.val_metric == row["val_metric"]
        assert entry["samples"] == entry.samples
        assert "val_metric" in entry and "no_such_key" not in entry and 0 not in entry
        assert entry.get("seconds") == entry.seconds and entry.get("no_such_key", 5) == 5
        with pytest.raises(KeyError):
            entry["no_such_key"]
    key = "objective" if "ProxSGD" in type(est).__name__ else "train_mse"
    assert seen[-1][key] == getattr(seen[-1], key)


# -- 8: backend="processes" from an unguarded script ---------------------------------------------
UNGUARDED = {
    "eigenpro": "EigenProClassifier(epochs=1, backend='processes', n_workers=2, threads_per_worker=1).fit(X, y)",
    "proxsgd": "ProxSGDClassifier(max_epochs=1, backend='processes', n_workers=2, threads_per_worker=1).fit(X, y)",
    # the fit guarded, the pool's early start not: its processes exit, the fit's replacements too
    "start_worker_pool": "import asyncopt; asyncopt.start_worker_pool(2); (ProxSGDClassifier(max_epochs=1, "
    "backend='processes', n_workers=2, threads_per_worker=1).fit(X, y) if __name__ == '__main__' else None)",
}


@pytest.mark.parametrize("family", sorted(UNGUARDED))
def test_processes_backend_from_an_unguarded_script_is_one_short_error(family, tmp_path):
    script = tmp_path / "unguarded_fit.py"
    script.write_text(
        textwrap.dedent(f"""
            import numpy as np
            from asyncopt import EigenProClassifier, ProxSGDClassifier
            X = np.random.default_rng(0).normal(size=(60, 3))
            y = (X[:, 0] > 0).astype(int)
            {UNGUARDED[family]}
            print("fitted")
        """)
    )
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env
    )
    assert run.returncode != 0 and "fitted" not in run.stdout
    assert (
        f"backend='processes' starts workers that re-import your script {script}; put the code that fits "
        "(and any asyncopt.start_worker_pool call) under `if __name__ == '__main__':`" in run.stderr
    ), run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) < 30, run.stderr
    assert "stopped unexpectedly" not in run.stderr and "kernel callables" not in run.stderr


# -- 9: import time ------------------------------------------------------------------------------
def test_import_asyncopt_loads_neither_torch_nor_scikit_learn():
    code = (
        "import sys, asyncopt; heavy = [m for m in ('torch', 'sklearn', 'scipy', 'numba') if m in sys.modules]; "
        "print('heavy:' + ','.join(heavy)); from asyncopt import EigenProClassifier, load; "
        "print('numba' in sys.modules, asyncopt.EigenProClassifier is EigenProClassifier, 'load' in dir(asyncopt))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    heavy, after = out.stdout.strip().splitlines()
    assert heavy == "heavy:"
    assert after == "False True True"  # EigenPro alone does not load numba (ProxSGD's compiled kernels do)


def test_lazily_imported_estimators_pickle():
    X, y, _, _ = _classification()
    import asyncopt

    clf = asyncopt.EigenProClassifier(epochs=1, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert type(again) is asyncopt.EigenProClassifier and np.array_equal(again.predict(X), clf.predict(X))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        asyncopt.nothing_here  # noqa: B018


# -- ConvergenceWarning: a fit the budget ended before its tolerance ------------------------------
def test_a_proxsgd_fit_stopped_short_of_its_tolerance_warns():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from asyncopt import ProxSGDClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20))
    y = (X @ rng.normal(size=20) > 0).astype(int)
    with pytest.warns(ConvergenceWarning, match=r"stopped at max_epochs=2 before its tol=1e-08 rule"):
        ProxSGDClassifier(max_epochs=2, tol=1e-8, random_state=0).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"the last changed it by [0-9.e-]+, relative"):
        ProxSGDClassifier(max_epochs=2, tol=1e-8, random_state=0).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"only one evaluation was made") as caught:  # (no "nan" change)
        ProxSGDClassifier(max_epochs=1, tol=1e-8, random_state=0).fit(X, y)
    assert "nan" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = ProxSGDClassifier(max_epochs=200, tol=1e-2, random_state=0).fit(X, y)  # the rule fires first
        assert est.n_iter_ < 200
        ProxSGDClassifier(max_epochs=2, tol=None, random_state=0).fit(X, y)  # no tolerance asked for
        ProxSGDClassifier(max_epochs=50, tol=1e-8, random_state=0, callback=lambda e: e.epoch >= 3).fit(X, y)


def test_an_eigenpro_fit_that_misses_its_val_target_warns():
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning

    from asyncopt import EigenProClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with pytest.warns(ConvergenceWarning, match=r"before the validation metric reached val_target=1\.01"):
        EigenProClassifier(epochs=1, val_target=1.01, random_state=0).fit(X[:1200], y[:1200], X_val=X[1200:],
                                                                         y_val=y[1200:])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = EigenProClassifier(epochs=5, val_target=0.9, random_state=0).fit(X[:1200], y[:1200], X_val=X[1200:],
                                                                               y_val=y[1200:])  # fmt: skip
        assert est.n_iter_ < 5
