"""A fit with an intercept starts from the loss's best constant, not from 0: the step is set by X's
scale, so on raw features (California housing: columns up to 35,682, prices around 2*10^5) an
intercept started at 0 crawled, and the tol rule stopped the lasso 73% above its optimum, silently
(benchmarks/results/proxsgd_untuned.md)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.proxsgd.losses import get_loss
from tests.conftest import require_data


def test_best_constants_minimize_the_mean_loss_of_a_featureless_model():
    gen = torch.Generator().manual_seed(0)
    cases = {
        "squared": torch.randn(200, 2, generator=gen, dtype=torch.float64) * 3 + 5,
        "logistic": torch.where(torch.rand(200, 2, generator=gen) < torch.tensor([0.2, 0.7]), 1.0, -1.0).double(),
        "multinomial": torch.nn.functional.one_hot(torch.randint(0, 3, (200,), generator=gen), 3).double(),
    }
    for name, y in cases.items():
        loss = get_loss(name)
        b = loss.best_constant(y)
        assert b.shape == (y.shape[1],) and b.dtype == y.dtype

        def mean_loss(shift, loss=loss, y=y, b=b):
            return float(loss.value((b + shift).expand_as(y), y).sum(1).mean())

        best = mean_loss(torch.zeros_like(b))
        for column in range(y.shape[1]):  # any move away raises the mean loss
            for step in (-1e-3, 1e-3):
                shift = torch.zeros_like(b)
                shift[column] = step
                assert mean_loss(shift) > best, (name, column, step)


def test_a_fit_with_an_intercept_starts_at_the_best_constant():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5))
    y = 1000.0 + rng.standard_normal(300)
    model = ProxSGDRegressor(penalty="l1", alpha=1e-3, max_epochs=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    # F at the start: var(y) / 2 (about 0.5), not mean(y^2) / 2 (about 5 * 10^5)
    assert model.history_[0]["objective"] < 1.0
    labels = np.where(rng.random(300) < 0.9, 1, 0)
    clf = ProxSGDClassifier(penalty="l1", alpha=1e-2, max_epochs=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(1000.0 * X, labels)  # (X's scale sets a step of ~4e-6: from 0, the intercept would stay near 0)
    assert abs(clf.intercept_[0] - np.log(labels.mean() / (1 - labels.mean()))) < 0.1


@pytest.mark.realdata
@pytest.mark.parametrize("fraction", [10, 100])
def test_lasso_on_raw_california_features_reaches_the_optimum(fraction):
    require_data("california_housing")
    from asyncopt.datasets import load_california_housing

    X, y = load_california_housing()
    n = X.shape[0]
    alpha = float(np.abs(X.T @ (y - y.mean())).max() / n) / fraction
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=200_000).fit(X, y)

    def objective(coef, intercept):
        return 0.5 * np.mean((X @ coef + intercept - y) ** 2) + alpha * np.abs(coef).sum()

    f_star = objective(ref.coef_, ref.intercept_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ProxSGDRegressor(penalty="l1", alpha=alpha, random_state=0).fit(X, y)
    gap = (objective(model.coef_, model.intercept_) - f_star) / f_star
    assert gap < 1e-2, gap  # started at 0: 0.73 (alpha_max / 10) and 0.11 (/ 100)
