"""Heavy rows drawn more often (proxsgd/row_splits.py): the rule, the coordinator's epochs, an unbiased
batch gradient, and fits of data with an outlier row (synthetic, and uci-elevators)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import require_data
from sklearn.linear_model import Lasso

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.engines.base import BatchStream, Schedule
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.data import LinearData, sample_weights
from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
from asyncopt.proxsgd.problem import LinearProblem, block_bounds
from asyncopt.proxsgd.prox import make_penalty
from asyncopt.proxsgd.row_splits import MIN_UPDATES, SPLIT_FACTOR, epoch_draws, heavy_row_counts, split_threshold


def _quietly(model, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(*args, **kw)


def _with_an_outlier_row(n=2000, d=12, seed=0, factor=60.0):
    """Standard normal rows and one row `factor` times longer (its squared norm ~3,600x the typical)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[7] *= factor
    y = X @ np.r_[1.0, -2.0, 0.5, np.zeros(d - 3)] + 0.1 * rng.normal(size=n)
    return X, y


def test_only_rows_far_above_the_mean_are_drawn_more_than_once():
    assert heavy_row_counts(np.ones(100)) is None
    s = np.ones(100)
    s[0] = SPLIT_FACTOR * s.mean() * 0.99  # (just under the threshold, which the row itself raises)
    assert heavy_row_counts(s) is None
    s = np.ones(1000)
    s[3] = 1000.0  # mean 1.999, threshold 15.99: 63 draws
    counts = heavy_row_counts(s)
    threshold = SPLIT_FACTOR * s.mean()
    assert counts[3] == int(np.ceil(1000.0 / threshold)) and (np.delete(counts, 3) == 1).all()
    assert (s / counts).max() <= threshold  # every draw's smoothness under the threshold
    heavy = np.random.default_rng(0).pareto(1.1, size=10_000) + 1.0  # (heavy-tailed row norms)
    counts = heavy_row_counts(heavy)
    assert counts.sum() - len(heavy) <= len(heavy) / SPLIT_FACTOR  # at most n / SPLIT_FACTOR extra draws
    assert heavy_row_counts(np.zeros(5)) is None and heavy_row_counts(np.zeros(0)) is None


def test_rows_are_not_split_below_what_the_batch_the_run_wants_needs():
    # the automatic batch: the one that leaves MIN_UPDATES updates an epoch (within its bounds); a given
    # batch as it is; never below SPLIT_FACTOR times the mean
    n, lam = 100_000, 2.0
    assert split_threshold(1.0, lam, n, None, (32, 4096)) == lam * (n // MIN_UPDATES)
    assert split_threshold(1.0, lam, 1000, None, (32, 4096)) == lam * 32  # (the bounds' floor)
    assert split_threshold(1.0, lam, 10**9, None, (32, 4096)) == lam * 4096
    assert split_threshold(1.0, lam, n, 2, (32, 4096)) == SPLIT_FACTOR  # (a given batch of 2: 4 < 8 x mean)
    assert split_threshold(1.0, lam, n, 100, (32, 4096)) == 200.0


def test_an_epoch_draws_each_row_as_often_as_counted():
    counts = np.array([1, 3, 1, 2, 1])
    draws = epoch_draws(counts)
    schedule = Schedule(len(draws), 3, 2.0, 1, draws)
    stream = BatchStream(schedule, np.random.default_rng(0))
    for _ in range(2):
        rows = np.concatenate([stream.next(3)[0] for _ in range(3)])  # (8 draws an epoch: 3 + 3 + 2)
        assert np.bincount(rows, minlength=5).tolist() == counts.tolist()


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_an_epochs_batch_gradients_average_to_the_full_gradient(compiled, weighted):
    # the draws' weights keep a batch's mean unbiased: over an epoch's draws, each heavy row k_i times
    # with weight r_i w_i, the batch gradients sum to n' times (1/n) sum_i w_i grad f_i
    rng = np.random.default_rng(3)
    n, d = 60, 8
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.6)
    X[5] *= 40.0
    X[9] *= 15.0
    y = rng.choice([-1.0, 1.0], size=(n, 1))
    w = sample_weights(rng.uniform(0.2, 3.0, size=n), n) if weighted else None
    data = LinearData.from_array(sp.csr_matrix(X), y, weights=w)
    norms = data.row_sq_norms() + 1.0
    counts = heavy_row_counts(data.weighted(norms).numpy())
    assert counts is not None and counts[5] > 1 and counts[9] > 1
    data.set_draws(epoch_draws(counts), counts)
    problem = LinearProblem(data, LOSSES["logistic"], make_penalty("none"), NonconvexRegularizer(0.0), True,
                            block_bounds(d, 1))  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 1, 0.1, "full", use_compiled=compiled)
    params = torch.tensor(rng.normal(size=(d + 1, 1)) * 0.3)
    total = torch.zeros_like(params)
    for row in data.draws:  # (batches of one draw: each update's gradient is its draw's)
        update = algo.compute(params, torch.tensor([row]), 1.0, 0)
        total[update.index.long()] += update.values
        total[d] += update.intercept
    _, full = problem.smooth_value_and_gradient(params)
    np.testing.assert_allclose(total.numpy() / data.n_draws, full.numpy(), rtol=1e-10, atol=1e-12)
    assert algo.n_samples == data.n_draws == counts.sum()


