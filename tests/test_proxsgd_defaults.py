"""ProxSGD's defaults: SVRG with the local step bound, the automatic batch, and what they reach on
real data (the optimum from liblinear at a tight tolerance)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.estimators.proxsgd import auto_batch_size, resolve_push
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.data import LinearData
from asyncopt.proxsgd.stepsize import LOCAL_GAIN_MAX, Smoothness, estimate_smoothness, local_smoothness
from asyncopt.training.proxsgd import ANCHOR_SAMPLES, anchor_schedule, auto_anchor_epochs, tolerance_met


def l1_logistic_objective(X, y, w, alpha):
    s = np.where(y == y.max(), 1.0, -1.0)
    return float(np.mean(np.logaddexp(0.0, -s * (X @ w))) + alpha * np.abs(w).sum())


def l1_logistic_optimum(X, y, alpha):
    """F* from liblinear at a tight tolerance."""
    ref = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=1 / (alpha * X.shape[0]), tol=1e-8,
                             fit_intercept=False, max_iter=1000).fit(X, y)  # fmt: skip
    return l1_logistic_objective(X, y, ref.coef_.ravel(), alpha)


def test_the_default_fit_reaches_1e_2_of_the_optimum_on_a9a(a9a):
    X, y = a9a[0], a9a[1]
    alpha = 1e-4
    f_star = l1_logistic_optimum(X, y, alpha)
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


def _algorithm(X, y, **kw):
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
    from asyncopt.proxsgd.losses import NonconvexRegularizer, get_loss
    from asyncopt.proxsgd.problem import LinearProblem, block_bounds
    from asyncopt.proxsgd.prox import make_penalty
    from asyncopt.proxsgd.stepsize import base_step

    data = LinearData.from_array(X, y.reshape(-1, 1).astype(float), dtype=torch.float64, device=torch.device("cpu"))
    loss = get_loss("logistic")
    problem = LinearProblem(data, loss, make_penalty("l1", 1e-4), NonconvexRegularizer(0.0), False,
                            block_bounds(data.d, 4))  # fmt: skip
    sm = estimate_smoothness(data, False)
    eta0 = base_step(sm, loss.curvature, 32, 0.0)
    return ProxSGDAlgorithm(problem, 32, eta0, push="block", use_compiled=False, **kw), sm, loss, eta0


def test_the_delay_bound_scales_with_the_mean_gradient_smoothness():
    from asyncopt.proxsgd.stepsize import DELAY_MARGIN, delay_factor

    X, y = make_classification(2000, 30, random_state=0)
    y = np.where(y == 1, 1.0, -1.0)
    given, _, _, eta0 = _algorithm(X, y, delay=15.0)
    assert given.step_at(0) == pytest.approx(eta0 * delay_factor(15, 4))  # a given step: the older rule, at
    # the delay bound (15) whatever the measured staleness, when not delay-adaptive
    algo, sm, loss, eta0 = _algorithm(X, y, delay_adaptive=True, delay_smoothness=0.25 * sm_top(X))
    L = 0.25 * sm.top_eigenvalue  # (step_at(tau): the step of an update measured tau stale)
    assert algo.step_at(0) == pytest.approx(eta0)  # no delay: the delay-free bound
    assert algo.step_at(15) == pytest.approx(min(eta0, 2 * DELAY_MARGIN * delay_factor(15, 4) / L), rel=1e-6)
    assert algo.step_at(15) > eta0 * delay_factor(15, 4)  # the minibatch's beta / N no longer shrinks it
    algo.step = 0.01 * eta0  # the schedule lowered the step below the bound: delays cost nothing more
    assert algo.step_at(15) == pytest.approx(0.01 * eta0)


def sm_top(X):
    data = LinearData.from_array(X, np.zeros((X.shape[0], 1)), dtype=torch.float64, device=torch.device("cpu"))
    return estimate_smoothness(data, False).top_eigenvalue


def test_the_local_step_moves_the_delay_bound_to_the_curvature_at_the_iterate_and_checkpoints_it():
    X, y = make_classification(3000, 40, n_informative=10, class_sep=3.0, random_state=0)
    y = np.where(y == 1, 1.0, -1.0)
    algo, sm, loss, eta0 = _algorithm(X, y, delay=15.0, local_steps=True, variance_reduction=True,
                                      delay_smoothness=0.25 * sm_top(X))  # fmt: skip
    before = algo.delay_unit
    w = LogisticRegression(C=10.0, fit_intercept=False).fit(X, y).coef_.reshape(-1, 1)
    params = algo.init_params()
    params[:-1] = torch.as_tensor(w)
    algo.refresh_snapshot(params)
    algo.adapt_step(params)
    assert algo.delay_unit > 2.0 * before  # confident margins: l'' far below 1/4
    assert algo.delay_unit <= LOCAL_GAIN_MAX * before
    saved = algo.state_dict()
    fresh, *_ = _algorithm(X, y, delay=15.0, local_steps=True, variance_reduction=True,
                           delay_smoothness=0.25 * sm_top(X))  # fmt: skip
    fresh.load_state_dict(saved, params)
    assert fresh.delay_unit == algo.delay_unit and fresh.step_at(15) == algo.step_at(15)


def test_the_default_push_is_full_with_eager_updates_and_the_block_push_on_wide_data():
    assert resolve_push("auto", False) == "full" and resolve_push("auto", True) == "block"
    assert resolve_push("block", False) == "block" and resolve_push("full", True) == "full"
    X, y = make_classification(300, 10, random_state=0)
    clf = ProxSGDClassifier(max_epochs=1, tol=None, backend="threads", n_workers=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert clf.push_ == "full" and clf.n_blocks_ == 2
    # every update reached both block servers
    assert clf.telemetry_["server_updates"][:2] == [clf.telemetry_["updates"]] * 2
    # an eager sweep >> a batch (a Generator: with an int seed scipy permutes all 4e8 cells, 45 s)
    wide = sp.random(2000, 200_000, density=2e-4, random_state=np.random.default_rng(0), format="csr")
    yw = np.arange(2000) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = ProxSGDClassifier(penalty="l1", max_epochs=1, tol=None, batch_size=8, backend="threads", n_workers=2)
        lazy.fit(wide, yw)
    assert lazy.push_ == "block"


def test_ray_takes_the_block_push_on_wide_data_and_the_full_push_elsewhere(ray_session):
    """Ray has no lazy updates, but the same criterion picks its push: a block's eager sweep against
    a batch's entries (its servers sweep their blocks on every update they apply)."""
    X, y = make_classification(300, 10, random_state=0)
    wide = sp.random(2000, 200_000, density=2e-4, random_state=np.random.default_rng(0), format="csr")
    yw = np.arange(2000) % 2
    pushes = []
    for data, target, batch in ((X, y, 32), (wide, yw, 8)):
        clf = ProxSGDClassifier(penalty="l1", max_epochs=1, tol=None, batch_size=batch, backend="ray", n_workers=2,
                                threads_per_worker=1, random_state=0)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(data, target)
        pushes.append(clf.push_)
    assert pushes == ["full", "block"]


