"""Sample weights and class weights in the ProxSGD estimators: F = sum_i w_i f_i / sum_i w_i + h, on
every path a weight goes through (the compiled task kernels, the torch step, dense data, Ray's bundles,
the full passes, the smoothness estimates, the intercept's start)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.utils.class_weight import compute_sample_weight

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.proxsgd.data import LinearData, sample_weights
from asyncopt.proxsgd.losses import get_loss
from asyncopt.proxsgd.stepsize import estimate_smoothness


def _quietly(model, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(*args, **kw)


def _regression(n=400, d=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = 3.0 + X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=n)
    w = rng.integers(0, 4, size=n).astype(float)
    return X, y, w


def _sparse_classification(n=400, d=50, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(np.where(rng.random((n, d)) < 0.1, rng.random((n, d)), 0.0))
    y = (X @ rng.normal(size=d) > 0.3).astype(int)
    w = rng.integers(0, 4, size=n).astype(float)
    return X, y, w


def _weighted_logistic_objective(X, y, w, coef, intercept, alpha):
    z = X @ np.ravel(coef) + intercept
    s = 2 * y - 1
    return float((w * np.logaddexp(0, -s * z)).sum() / w.sum() + alpha * np.abs(coef).sum())


@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_weighted_lasso_reaches_scikit_learns_weighted_optimum(backend):
    X, y, w = _regression()
    ref = Lasso(alpha=1e-2, tol=1e-12, max_iter=100_000).fit(X, y, sample_weight=w)
    model = ProxSGDRegressor(
        penalty="l1", alpha=1e-2, random_state=0, tol=None, max_epochs=60, backend=backend,
        n_workers=1 if backend == "serial" else 2,
    )  # fmt: skip
    _quietly(model, X, y, sample_weight=w)
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(model.intercept_, [ref.intercept_], atol=1e-6)
    # the weights change the answer (so the test above can fail): unweighted, another optimum
    plain = Lasso(alpha=1e-2, tol=1e-12, max_iter=100_000).fit(X, y)
    assert np.abs(plain.coef_ - ref.coef_).max() > 1e-3


def test_weighted_sparse_logistic_reaches_the_weighted_optimum_and_repeated_rows_agree():
    X, y, w = _sparse_classification()
    alpha = 1e-3
    ref = LogisticRegression(l1_ratio=1.0, C=1 / (alpha * w.sum()), solver="saga", tol=1e-12, max_iter=200_000)
    _quietly(ref, X, y, sample_weight=w)
    f_star = _weighted_logistic_objective(X, y, w, ref.coef_, ref.intercept_, alpha)
    model = ProxSGDClassifier(penalty="l1", alpha=alpha, random_state=0, tol=None, max_epochs=300)
    _quietly(model, X, y, sample_weight=w)
    f = _weighted_logistic_objective(X, y, w, model.coef_, model.intercept_, alpha)
    assert (f - f_star) / f_star < 1e-7
    assert model.history_[-1]["objective"] == pytest.approx(f, rel=1e-9)  # the run's F is the weighted one
    repeat = np.repeat(np.arange(len(y)), w.astype(int))
    repeated = _quietly(ProxSGDClassifier(penalty="l1", alpha=alpha, random_state=0, tol=None, max_epochs=300),
                        X[repeat], y[repeat])  # fmt: skip
    f_repeated = _weighted_logistic_objective(X, y, w, repeated.coef_, repeated.intercept_, alpha)
    assert (f_repeated - f_star) / f_star < 1e-7


@pytest.mark.parametrize("compiled_prox", ["on", "off"])
def test_weights_reach_the_torch_step_dense_data_and_the_smooth_regularizer_path(compiled_prox, monkeypatch):
    # a smooth regularizer runs block_prox.py's compiled sweep, or (ASYNCOPT_COMPILED_PROX=off) the
    # torch step, where dense data takes the compiled margins with torch's loss: each against the
    # weighted optimum of the same problem
    monkeypatch.setenv("ASYNCOPT_COMPILED_PROX", compiled_prox)
    X, y, w = _regression()
    ref = Lasso(alpha=1e-2, tol=1e-12, max_iter=100_000).fit(X, y, sample_weight=w)
    for data in (X, sp.csr_matrix(X)):
        model = ProxSGDRegressor(penalty="l1", alpha=1e-2, random_state=0, tol=None, max_epochs=60)
        model.set_params(nonconvex_strength=1e-12)  # (its term is far below the tolerance)
        _quietly(model, data, y, sample_weight=w)
        np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-5)


def test_zero_weights_are_removed_samples():
    X, y, w = _regression()
    keep = w > 0
    ref = Lasso(alpha=1e-2, tol=1e-12, max_iter=100_000).fit(X[keep], y[keep], sample_weight=w[keep])
    model = _quietly(ProxSGDRegressor(penalty="l1", alpha=1e-2, random_state=0, tol=None, max_epochs=60), X, y,
                     sample_weight=w)  # fmt: skip
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-6)


def test_equal_weights_are_no_weights():
    X, y, _ = _regression()
    a = _quietly(ProxSGDRegressor(random_state=0, max_epochs=5), X, y)
    b = _quietly(ProxSGDRegressor(random_state=0, max_epochs=5), X, y, sample_weight=np.full(len(y), 7.0))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert sample_weights(np.full(4, 2.0), 4) is None
    np.testing.assert_allclose(sample_weights([1.0, 3.0], 2), [0.5, 1.5])  # (mean 1)


def test_balanced_class_weight_is_its_sample_weight():
    X, y, _ = _sparse_classification()
    y = np.where(np.arange(len(y)) < 60, 1, 0)  # (imbalanced: 60 against 340)
    a = _quietly(ProxSGDClassifier(class_weight="balanced", random_state=0, max_epochs=10), X, y)
    b = _quietly(ProxSGDClassifier(random_state=0, max_epochs=10), X, y,
                 sample_weight=compute_sample_weight("balanced", y))  # fmt: skip
    np.testing.assert_array_equal(a.coef_, b.coef_)
    plain = _quietly(ProxSGDClassifier(random_state=0, max_epochs=10), X, y)
    assert (a.predict(X) == 1).sum() > (plain.predict(X) == 1).sum()  # the small class is predicted more
    c = _quietly(ProxSGDClassifier(class_weight={0: 1.0, 1: 2.0}, random_state=0, max_epochs=10), X, y)
    d = _quietly(ProxSGDClassifier(random_state=0, max_epochs=10), X, y, sample_weight=np.where(y == 1, 2.0, 1.0))
    np.testing.assert_array_equal(c.coef_, d.coef_)


def test_the_intercept_starts_at_the_weighted_best_constant():
    y = torch.tensor([[1.0], [-1.0], [-1.0], [-1.0]])
    w = torch.tensor([3.0, 1.0, 1.0, 1.0])  # half the weight on the positive sample: log-odds 0
    assert float(get_loss("logistic").best_constant(y, w)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(get_loss("squared").best_constant(y, w)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(get_loss("logistic").best_constant(y)[0]) == pytest.approx(np.log(1 / 3))


def test_the_smoothness_estimate_is_of_the_weighted_problem():
    # A^T W A / n and max_i w_i ||a_i||^2: a weight of 10 on one row is that row repeated 10 times
    rng = np.random.default_rng(1)
    X = sp.csr_matrix(rng.random((50, 8)) * (rng.random((50, 8)) < 0.5))
    w = np.ones(50)
    w[0] = 10.0
    repeat = np.repeat(np.arange(50), w.astype(int))
    weighted = LinearData.from_array(X, np.zeros((50, 1)), weights=sample_weights(w, 50))
    repeated = LinearData.from_array(X[repeat], np.zeros((len(repeat), 1)))
    a, b = estimate_smoothness(weighted, True, iterations=200, rtol=0), estimate_smoothness(repeated, True, 200, rtol=0)
    scale = 50 / w.sum()  # (weights of mean 1: F's mean over 50 samples against 59)
    assert a.top_eigenvalue == pytest.approx(b.top_eigenvalue, rel=1e-9)
    assert a.max_row_sq_norm == pytest.approx(scale * 10 * (X[0].multiply(X[0]).sum() + 1), rel=1e-12)


@pytest.mark.parametrize(
    "weights, message",
    [
        (-np.ones(20), "(?i)negative"),
        (np.ones(19), "shape"),
        (np.zeros(20), "non-zero"),
        (np.r_[np.nan, np.ones(19)], "NaN"),
    ],
)
def test_bad_sample_weights_are_refused_by_name(weights, message):
    X, y, _ = _regression(n=20)
    with pytest.raises(ValueError, match=message):
        ProxSGDRegressor().fit(X, y, sample_weight=weights)


def test_a_class_weight_that_zeroes_every_sample_is_refused():
    X, y, _ = _sparse_classification(n=40)
    with pytest.raises(ValueError, match="class_weight gives every sample weight 0"):
        ProxSGDClassifier(class_weight={0: 0.0, 1: 0.0}).fit(X, y)


def test_resuming_with_other_weights_is_refused(tmp_path):
    X, y, w = _regression()
    model = ProxSGDRegressor(random_state=0, max_epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1)
    _quietly(model, X, y, sample_weight=w)
    with pytest.raises(ValueError, match="data"):
        model.set_params(max_epochs=4).fit(X, y, sample_weight=w + 1.0, resume=True)
    _quietly(model, X, y, sample_weight=w, resume=True)  # the same weights: resumed
    assert model.history_[-1]["epoch"] == pytest.approx(4.0)


def test_weighted_fit_on_ray_agrees_with_serial(ray_session):
    X, y, w = _sparse_classification()
    kw = dict(penalty="l1", alpha=1e-3, random_state=0, tol=None, max_epochs=40)
    serial = _quietly(ProxSGDClassifier(**kw), X, y, sample_weight=w)
    ray = _quietly(ProxSGDClassifier(backend="ray", n_workers=1, **kw), X, y, sample_weight=w)
    f = [_weighted_logistic_objective(X, y, w, m.coef_, m.intercept_, 1e-3) for m in (serial, ray)]
    assert f[1] == pytest.approx(f[0], rel=1e-4)
    unweighted = _quietly(ProxSGDClassifier(backend="ray", n_workers=1, **kw), X, y)
    assert _weighted_logistic_objective(X, y, w, unweighted.coef_, unweighted.intercept_, 1e-3) > f[0] * (1 + 1e-3)