@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_an_outlier_row_no_longer_sets_the_batch_and_the_fit_reaches_the_lasso_optimum(backend):
    X, y = _with_an_outlier_row()
    alpha = 1e-2
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)

    def gap(model):
        def F(coef, b):
            return 0.5 * np.mean((X @ coef + b - y) ** 2) + alpha * np.abs(coef).sum()

        return (F(model.coef_, model.intercept_) - F(ref.coef_, ref.intercept_)) / F(ref.coef_, ref.intercept_)

    kw = dict(penalty="l1", alpha=alpha, random_state=0, max_epochs=30, backend=backend,
              n_workers=1 if backend == "serial" else 2)  # fmt: skip
    split = _quietly(ProxSGDRegressor(**kw), X, y)
    whole = _quietly(ProxSGDRegressor(row_splitting="none", **kw), X, y)
    assert split.draws_per_epoch_ > len(y) and whole.draws_per_epoch_ == len(y)
    assert split.batch_size_ < whole.batch_size_ / 10  # (the outlier set the batch: ~4,000 > n)
    assert gap(split) < 1e-6, gap(split)
    assert gap(whole) > 100 * max(gap(split), 1e-8), (gap(whole), gap(split))


def test_weighted_samples_are_drawn_by_weight():
    # a sample of weight 50 is a heavy row too: drawn more often, at the same optimum
    X, y = _with_an_outlier_row(factor=1.0)
    w = np.ones(len(y))
    w[:20] = 50.0
    ref = Lasso(alpha=1e-2, tol=1e-12, max_iter=100_000).fit(X, y, sample_weight=w)
    model = _quietly(ProxSGDRegressor(penalty="l1", alpha=1e-2, random_state=0, tol=None, max_epochs=40), X, y,
                     sample_weight=w)  # fmt: skip
    assert model.draws_per_epoch_ > len(y)
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-6)


def test_a_checkpoint_resumes_with_the_same_draws(tmp_path):
    X, y = _with_an_outlier_row(n=600)
    kw = dict(penalty="l1", alpha=1e-2, random_state=0, tol=None, checkpoint_dir=tmp_path, checkpoint_every=1)
    whole = _quietly(ProxSGDRegressor(max_epochs=4, **kw), X, y)
    _quietly(ProxSGDRegressor(max_epochs=2, **kw), X, y)
    resumed = _quietly(ProxSGDRegressor(max_epochs=4, **kw), X, y, resume=True)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)


def test_classifier_rows_of_one_huge_document_are_drawn_more_often():
    rng = np.random.default_rng(5)
    X = sp.random(3000, 200, density=0.05, random_state=5, format="csr")
    X[11] = X[11] * 200.0  # (one document counted in other units)
    y = (X @ rng.normal(size=200) > 0).astype(int)
    model = _quietly(ProxSGDClassifier(penalty="l1", alpha=1e-4, random_state=0, max_epochs=5), X, y)
    assert model.draws_per_epoch_ > 3000
    assert model.history_[-1]["epoch"] == pytest.approx(5.0) or model.n_iter_ <= 5.0


def test_uci_elevators_lasso_gets_enough_updates_an_epoch_with_the_defaults():
    # its one row of squared norm 20,720 (mean 19) made the batch 3,249 (5 updates an epoch): the default
    # fit reached 1e-2 of the optimum at epoch 12 and stopped 1.5e-3 above it after 34 epochs; that row
    # drawn 13 times an epoch, the batch is 251 (66 updates an epoch)
    require_data("uci-elevators")
    from asyncopt.datasets import load_uci

    X, y = load_uci("uci-elevators", split=None)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    alpha = np.abs(X.T @ (y - y.mean())).max() / len(y) / 10
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=200_000).fit(X, y)

    def F(coef, b):
        return 0.5 * np.mean((X @ coef + b - y) ** 2) + alpha * np.abs(coef).sum()

    f_star = F(ref.coef_, ref.intercept_)
    fits = {s: _quietly(ProxSGDRegressor(penalty="l1", alpha=alpha, random_state=0, row_splitting=s), X, y)
            for s in ("auto", "none")}  # fmt: skip
    first = {s: next(h["epoch"] for h in m.history_ if h["objective"] <= 1.01 * f_star) for s, m in fits.items()}
    assert len(y) / fits["auto"].batch_size_ >= 64 > len(y) / fits["none"].batch_size_
    assert fits["auto"].draws_per_epoch_ > len(y) == fits["none"].draws_per_epoch_
    assert first["auto"] <= 3 and first["none"] >= 8, first
    gaps = {s: (F(m.coef_, m.intercept_) - f_star) / f_star for s, m in fits.items()}
    assert gaps["auto"] < 1e-3 < gaps["none"], gaps


def test_heavy_rows_on_ray_are_drawn_as_on_the_serial_engine(ray_session):
    X, y = _with_an_outlier_row(n=1500)
    X = sp.csr_matrix(X)  # (Ray's sample bundles: sparse data)
    kw = dict(penalty="l1", alpha=1e-2, random_state=0, tol=None, max_epochs=15)
    serial = _quietly(ProxSGDRegressor(**kw), X, y)
    ray = _quietly(ProxSGDRegressor(backend="ray", n_workers=1, **kw), X, y)
    assert ray.draws_per_epoch_ == serial.draws_per_epoch_ > 1500
    assert ray.history_[-1]["objective"] == pytest.approx(serial.history_[-1]["objective"], rel=1e-6)