def test_at_zero_coefficients_the_local_step_is_the_global_estimate_times_the_one_curvature():
    """The first anchor (x = 0): every logistic margin is 0, so every curvature is 1/4 and the local
    estimate is 1/4 of the global one, taken without a power iteration; it equals a converged one."""
    X, y = make_classification(2000, 30, random_state=0)
    y = np.where(y == 1, 1.0, -1.0)
    algo, sm, loss, eta0 = _algorithm(X, y, local_steps=True, variance_reduction=True,
                                      delay_smoothness=0.25 * sm_top(X))  # fmt: skip
    algo.warm_start(sm)
    params = algo.init_params()
    algo.refresh_snapshot(params)
    assert algo._pass.probe_product is None  # (no probe column at zero coefficients)
    products = []
    original = algo.problem.data.margins
    algo.problem.data.margins = lambda W: products.append(W) or original(W)
    algo.adapt_step(params)
    assert products == []  # no product: the global estimate, scaled
    algo.problem.data.margins = original
    shortcut = (algo.step_cap, algo.delay_unit)
    cold, _, _, _ = _algorithm(X, y, local_steps=True, variance_reduction=True, delay_smoothness=0.25 * sm_top(X))
    cold._local_first = 100  # (no warm start: 100 power iterations from a random vector)
    cold.refresh_snapshot(params)
    cold.adapt_step(params)
    assert shortcut == pytest.approx((cold.step_cap, cold.delay_unit), rel=1e-3)
    params[0] = 0.5  # coefficients off zero: the curvatures differ, the power iteration runs again
    algo.refresh_snapshot(params)
    assert algo._pass.probe_product is not None


