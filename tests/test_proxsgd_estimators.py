"""ProxSGD estimators: agreement with exact solvers on real data, asynchrony, input errors."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.proxsgd.prox import make_penalty


def l1_logistic_objective(X, y, coef, alpha):
    z = np.where(y > 0, 1.0, -1.0) * (X @ coef)
    return float(np.mean(np.logaddexp(0.0, -z)) + alpha * np.abs(coef).sum())


# liblinear at tol 1e-8 (benchmarks/proxsgd_optima.py -> benchmarks/results/proxsgd_optima.json)
OPTIMA = {"a9a/alpha=0.0001": 0.32689896196913715}


def test_a9a_l1_logistic_reaches_liblinear_optimum_within_1e_3(a9a):
    X, y, X_test, y_test = a9a
    alpha = 1e-4
    # liblinear minimises ||w||_1 + C sum_i log(1 + exp(-y_i x_i.w)): the same problem as
    # mean log-loss + alpha ||w||_1 when C = 1 / (alpha n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(
            l1_ratio=1.0, solver="liblinear", C=1 / (alpha * X.shape[0]), tol=1e-8, max_iter=10_000, fit_intercept=False
        ).fit(X, y)
    f_star = l1_logistic_objective(X, y, ref.coef_.ravel(), alpha)
    # plain proximal SGD (one block, batch 32, plateau schedule) measured over seeds 0-4: 4e-4..2.3e-3
    # after 15 epochs, 3.2e-4..4.4e-4 after 30; so 30 epochs, not a lucky seed
    model = ProxSGDClassifier(
        penalty="l1", alpha=alpha, fit_intercept=False, max_epochs=30, tol=None, evals_per_epoch=2, random_state=0
    ).fit(X, y)
    f = l1_logistic_objective(X, y, model.coef_.ravel(), alpha)
    assert abs(f - model.history_[-1]["objective"]) < 1e-9  # the history measures the returned model
    assert (f - f_star) / f_star < 1e-3
    assert f > f_star - 1e-6  # and liblinear's optimum is not beaten (it is the optimum)
    assert model.score(X_test, y_test) > 0.84


def test_two_async_workers_agree_with_serial_on_a9a(a9a):
    X, y, X_test, y_test = a9a
    common = dict(
        penalty="l1", alpha=1e-4, fit_intercept=False, max_epochs=15, evals_per_epoch=2, tol=None, random_state=0
    )
    serial = ProxSGDClassifier(**common).fit(X, y)
    threads = ProxSGDClassifier(backend="threads", n_workers=2, threads_per_worker=1, **common).fit(X, y)
    f_serial, f_threads = serial.history_[-1]["objective"], threads.history_[-1]["objective"]
    assert abs(f_threads - f_serial) / f_serial < 3e-3
    assert threads.telemetry_["updates"] == serial.telemetry_["updates"]
    assert threads.telemetry_["staleness"]["max"] >= 1  # the run really was asynchronous
    assert abs(threads.score(X_test, y_test) - serial.score(X_test, y_test)) < 0.01


def test_svrg_takes_asyb_block_pushes_to_1e_3_on_a9a_serial_and_with_two_threads(a9a):
    X, y, _, _ = a9a
    alpha = 1e-4
    f_star = OPTIMA["a9a/alpha=0.0001"]
    common = dict(
        penalty="l1",
        alpha=alpha,
        fit_intercept=False,
        n_blocks=4,
        push="block",
        variance_reduction="svrg",
        max_epochs=20,
        tol=None,
        random_state=0,
    )
    serial = ProxSGDClassifier(**common).fit(X, y)
    f = l1_logistic_objective(X, y, serial.coef_.ravel(), alpha)
    assert (f - f_star) / f_star < 1e-3  # plain AsyB stalls at ~2e-3 (noise floor; benchmarks/results)
    threads = ProxSGDClassifier(backend="threads", n_workers=2, threads_per_worker=1, **common).fit(X, y)
    assert threads.telemetry_["staleness"]["max"] >= 1
    f_threads = threads.history_[-1]["objective"]
    assert (f_threads - f_star) / f_star < 2e-3


def test_processes_backend_agrees_with_serial_on_small_sparse_data():
    rng = np.random.default_rng(0)
    X = sp.random(600, 50, density=0.1, random_state=0, format="csr")
    w = rng.normal(size=50) * (rng.random(50) < 0.3)
    y = np.where(X @ w + 0.05 * rng.normal(size=600) > 0, 1, 0)
    common = dict(penalty="l1", alpha=1e-3, max_epochs=20, tol=None, n_blocks=2, random_state=0)
    serial = ProxSGDClassifier(**common).fit(X, y)
    procs = ProxSGDClassifier(backend="processes", n_workers=2, threads_per_worker=1, **common).fit(X, y)
    assert abs(procs.history_[-1]["objective"] - serial.history_[-1]["objective"]) < 0.02


@pytest.mark.parametrize("push", ["block", "full"])
def test_sparse_and_dense_input_give_the_same_model(push):
    rng = np.random.default_rng(1)
    X = sp.random(300, 40, density=0.2, random_state=1, format="csc")
    y = X @ rng.normal(size=40) + 0.1
    # (column_scaling standardizes dense columns only: off, both runs take the same steps)
    kw = dict(penalty="elasticnet", alpha=1e-3, n_blocks=3, push=push, max_epochs=5, random_state=0,
              column_scaling="none")  # fmt: skip
    a = ProxSGDRegressor(**kw).fit(X, y)
    b = ProxSGDRegressor(**kw).fit(X.toarray(), y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-10)
    np.testing.assert_allclose(a.intercept_, b.intercept_, atol=1e-10)


def test_group_l1_zeroes_whole_groups_and_keeps_coefficients_in_feature_order():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 9))
    y = X[:, 4] - X[:, 7] + 0.01 * rng.normal(size=400)
    groups = [0, 1, 2, 0, 1, 2, 0, 1, 2]  # feature 4 and 7 are both in group 1
    model = ProxSGDRegressor(penalty="group_l1", alpha=0.05, groups=groups, n_blocks=2, max_epochs=40, random_state=0)
    model.fit(X, y)
    norms = [np.linalg.norm(model.coef_[np.array(groups) == g]) for g in range(3)]
    assert norms[0] == 0 and norms[2] == 0 and norms[1] > 0.5
    assert model.coef_[4] > 0.5 and model.coef_[7] < -0.5


def test_multiclass_ovr_and_multinomial_learn_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16
    for multi_class in ("ovr", "multinomial"):
        clf = ProxSGDClassifier(multi_class=multi_class, alpha=1e-4, max_epochs=20, random_state=0)
        clf.fit(X[:1200], y[:1200])
        assert clf.coef_.shape == (10, 64)
        assert clf.score(X[1200:], y[1200:]) > 0.88  # scikit-learn's exact multinomial fit: 0.925
        np.testing.assert_allclose(clf.predict_proba(X[:5]).sum(1), 1.0)


def test_history_records_the_measures_and_callback_can_stop():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(200, 5)), rng.integers(0, 2, 200)
    seen = []
    model = ProxSGDClassifier(
        penalty="l1", max_epochs=10, tol=None, callback=lambda e: seen.append(e) or len(seen) == 3
    )
    model.fit(X, y)
    assert len(model.history_) == 3
    entry = model.history_[-1]
    for key in ("objective", "grad_mapping_sq", "nnz", "seconds", "samples", "staleness_mean", "step_size"):
        assert key in entry
    assert entry["samples"] == 3 * 200
    assert model.telemetry_["updates"] == model.t_


def test_positive_constraint_and_box():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 6))
    y = X @ np.array([1.0, -1.0, 2.0, -2.0, 0.5, 0.0])
    pos = ProxSGDRegressor(penalty="l1", alpha=1e-3, positive=True, max_epochs=20, random_state=0).fit(X, y)
    assert (pos.coef_ >= 0).all() and pos.coef_[2] > 1
    box = ProxSGDRegressor(penalty="box", bounds=(-0.5, 0.5), max_epochs=20, random_state=0).fit(X, y)
    assert box.coef_.max() <= 0.5 and box.coef_.min() >= -0.5
    assert box.coef_[2] == pytest.approx(0.5) and box.coef_[3] == pytest.approx(-0.5)


# -- bad input -----------------------------------------------------------------------------
def test_one_class_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two classes"):
        ProxSGDClassifier().fit(np.ones((5, 2)), np.zeros(5))


def test_negative_alpha_is_a_clear_error():
    with pytest.raises(ValueError, match="'alpha' parameter"):
        ProxSGDClassifier(alpha=-1.0).fit(np.ones((5, 2)), [0, 1, 0, 1, 0])


def test_groups_that_do_not_cover_the_features_are_a_clear_error():
    X, y = np.random.default_rng(0).normal(size=(20, 5)), np.arange(20.0)
    with pytest.raises(ValueError, match="do not cover the features: 2 feature"):
        ProxSGDRegressor(penalty="group_l1", groups=[[0, 1], [2]]).fit(X, y)
    with pytest.raises(ValueError, match="one group label per feature"):
        ProxSGDRegressor(penalty="group_l1", groups=[0, 0, 1]).fit(X, y)
    with pytest.raises(ValueError, match="overlap"):
        ProxSGDRegressor(penalty="group_l1", groups=[[0, 1, 2], [2, 3, 4]]).fit(X, y)
    with pytest.raises(ValueError, match="needs groups"):
        ProxSGDRegressor(penalty="group_l1").fit(X, y)


def test_sparse_matrix_with_explicit_nan_is_a_clear_error():
    X = sp.csr_matrix(np.eye(4))
    X.data[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ProxSGDClassifier().fit(X, [0, 1, 0, 1])


def test_non_classification_loss_and_multinomial_hinge_are_clear_errors():
    X, y = np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 3
    with pytest.raises(ValueError, match="multinomial' needs loss='logistic'"):
        ProxSGDClassifier(loss="smoothed_hinge", multi_class="multinomial").fit(X, y)
    with pytest.raises(ValueError, match="not a classification loss"):
        ProxSGDClassifier(loss="huber").fit(X, y)
    with pytest.raises(ValueError, match="loss='squared'"):
        ProxSGDRegressor(loss="logistic").fit(X, y.astype(float))


def test_box_with_inverted_bounds_is_a_clear_error():
    with pytest.raises(ValueError, match="lower bound"):
        make_penalty("box", bounds=(1.0, -1.0))


def test_wide_sparse_data_uses_lazy_updates_and_matches_eager_ones(monkeypatch):
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(3)
    n, d = 400, 60_000
    X = sp.random(n, d, density=20 / d, random_state=rng, format="csr")
    w = rng.normal(size=d) * (rng.random(d) < 0.05)
    y = np.where(X @ w + 0.01 * rng.normal(size=n) > 0, 1, 0)
    common = dict(penalty="l1", alpha=1e-3, batch_size=8, n_blocks=1, max_epochs=8, tol=None, random_state=0)
    active = []
    pays = ProxSGDAlgorithm._lazy_pays
    monkeypatch.setattr(ProxSGDAlgorithm, "_lazy_pays", lambda self: active.append(pays(self)) or active[-1])
    lazy = ProxSGDClassifier(**common).fit(X, y)
    assert active and all(active)  # 60,000 columns against 8 x 20 entries: the lazy path was taken
    serial_checks = len(active)  # (push="auto" asks too)
    # lazy updates under two workers that apply their own updates (a constant step: not delay-adaptive)
    threads = ProxSGDClassifier(
        backend="threads", n_workers=2, threads_per_worker=1, delay_adaptive=False, **common
    ).fit(X, y)
    assert len(active) > serial_checks and all(active)
    monkeypatch.setattr(ProxSGDAlgorithm, "_lazy_pays", lambda self: False)
    eager = ProxSGDClassifier(**common).fit(X, y)
    np.testing.assert_allclose(lazy.coef_, eager.coef_, rtol=1e-8, atol=1e-10)  # serial: the same arithmetic
    f_eager, f_threads = eager.history_[-1]["objective"], threads.history_[-1]["objective"]
    assert abs(f_threads - f_eager) / f_eager < 0.02


@pytest.mark.parametrize("penalty", ["l1", "elasticnet", "l1 + smooth", "l1 + smooth, torch step"])
@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("push", ["block", "auto"])
def test_dense_data_agrees_with_serial_on_the_compiled_and_the_python_servers_path(backend, push, penalty, monkeypatch):
    """Dense data with L1 or elastic net runs the compiled task loop as dense rows (fast.py), and with
    a smooth regularizer (nonconvex_strength, here tiny) too (block_prox.py's sweep); with the
    regularizer and ASYNCOPT_COMPILED_PROX=off there is no compiled step, so the workers push through
    ServerGroup (each part under its server's Python lock, clocks in the shared words). Each fit ends
    near the serial one, and every server's clock counts the updates routed to it."""
    from asyncopt import ProxSGDRegressor

    if penalty.endswith("torch step"):
        monkeypatch.setenv("ASYNCOPT_COMPILED_PROX", "off")

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 12))
    y = X @ (rng.normal(size=12) * (rng.random(12) < 0.5)) + 0.3 + 0.05 * rng.normal(size=600)
    smooth = 1e-12 if "smooth" in penalty else 0.0  # (its term: far below the tolerances here)
    penalty = penalty.split()[0]
    common = dict(penalty=penalty, alpha=1e-3, n_blocks=3, push=push, max_epochs=20, random_state=0, tol=0.0,
                  nonconvex_strength=smooth)  # fmt: skip
    serial = ProxSGDRegressor(**common).fit(X, y)
    parallel = ProxSGDRegressor(backend=backend, n_workers=2, threads_per_worker=1, **common).fit(X, y)
    ratio = 1.0 if penalty == "l1" else 0.15  # (l1_ratio's default)

    def objective(est):
        residual = X @ est.coef_ + est.intercept_ - y
        penalty_value = ratio * np.abs(est.coef_).sum() + 0.5 * (1 - ratio) * (est.coef_**2).sum()
        return 0.5 * np.mean(residual**2) + 1e-3 * penalty_value

    start = 0.5 * np.mean(y**2)  # the objective at zero
    assert abs(objective(parallel) - objective(serial)) < 1e-3 * (start - objective(serial))  # of the decrease
    assert serial.history_[-1]["objective"] == pytest.approx(objective(serial), rel=1e-9)
    clocks = parallel.telemetry_["server_updates"]
    updates = parallel.telemetry_["updates"]
    assert len(clocks) == 4 and clocks[3] == updates  # blocks, intercept
    assert sum(clocks[:3]) == updates if push == "block" else clocks[:3] == [updates] * 3


