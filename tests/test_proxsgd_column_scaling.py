"""column_scaling="auto": on dense data the run standardizes X's columns itself (the Jacobi
preconditioner), on sparse data it scales down the columns far larger than the typical entry, and
it solves the same problem: the penalty is taken on the user's coefficients, and coef_ / intercept_
come back in the user's coordinates."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from asyncopt import ProxSGDClassifier, ProxSGDRegressor


def badly_scaled(n=2000, seed=0):
    """Columns on scales 0.01 to 10^4, some far from 0, and a target on an offset."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 6))
    scales = np.array([1e-2, 1.0, 30.0, 1e3, 1e4, 5.0])
    offsets = np.array([0.0, 50.0, -100.0, 0.0, 1e5, 3.0])
    X = Z * scales + offsets
    y = 1e3 + Z @ np.array([2.0, 0.0, -1.5, 1.0, 0.5, 0.0]) + 0.1 * rng.standard_normal(n)
    return X, y


def lasso_objective(X, y, alpha, coef, intercept):
    return 0.5 * np.mean((X @ coef + intercept - y) ** 2) + alpha * np.abs(coef).sum()


def fit_quietly(model, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **kwargs)


def test_the_scaled_run_solves_the_users_problem_and_faster():
    X, y = badly_scaled()
    alpha = 0.05
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    f_star = lasso_objective(X, y, alpha, ref.coef_, ref.intercept_)
    runs = {}
    for scaling in ("auto", "none"):
        model = fit_quietly(ProxSGDRegressor(penalty="l1", alpha=alpha, column_scaling=scaling, random_state=0), X, y)
        runs[scaling] = (lasso_objective(X, y, alpha, model.coef_, model.intercept_) - f_star) / f_star, model
    gap, scaled = runs["auto"]
    assert gap < 1e-6, gap
    np.testing.assert_allclose(scaled.coef_, ref.coef_, rtol=1e-3, atol=1e-6)
    assert np.isclose(scaled.intercept_, ref.intercept_, rtol=1e-6)
    # the run's own F is the user's objective (the penalty on the user's coefficients)
    assert np.isclose(scaled.history_[-1]["objective"], lasso_objective(X, y, alpha, scaled.coef_, scaled.intercept_))
    unscaled_gap, unscaled = runs["none"]
    assert unscaled_gap > 100 * gap  # (measured: the columns as given stay far off within the budget)


@pytest.mark.parametrize("penalty", ["l2", "elasticnet", "none"])
def test_other_separable_penalties_reach_scikit_learns_solution(penalty):
    from sklearn.linear_model import ElasticNet, LinearRegression, Ridge

    X, y = badly_scaled(800, seed=1)
    n, alpha = len(y), 0.05
    reference = {
        "l2": Ridge(alpha=n * alpha, solver="cholesky"),  # (||y - Xw||^2 + n alpha ||w||^2, halved over n)
        "elasticnet": ElasticNet(alpha=alpha, l1_ratio=0.5, tol=1e-12, max_iter=100_000),
        "none": LinearRegression(),
    }[penalty].fit(X, y)
    model = fit_quietly(ProxSGDRegressor(penalty=penalty, alpha=alpha, l1_ratio=0.5, tol=1e-10, random_state=0), X, y)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-4, atol=1e-8)
    assert np.isclose(model.intercept_, reference.intercept_, rtol=1e-6)


def test_bounds_and_signs_hold_for_the_users_coefficients():
    X, y = badly_scaled(800, seed=2)
    box = fit_quietly(ProxSGDRegressor(penalty="box", bounds=(-0.5, 0.5), random_state=0), X, y)
    assert np.all(np.abs(box.coef_) <= 0.5 + 1e-12)
    assert np.any(np.abs(box.coef_) > 0.4)  # (the bound binds on the columns of scale ~1)
    positive = fit_quietly(ProxSGDRegressor(penalty="l1", alpha=0.01, positive=True, random_state=0), X, y)
    assert np.all(positive.coef_ >= 0)


