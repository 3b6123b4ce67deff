"""ProxSGD's defaults: SVRG with the local step bound, the automatic batch, and what they reach on
real data (the optimum from liblinear at a tight tolerance)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.estimators.proxsgd import auto_batch_size
from asyncopt.proxsgd.data import LinearData
from asyncopt.proxsgd.stepsize import LOCAL_GAIN_MAX, Smoothness, estimate_smoothness, local_smoothness


def l1_logistic_objective(X, y, w, alpha):
    s = np.where(y == y.max(), 1.0, -1.0)
    return float(np.mean(np.logaddexp(0.0, -s * (X @ w))) + alpha * np.abs(w).sum())


def test_the_default_fit_reaches_1e_2_of_the_optimum_on_a9a(a9a):
    X, y = a9a[0], a9a[1]
    alpha = 1e-4
    ref = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=1 / (alpha * X.shape[0]), tol=1e-8,
                             fit_intercept=False, max_iter=1000).fit(X, y)  # fmt: skip
    f_star = l1_logistic_objective(X, y, ref.coef_.ravel(), alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a default fit that stops short would warn (ConvergenceWarning)
        clf = ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, random_state=0).fit(X, y)
    f = l1_logistic_objective(X, y, clf.coef_.ravel(), alpha)
    assert (f - f_star) / f_star <= 1e-2
    assert clf.history_[-1]["objective"] == pytest.approx(f, rel=1e-9)  # the history's F is this objective


def test_the_local_step_follows_the_logistic_curvature_and_leaves_squared_loss_alone():
    X, y = make_classification(3000, 40, n_informative=10, class_sep=3.0, random_state=0)
    clf = ProxSGDClassifier(penalty="l1", alpha=1e-4, max_epochs=6, tol=None, random_state=0).fit(X, y)
    gain = clf.history_[-1]["step_size"] / clf.step_size_
    assert 2.0 < gain <= LOCAL_GAIN_MAX  # confident margins: l'' far below its bound 1/4 (measured 2.66)
    fixed = ProxSGDClassifier(penalty="l1", alpha=1e-4, max_epochs=6, tol=None, step_size=clf.step_size_,
                              random_state=0).fit(X, y)  # fmt: skip
    assert fixed.history_[-1]["step_size"] <= fixed.step_size_  # a given step is never raised
    Xr, yr = make_regression(2000, 20, noise=1.0, random_state=0)
    reg = ProxSGDRegressor(max_epochs=4, tol=None, random_state=0).fit(Xr, yr)
    assert reg.history_[-1]["step_size"] <= reg.step_size_  # squared loss: l'' = 1, no local gain


def test_local_smoothness_is_the_weighted_top_eigenvalue():
    X, y = make_classification(500, 30, random_state=1)
    data = LinearData.from_array(X, y.reshape(-1, 1).astype(float), dtype=torch.float64, device=torch.device("cpu"))
    glob = estimate_smoothness(data, True, iterations=100, rtol=0.0)
    v = torch.randn(31, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ones, v1 = local_smoothness(data, torch.ones(500, dtype=torch.float64), True, v, iterations=100)
    quarter, _ = local_smoothness(data, torch.full((500,), 0.25, dtype=torch.float64), True, v1, iterations=3)
    assert ones.top_eigenvalue == pytest.approx(glob.top_eigenvalue, rel=1e-6)
    assert ones.max_row_sq_norm == pytest.approx(glob.max_row_sq_norm, rel=1e-12)
    assert quarter.top_eigenvalue == pytest.approx(0.25 * ones.top_eigenvalue, rel=1e-6)  # warm start: converged


def test_the_automatic_batch_is_the_critical_batch_within_its_bounds():
    assert auto_batch_size(Smoothness(top_eigenvalue=7.0, max_row_sq_norm=14.0)) == 32  # a9a-like: m* = 2
    assert auto_batch_size(Smoothness(top_eigenvalue=0.01, max_row_sq_norm=5.0)) == 500
    assert auto_batch_size(Smoothness(top_eigenvalue=0.0, max_row_sq_norm=1.0)) == 4096