@pytest.mark.parametrize("batch_size", [300, 5000])
def test_the_serial_engines_compiled_tasks_draw_the_batches_of_the_batch_by_batch_path(batch_size, monkeypatch):
    # tasks of whole batches: with TASK_SAMPLES (4,096) samples a task, a batch of 300 was cut short at
    # each task's end, and dense data (which took the batch-by-batch torch step until session 32) then
    # followed another trajectory (MNIST standardized: F 2-3% apart after an epoch)
    from asyncopt import ProxSGDClassifier

    rng = np.random.default_rng(4)
    X = rng.normal(size=(9000, 20))
    y = (X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=9000) > 0).astype(int)
    kw = dict(penalty="l1", alpha=1e-3, batch_size=batch_size, max_epochs=2, tol=None, random_state=0)
    compiled = ProxSGDClassifier(**kw).fit(X, y)
    monkeypatch.setenv("ASYNCOPT_DENSE_ROWS", "off")  # (dense data batch by batch, the torch step)
    stepwise = ProxSGDClassifier(**kw).fit(X, y)
    np.testing.assert_allclose(compiled.coef_, stepwise.coef_, rtol=1e-9, atol=1e-12)
    assert compiled.history_[-1]["objective"] == pytest.approx(stepwise.history_[-1]["objective"], rel=1e-12)