def test_validation_metric_is_taken_in_the_users_coordinates():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 4)) * [1.0, 100.0, 0.1, 10.0] + [0.0, 500.0, 1.0, -20.0]
    labels = (X[:, 0] + (X[:, 1] - 500.0) / 100.0 > 0).astype(int)
    clf = fit_quietly(ProxSGDClassifier(penalty="l1", alpha=1e-3, max_epochs=20, random_state=0), X[:400], labels[:400],
                      X_val=X[400:], y_val=labels[400:])  # fmt: skip
    assert clf.history_[-1]["val_metric"] == pytest.approx(clf.score(X[400:], labels[400:]))
    assert clf.score(X[400:], labels[400:]) > 0.9


def test_group_l1_keeps_the_columns_as_given():
    X, y = badly_scaled(300, seed=4)
    model = ProxSGDRegressor(penalty="group_l1", groups=[0, 0, 1, 1, 2, 2], alpha=0.05, max_epochs=2, random_state=0)
    assert model._column_scaling(X) is None
    assert fit_quietly(model, X, y).coef_.shape == (6,)  # (no row_scale reaches group L1's prox)


def indicators_and_a_numeric_column(n=3000, seed=6, units=1.0):
    """Sparse one-hot columns (5 features of 8 levels each) beside one raw numeric column, an income
    on a scale of 10^4 present in a third of the rows: the design a OneHotEncoder with a passthrough
    column gives. `units`: the income in other units (1e-7: on a scale of 10^-3)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 8, size=(n, 5))
    rows = np.repeat(np.arange(n), 5)
    onehot = sp.csr_matrix((np.ones(5 * n), (rows, (levels + 8 * np.arange(5)).ravel())), shape=(n, 40))
    income = np.where(rng.random(n) < 1 / 3, rng.lognormal(9.5, 0.5, n), 0.0)
    effect = rng.normal(size=40) * (rng.random(40) < 0.5)
    y = onehot @ effect + 2e-4 * income + 0.3 * rng.standard_normal(n)
    return sp.hstack([onehot, sp.csr_matrix(units * income[:, None])]).tocsr(), y


def test_sparse_columns_far_from_the_typical_entry_are_scaled_alone():
    import scipy.sparse as sp

    from asyncopt.proxsgd.column_scales import LARGE_COLUMN_FACTOR, sparse_scales

    X, _ = indicators_and_a_numeric_column()
    scale = sparse_scales(X)
    income = X[:, 40].data
    assert np.all(scale[:40] == 1.0)  # the indicators stay
    assert scale[40] == pytest.approx(np.sqrt(np.mean(income**2)))  # brought to the typical entry's 1
    # a small column in a third of the rows is scaled up alike
    tiny, _ = indicators_and_a_numeric_column(units=1e-7)
    np.testing.assert_allclose(sparse_scales(tiny), np.r_[scale[:40], scale[40] * 1e-7], rtol=1e-12)
    # columns as alike as a9a's, or small ones in few rows (rare words of long TF-IDF documents) are
    # not touched: no copy
    assert sparse_scales(X[:, :40]) is None
    rare = sp.random(X.shape[0], 10, density=0.005, random_state=0, format="csr") * 1e-4
    assert sparse_scales(sp.hstack([X[:, :40], rare]).tocsr()) is None
    # the rule's factor: a column just under it stays, just over it is scaled
    for factor, expected in ((0.9, None), (1.1, True)):
        wide = sp.hstack([X[:, :40], X[:, :1] * (factor * LARGE_COLUMN_FACTOR)]).tocsr()
        got = sparse_scales(wide)
        assert (got is None) if expected is None else (got[40] > 1.0 and np.all(got[:40] == 1.0))


@pytest.mark.parametrize("backend, units", [("serial", 1.0), ("threads", 1.0), ("serial", 1e-7)])
def test_sparse_data_with_a_raw_numeric_column_reaches_the_lasso_optimum(backend, units):
    # before sparse column scaling the income set L; the one-hot coefficients crawled and the fit ended
    # near the constant model after its 100 epochs (the same on a9a with such columns: 80% above F*).
    # In tiny units its own coefficient crawls instead.
    X, y = indicators_and_a_numeric_column(units=units)
    alpha = 1e-3
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    f_star = lasso_objective(X, y, alpha, ref.coef_, ref.intercept_)
    gaps = {}
    for scaling in ("auto", "none"):
        model = ProxSGDRegressor(penalty="l1", alpha=alpha, column_scaling=scaling, random_state=0, backend=backend)
        model = fit_quietly(model, X, y)
        gaps[scaling] = (lasso_objective(X, y, alpha, model.coef_, model.intercept_) - f_star) / f_star
        if scaling == "auto":
            assert model.history_[-1]["objective"] == pytest.approx(
                lasso_objective(X, y, alpha, model.coef_, model.intercept_), rel=1e-9
            )  # the run's F is the user's (the L1 weights of the scaled row in the compiled kernels)
            np.testing.assert_allclose(model.coef_, ref.coef_, atol=2e-3 * np.abs(ref.coef_).max())
    assert gaps["auto"] < 1e-3, gaps
    assert gaps["none"] > 10 * max(gaps["auto"], 1e-4), gaps


def test_the_smoothness_of_centred_columns_with_an_intercept_is_not_the_intercepts():
    # centred columns sum to 0: the power iteration's start was the intercept's direction (eigenvalue
    # 1), and it stopped there: lambda_1 1.0 against 3.9 on standardized California
    import torch

    from asyncopt.proxsgd.data import LinearData
    from asyncopt.proxsgd.stepsize import estimate_smoothness

    rng = np.random.default_rng(5)
    common = rng.standard_normal((3000, 1))
    X = 0.3 * common + rng.standard_normal((3000, 20))  # mildly correlated columns: lambda_1 2.7 (the old start: 1.05)
    X -= X.mean(axis=0)
    A = np.hstack([X, np.ones((3000, 1))])
    true = float(np.linalg.eigvalsh(A.T @ A / 3000)[-1])
    data = LinearData.from_array(X, np.zeros((3000, 1)), dtype=torch.float64, device=torch.device("cpu"))
    estimate = estimate_smoothness(data, fit_intercept=True).top_eigenvalue
    assert true <= estimate <= 1.06 * true, (estimate, true)


@pytest.mark.realdata
def test_two_asynchronous_workers_solve_the_standardized_california_lasso():
    from tests.conftest import require_data

    require_data("california_housing")
    from asyncopt.datasets import load_california_housing

    X, y = load_california_housing()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    alpha = 794.0
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    f_star = lasso_objective(X, y, alpha, ref.coef_, ref.intercept_)
    model = ProxSGDRegressor(penalty="l1", alpha=alpha, backend="threads", n_workers=2, random_state=0)
    model = fit_quietly(model, X, y)
    gap = (lasso_objective(X, y, alpha, model.coef_, model.intercept_) - f_star) / f_star
    assert gap < 1e-3, gap  # (with the underestimated lambda_1: 27% off, or diverged)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["a9a", "news20"])
def test_the_shipped_sparse_sets_keep_their_columns(name):
    # the defaults were tuned on them as given; with their rare columns scaled up (a MaxAbsScaler in
    # front) news20 ended 20% and 108% above its optimum after 100 epochs
    from asyncopt import datasets
    from asyncopt.proxsgd.column_scales import sparse_scales
    from tests.conftest import require_data

    require_data(name)
    X = getattr(datasets, f"load_{name}")()[0]
    assert sparse_scales(X) is None


def test_the_typical_entry_is_the_weighted_median():
    # (found by a histogram of the logs and a sort of one bin: the same value as a sort of all)
    from asyncopt.proxsgd.column_scales import weighted_median

    def by_sorting(values, weights):
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weights[order])
        return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])

    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(1, 60))
        values = np.exp(rng.normal(0.0, 3.0, n)) * (rng.random(n) < 0.9)  # (zeros: columns of stored zeros)
        if rng.random() < 0.3:
            values = np.round(values, 1)  # ties
        weights = rng.integers(1, 6, n).astype(np.float64)
        assert weighted_median(values, weights) == by_sorting(values, weights)
