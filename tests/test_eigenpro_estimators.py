import pickle

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from sklearn.datasets import load_digits

from asyncopt import EigenProClassifier, EigenProRegressor, MemoryBudgetError, TrainingDiverged


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def exact_predictions(X, Y, Q, kernel):
    K = kernel(cdist(X, X))
    return kernel(cdist(Q, X)) @ scipy.linalg.solve(K, Y, assume_a="pos")


LAPLACIAN_10 = lambda d: np.exp(-d / 10.0)  # noqa: E731


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_exact_interpolant_on_mnist(mnist, dtype):
    X, y, X_test, _ = mnist
    X, Q = X[:2000].astype(np.float64), X_test[:500].astype(np.float64)
    Y = np.eye(10)[y[:2000]]
    exact = exact_predictions(X, Y, Q, LAPLACIAN_10)
    model = EigenProRegressor(bandwidth=10.0, epochs=15, dtype=dtype, random_state=0).fit(X, Y)
    rel = np.linalg.norm(model.predict(Q) - exact) / np.linalg.norm(exact)
    assert rel < 1e-3


@pytest.mark.parametrize(
    "kernel,profile",
    [
        ("laplacian", lambda d: np.exp(-d / 2.0)),
        ("matern32", lambda d: (1 + np.sqrt(3) * d / 2.0) * np.exp(-np.sqrt(3) * d / 2.0)),
    ],
)
def test_matches_exact_interpolant_on_digits(digits, kernel, profile):
    X, y = digits
    X, Q, Y = X[:1000], X[1000:1300], np.eye(10)[y[:1000]]
    exact = exact_predictions(X, Y, Q, profile)
    model = EigenProRegressor(kernel=kernel, bandwidth=2.0, epochs=30, dtype="float64", random_state=0)
    rel = np.linalg.norm(model.fit(X, Y).predict(Q) - exact) / np.linalg.norm(exact)
    assert rel < 1e-3


def test_mnist_10k_interpolates_and_generalises(mnist):
    X, y, X_test, y_test = mnist
    clf = EigenProClassifier(bandwidth=10.0, epochs=5, random_state=0)
    clf.fit(X[:10_000], y[:10_000], X_val=X_test[:2000], y_val=y_test[:2000])
    assert clf.score(X[:10_000], y[:10_000]) == 1.0
    assert clf.history_[-1]["train_mse"] < 5e-3
    assert clf.history_[-1]["val_metric"] == pytest.approx(clf.score(X_test[:2000], y_test[:2000]))
    assert clf.score(X_test, y_test) >= 0.965


def test_reproducible_from_random_state(digits):
    X, y = digits
    a = EigenProClassifier(epochs=2, random_state=3).fit(X, y)
    b = EigenProClassifier(epochs=2, random_state=3).fit(X, y)
    c = EigenProClassifier(epochs=2, random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.array_equal(a.weights_, c.weights_)


def test_history_callback_and_automatic_choices_are_reported(digits):
    X, y = digits
    seen = []

    def stop_after_three(entry):
        seen.append(entry)
        return len(seen) == 3

    clf = EigenProClassifier(epochs=10, evals_per_epoch=2, callback=stop_after_three, random_state=0)
    clf.fit(X[:1500], y[:1500], X_val=X[1500:], y_val=y[1500:])
    assert len(clf.history_) == 3 and len(seen) == 3
    assert [h["epoch"] for h in clf.history_] == [0.5, 1.0, 1.5]
    assert [h["samples"] for h in clf.history_] == [750, 1500, 2250]
    secs = [h["seconds"] for h in clf.history_]
    assert secs == sorted(secs) and secs[0] > 0
    assert all(0 <= h["val_metric"] <= 1 for h in clf.history_)
    for name in [
        "bandwidth_",
        "batch_size_",
        "step_size_",
        "subsample_size_",
        "n_components_",
        "critical_batch_size_",
        "setup_seconds_",
    ]:
        assert getattr(clf, name) > 0
    assert clf.batch_size_ == max(1, round(clf.critical_batch_size_ / 4))


def test_stop_iteration_and_overrides(digits):
    X, y = digits

    def stop(entry):
        raise StopIteration

    clf = EigenProClassifier(
        epochs=5,
        batch_size=100,
        subsample_size=300,
        n_components=20,
        step_size=50.0,
        bandwidth=3.0,
        callback=stop,
        random_state=0,
    ).fit(X, y)
    assert len(clf.history_) == 1
    assert (clf.batch_size_, clf.subsample_size_, clf.n_components_, clf.step_size_, clf.bandwidth_) == (
        100,
        300,
        20,
        50.0,
        3.0,
    )


def test_time_limit_stops_mid_epoch(digits):
    X, y = digits
    clf = EigenProClassifier(epochs=10_000, batch_size=10, time_limit=0.3, random_state=0).fit(X, y)
    last = clf.history_[-1]
    assert last["seconds"] >= 0.3  # it ran until the limit ...
    assert last["epoch"] < 10_000  # ... and stopped there, not at the end of the epochs


def test_sparse_input_equals_dense(digits):
    X, y = digits
    dense = EigenProClassifier(epochs=2, random_state=0).fit(X, y)
    sparse = EigenProClassifier(epochs=2, random_state=0).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.weights_, dense.weights_, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sparse.predict(sp.csc_matrix(X)), dense.predict(X))