def test_the_automatic_anchor_interval_is_an_epoch_on_small_data_and_down_to_a_quarter_on_large():
    assert auto_anchor_epochs(18_846) == 1.0  # news20
    assert auto_anchor_epochs(32_561) == 1.0  # a9a
    assert auto_anchor_epochs(2 * ANCHOR_SAMPLES) == 0.5
    assert auto_anchor_epochs(3 * ANCHOR_SAMPLES + 5) == pytest.approx(1 / 3)
    assert auto_anchor_epochs(2_000_000) == 0.25
    # (epochs between moves, evaluation points an epoch): the points hold every move, at least the user's
    assert anchor_schedule(1, 0.25) == (0.25, 4)
    assert anchor_schedule(3, 0.5) == (0.5, 4)
    assert anchor_schedule(5, 0.25) == (0.25, 8)
    assert anchor_schedule(2, 0.3) == (pytest.approx(1 / 3), 3)
    assert anchor_schedule(1, 2.5) == (2.5, 1)


def test_the_anchor_moves_at_every_point_of_a_short_interval_and_waits_out_a_long_one(monkeypatch):
    X, y = make_classification(1000, 20, random_state=0)
    moves = []
    original = ProxSGDAlgorithm.refresh_snapshot
    monkeypatch.setattr(ProxSGDAlgorithm, "refresh_snapshot", lambda self, p: moves.append(1) or original(self, p))

    def fit(anchor_epochs, max_epochs):
        moves.clear()
        clf = ProxSGDClassifier(penalty="l1", alpha=1e-3, anchor_epochs=anchor_epochs, max_epochs=max_epochs,
                                tol=None, random_state=0).fit(X, y)  # fmt: skip
        return clf, len(moves) - 1  # (the first: the anchor at the starting point)

    quarter, moved = fit(0.25, 2)
    assert quarter.anchor_epochs_ == 0.25
    assert [h["epoch"] for h in quarter.history_] == pytest.approx([0.25 * k for k in range(1, 9)])
    assert moved == 8
    long, moved = fit(2.5, 6)
    assert [h["epoch"] for h in long.history_] == pytest.approx([1, 2, 3, 4, 5, 6])
    assert moved == 2  # at epochs 3 and 6: the first points 2.5 epochs after the last move
    tiny, _ = fit(1e-9, 1)  # (about a batch between moves: 1000 samples; batch 44 here, the critical
    # batch of the standardized columns; the interval is a whole fraction of an epoch)
    samples_between = tiny.anchor_epochs_ * 1000
    assert tiny.batch_size_ - 1 <= samples_between < 2 * tiny.batch_size_
    assert len(tiny.history_) == round(1 / tiny.anchor_epochs_)
    plain = ProxSGDClassifier(penalty="l1", alpha=1e-3, variance_reduction="none", max_epochs=1, tol=None).fit(X, y)
    assert plain.anchor_epochs_ is None


def test_on_a9a_replicated_16_times_the_automatic_interval_reaches_1e_2_in_a_quarter_of_the_epochs(a9a):
    # replicating the rows keeps F and its optimum (F is a mean): a real large-n problem whose optimum
    # comes from a9a itself
    X, y = a9a[0], a9a[1]
    alpha = 1e-4
    f_star = l1_logistic_optimum(X, y, alpha)
    big, labels = sp.vstack([X] * 16).tocsr(), np.concatenate([y] * 16)

    def epochs_to_1e_2(anchor_epochs):
        clf = ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, anchor_epochs=anchor_epochs,
                                max_epochs=4, tol=None, random_state=0,
                                callback=lambda e: e.objective <= f_star * 1.01).fit(big, labels)  # fmt: skip
        assert clf.history_[-1]["objective"] <= f_star * 1.01
        return clf.history_[-1]["epoch"], clf.anchor_epochs_

    auto, interval = epochs_to_1e_2("auto")
    once, _ = epochs_to_1e_2(1.0)
    assert interval == 0.25  # 520,976 rows
    assert auto <= once / 3  # measured: half an epoch against 2 epochs


def test_the_tol_rule_keeps_its_meaning_per_evaluation_asked_for_when_the_anchor_adds_points():
    steady = [1.0 - 0.5e-4 * k for k in range(9)]  # each point improves F by tol / 2
    assert tolerance_met(steady, 1e-4, 2)  # one point an evaluation: flat
    assert not tolerance_met(steady, 1e-4, 2, points_per_evaluation=4)  # 4 points an evaluation: 2 tol each
    assert tolerance_met([1.0] * 9, 1e-4, 2, points_per_evaluation=4)  # 8 flat points: 2 evaluations' worth
    assert not tolerance_met([1.0] * 8, 1e-4, 2, points_per_evaluation=4)