LOADED_KERNELS_SCRIPT = """
import sys, warnings
import numpy as np, scipy.sparse as sp
from asyncopt import ProxSGDClassifier
from asyncopt.proxsgd import fast
warnings.simplefilter("ignore")
backend, workers, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
X = sp.random(400, 60, density=0.1, format="csr", random_state=np.random.default_rng(0))
y = np.arange(400) % 2
ProxSGDClassifier(backend=backend, n_workers=workers, max_delay=delay, max_epochs=1, tol=None, random_state=0).fit(X, y)
per_batch = (fast.csr_batch_margins, fast.sparse_block_step, fast.eager_l1_apply)
print(sum(len(kernel.signatures) for kernel in per_batch))
"""


@pytest.mark.parametrize(
    ("backend", "workers", "delay", "loads"),
    [("serial", 1, 0, False), ("threads", 2, 0, False), ("serial", 1, 2, True)],
)
def test_the_per_batch_kernels_are_loaded_only_by_runs_that_step_per_batch(backend, workers, delay, loads):
    """The engines load what their workers run: a fit whose steps all go through the compiled task
    loop loads none of the per-batch kernels (on a cold numba cache they took 17 of the first a9a
    fit's 47 s to compile, never to be called); the delay simulator, which steps batch by batch,
    loads them (in a fresh process: this one's other tests load them)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LOADED_KERNELS_SCRIPT, backend, str(workers), str(delay)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (int(done.stdout.split()[-1]) > 0) == loads


ONE_LOOP_SCRIPT = """
import warnings
import numpy as np, scipy.sparse as sp
from asyncopt import ProxSGDClassifier
from asyncopt.engines import compiled
warnings.simplefilter("ignore")
X, y = sp.random(400, 60, density=0.1, format="csr", random_state=np.random.default_rng(0)), np.arange(400) % 2
wide = sp.random(2000, 200_000, density=2e-4, format="csr", random_state=np.random.default_rng(0))
yw = np.arange(2000) % 2
eager = ProxSGDClassifier(penalty="l1", max_epochs=1, tol=None, random_state=0).fit(X, y)
lazy = ProxSGDClassifier(penalty="l1", max_epochs=1, tol=None, batch_size=8, random_state=0).fit(wide, yw)
print(sum(len(loop.signatures) for loop in compiled._RUNNERS.values()))
"""


def test_eager_and_lazy_fits_share_one_compiled_task_loop():
    """The lazy state's unused arrays have its dtypes in an eager run, so numba compiles the task
    loop once for both (~30 s on a cold cache here; before, a second specialisation)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ONE_LOOP_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "1"