def test_multioutput_regression_and_pickle(digits):
    X, y = digits
    Y = np.stack([y, y**2], axis=1).astype(float)
    reg = EigenProRegressor(epochs=3, random_state=0).fit(X, Y)
    assert reg.predict(X[:7]).shape == (7, 2)
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(X[:50]), reg.predict(X[:50]))


# -- bad input: every case names the problem --------------------------------------------


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda X, y: (np.where(X == X[0, 1], np.nan, X), y), "NaN"),
        (lambda X, y: (np.where(X == X[0, 1], np.inf, X), y), "infinity"),
        (lambda X, y: (X[:0], y[:0]), "0 sample"),
        (lambda X, y: (X, y[:-3]), "inconsistent numbers of samples"),
        (lambda X, y: (X[:, 0], y), "Expected 2D array"),
        (lambda X, y: (X.astype(str).astype(object) + "px", y), "could not convert|convert string"),
    ],
)
def test_bad_training_data(digits, mutate, match):
    X, y = digits
    Xb, yb = mutate(X[:100], y[:100])
    with pytest.raises(ValueError, match=match):
        EigenProClassifier(epochs=1).fit(Xb, yb)


def test_nan_targets_and_wrong_feature_count(digits):
    X, y = digits
    with pytest.raises(ValueError, match="NaN"):
        EigenProRegressor(epochs=1).fit(X[:50], np.where(y[:50] == 1, np.nan, y[:50]))
    clf = EigenProClassifier(epochs=1).fit(X[:100], y[:100])
    with pytest.raises(ValueError, match="64 features"):
        clf.predict(X[:5, :10])


@pytest.mark.parametrize(
    "params,match",
    [
        ({"bandwidth": 0.0}, "'bandwidth' parameter"),
        ({"bandwidth": -2.0}, "'bandwidth' parameter"),
        ({"kernel": "cosine"}, "'kernel' parameter"),
        ({"dtype": "float16"}, "'dtype' parameter"),
        ({"epochs": 0}, "'epochs' parameter"),
        ({"memory_gb": -1}, "'memory_gb' parameter"),
        ({"device": "gpu7"}, "not a valid torch device"),
    ],
)
def test_bad_parameters(digits, params, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        EigenProClassifier(**{"epochs": 1, **params}).fit(X[:100], y[:100])


def test_memory_budget_too_small(digits):
    X, y = digits
    with pytest.raises(MemoryBudgetError, match="memory budget too small.*memory_gb"):
        EigenProClassifier(epochs=1, memory_gb=1e-4).fit(X, y)
    with pytest.raises(MemoryBudgetError, match="kernel chunk"):
        EigenProClassifier(epochs=1, memory_gb=0.0015, subsample_size=50, batch_size=1500).fit(X, y)


def test_divergence_says_which_setting_to_change(digits):
    X, y = digits
    with pytest.raises(TrainingDiverged, match="step_size"):
        EigenProClassifier(epochs=3, step_size=1e6, random_state=0).fit(X, y)


def test_validation_target_stops_training(digits):
    X, y = digits
    clf = EigenProClassifier(epochs=50, evals_per_epoch=4, val_target=0.9, random_state=0)
    clf.fit(X[:1200], y[:1200], X_val=X[1200:], y_val=y[1200:])
    assert clf.history_[-1]["val_metric"] >= 0.9
    assert clf.history_[-1]["epoch"] < 50
    assert all(h["val_metric"] < 0.9 for h in clf.history_[:-1])
