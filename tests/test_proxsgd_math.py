"""The pure pieces of AsyB-ProxSGD: prox operators against scalar references, loss gradients."""

import dataclasses

import numpy as np
import pytest
import scipy.optimize
import torch

from asyncopt.proxsgd.data import LinearData
from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
from asyncopt.proxsgd.problem import LinearProblem, block_bounds
from asyncopt.proxsgd.prox import make_penalty


def scalar_prox(h, v, eta):
    """argmin_u h(u) + (u - v)^2 / (2 eta) by a bounded scalar search (the reference)."""
    result = scipy.optimize.minimize_scalar(
        lambda u: h(u) + (u - v) ** 2 / (2 * eta), bounds=(-abs(v) - 10, abs(v) + 10), method="bounded",
        options={"xatol": 1e-12},
    )  # fmt: skip
    candidates = [result.x, 0.0]  # the kink at 0 is where bounded searches are least precise
    return min(candidates, key=lambda u: h(u) + (u - v) ** 2 / (2 * eta))


SCALAR_PENALTIES = {
    "l1": (dict(alpha=0.7), lambda u: 0.7 * abs(u)),
    "l2": (dict(alpha=0.7), lambda u: 0.35 * u * u),
    "elasticnet": (dict(alpha=0.7, l1_ratio=0.3), lambda u: 0.7 * (0.3 * abs(u) + 0.35 * u * u)),
    "box": (dict(bounds=(-0.5, 0.25)), lambda u: 0.0 if -0.5 <= u <= 0.25 else 1e6 * (1 + abs(u))),
    "none": ({}, lambda u: 0.0),
}


def _weights(n: int, weighted: bool) -> np.ndarray | None:
    """Sample weights of mean 1 spread over 0..3.6 (a zero among them), or None."""
    if not weighted:
        return None
    w = np.random.default_rng(n).uniform(0.0, 3.0, size=n)
    w[1] = 0.0
    return w * (n / w.sum())


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("name", sorted(SCALAR_PENALTIES))
def test_prox_matches_scalar_reference(name, positive):
    kwargs, h = SCALAR_PENALTIES[name]
    penalty = make_penalty(name, positive=positive, **kwargs)
    h_pos = (lambda u: h(u) if u >= 0 else 1e6 * (1 + abs(u))) if positive else h
    values = np.array([-3.0, -0.9, -0.2, -0.05, 0.0, 0.04, 0.3, 0.69, 2.5])
    for eta in (0.1, 1.0, 2.0):
        v = torch.tensor(values, dtype=torch.float64).reshape(-1, 1)
        penalty.prox(v, eta, 0, len(values))
        expected = [scalar_prox(h_pos, x, eta) for x in values]
        np.testing.assert_allclose(v[:, 0].numpy(), expected, atol=1e-6)


def test_group_l1_prox_matches_a_numerical_minimizer_and_acts_per_block():
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    penalty = make_penalty("group_l1", alpha=0.4, group_of_row=groups)
    rng = np.random.default_rng(0)
    V = rng.normal(size=(8, 2))
    eta = 0.8
    out = torch.tensor(V)
    # apply per block, as servers do: blocks [0, 5) and [5, 8) hold whole groups
    penalty.prox(out[:5], eta, 0, 5)
    penalty.prox(out[5:], eta, 5, 8)
    weights = np.sqrt(np.bincount(groups.numpy()))

    def objective(u):
        U = u.reshape(8, 2)
        norms = np.array([np.linalg.norm(U[groups.numpy() == g]) for g in range(4)])
        return 0.4 * (weights * norms).sum() + ((U - V) ** 2).sum() / (2 * eta)

    ref = scipy.optimize.minimize(objective, V.ravel(), method="Powell", options={"xtol": 1e-10, "ftol": 1e-14})
    assert objective(out.numpy().ravel()) <= ref.fun + 1e-9  # the closed form is at least as good
    # group 2 (a single small row) is shrunk to exactly zero, group 0 only scaled
    np.testing.assert_allclose(np.linalg.norm(V[:3]) - np.linalg.norm(out[:3].numpy()), eta * 0.4 * weights[0])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_derivative_passes_check_grad(name):
    loss = LOSSES[name]
    rng = np.random.default_rng(1)
    k = 3 if loss.labels == "onehot" else 1
    if loss.labels == "binary":
        y = rng.choice([-1.0, 1.0], size=(6, k))
    elif loss.labels == "onehot":
        y = np.eye(k)[rng.integers(0, k, size=6)]
    else:
        y = rng.normal(size=(6, k))
    Y = torch.tensor(y)

    def f(z):
        return float(loss.value(torch.tensor(z.reshape(6, k)), Y).sum())

    def g(z):
        return loss.derivative(torch.tensor(z.reshape(6, k)), Y).numpy().ravel()

    for z0 in (rng.normal(size=6 * k), 3 * rng.normal(size=6 * k)):
        assert scipy.optimize.check_grad(f, g, z0) < 1e-5


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("loss_name", ["logistic", "sigmoid", "squared", "multinomial"])
def test_full_gradient_passes_check_grad(loss_name, sparse):
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    n, d = 40, 7
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5)
    loss = LOSSES[loss_name]
    k = 3 if loss.labels == "onehot" else 1
    y = (
        rng.choice([-1.0, 1.0], size=(n, 1))
        if loss.labels == "binary"
        else (np.eye(k)[rng.integers(0, k, n)] if loss.labels == "onehot" else rng.normal(size=(n, 1)))
    )
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, y)
    problem = LinearProblem(data, loss, make_penalty("none"), NonconvexRegularizer(0.3), True, block_bounds(d, 2))

    def f(w):
        value, _ = problem.smooth_value_and_gradient(torch.tensor(w.reshape(d + 1, k)))
        return value

    def g(w):
        _, grad = problem.smooth_value_and_gradient(torch.tensor(w.reshape(d + 1, k)))
        return grad.numpy().ravel()

    assert scipy.optimize.check_grad(f, g, rng.normal(size=(d + 1) * k)) < 1e-6


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("loss_name", ["logistic", "smoothed_hinge"])
def test_a_full_pass_with_a_probe_is_the_gradient_and_one_curvature_product(loss_name, sparse, fit_intercept, weighted):
    """The shared pass an evaluation point takes (SVRG anchor, F's gradient, the local step's first
    power-iteration product riding as a second column) against dense numpy, with sample weights
    (F = mean of w_i f_i) or without; the measures it saves equal the ones computed from scratch."""
    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    n, d = 50, 9
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5)
    loss = LOSSES[loss_name]
    y = rng.choice([-1.0, 1.0], size=(n, 1)) if loss.labels == "binary" else rng.normal(size=(n, 1))
    w = _weights(n, weighted)
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, y, weights=w)
    w = np.ones(n) if w is None else w
    problem = LinearProblem(
        data, loss, make_penalty("l1", 0.01), NonconvexRegularizer(0.0), fit_intercept, block_bounds(d, 3)
    )
    params = torch.tensor(rng.normal(size=(d + 1, 1)) * 0.3)
    if not fit_intercept:
        params[d] = 0.0
    probe = torch.tensor(rng.normal(size=(d + 1, 1)))
    if not fit_intercept:
        probe[d] = 0.0  # (as the power iteration keeps it)
    probe /= probe.norm()
    taken = problem.full_pass(params, probe)

    A = np.hstack([X, np.ones((n, 1))]) if fit_intercept else np.hstack([X, np.zeros((n, 1))])
    z = A @ params.numpy()
    np.testing.assert_allclose(taken.margins.numpy(), z, rtol=1e-12, atol=1e-12)
    value, grad = problem.smooth_value_and_gradient(params)
    assert taken.loss_value == pytest.approx(value, rel=1e-12)
    zt, yt = torch.tensor(z), torch.tensor(y)
    assert value == pytest.approx(float((w * loss.value(zt, yt).numpy().ravel()).mean()), rel=1e-12)
    D = w * loss.derivative(zt, yt).numpy().ravel()
    gradient = A.T @ D / n
    if not fit_intercept:
        gradient[d] = 0.0
    np.testing.assert_allclose(grad.numpy().ravel(), gradient, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(taken.loss_gradient.numpy(), grad.numpy(), rtol=1e-10, atol=1e-14)
    c = w * loss.second_derivative(zt, yt).abs().numpy().reshape(-1)
    expected = A.T @ (c * (A @ probe.numpy()).ravel()) / n
    np.testing.assert_allclose(taken.probe_product.numpy().ravel(), expected, rtol=1e-10, atol=1e-14)

    saved, fresh = problem.measures(params, 0.5, taken), problem.measures(params, 0.5)
    assert saved["objective"] == pytest.approx(fresh["objective"], rel=1e-12)
    assert saved["grad_mapping_sq"] == pytest.approx(fresh["grad_mapping_sq"], rel=1e-10)
    assert saved["nnz"] == fresh["nnz"]
    assert not taken.at(params + 1e-3)  # a pass at other parameters is not reused


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_the_setups_serial_products_and_the_first_anchor_need_no_transposed_copy(fit_intercept):
    """The products the setup runs while X^T is built on a thread (serial, from X's rows) equal the ones
    with X^T, and the anchor at zero coefficients (no X product, a serial X^T one) is the gradient there."""
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    n, d = 60, 11
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.4)
    y = rng.choice([-1.0, 1.0], size=(n, 1))
    data = LinearData.from_array(sp.csr_matrix(X), y)
    for k in (1, 2):
        W, D = torch.tensor(rng.normal(size=(d, k))), torch.tensor(rng.normal(size=(n, k)))
        np.testing.assert_allclose(data.margins(W, serial=True).numpy(), X @ W.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(data.transpose_product(D, serial=True).numpy(), X.T @ D.numpy(), rtol=1e-12,
                                   atol=1e-14)  # fmt: skip
        np.testing.assert_allclose(data.transpose_product(D).numpy(), X.T @ D.numpy(), rtol=1e-12, atol=1e-14)
    problem = LinearProblem(data, LOSSES["logistic"], make_penalty("l1", 0.01), NonconvexRegularizer(0.0),
                            fit_intercept, block_bounds(d, 3))  # fmt: skip
    params = problem.init_params()
    if fit_intercept:
        params[d] = 0.3
    taken = problem.full_pass(params)
    value, grad = problem.smooth_value_and_gradient(params)
    assert taken.loss_value == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(taken.loss_gradient.numpy(), grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(taken.margins.numpy(), np.full((n, 1), float(params[d])))


def _rows_scaled(penalty, d, scaled):
    """The penalty on rows scaled by 0.1 to 10 (prox.Penalty.row_scale), or as it is."""
    if not scaled:
        return penalty
    return dataclasses.replace(penalty, row_scale=torch.logspace(-1, 1, d, dtype=torch.float64))


def test_block_bounds_never_cut_a_group():
    groups = np.repeat(np.arange(6), [5, 1, 1, 8, 2, 3])
    bounds = block_bounds(len(groups), 4, groups)
    starts = set(np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]).tolist()) | {len(groups)}
    assert set(bounds.tolist()) <= starts
    assert bounds[0] == 0 and bounds[-1] == len(groups)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("penalty_name", ["l1", "elasticnet"])
def test_compiled_worker_step_matches_the_torch_reference(push, sparse, penalty_name, vr, weighted):
    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(5)
    n, d = 60, 11
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.4)
    y = rng.choice([-1.0, 1.0], size=(n, 1))
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, y, weights=_weights(n, weighted))
    problem = LinearProblem(
        data, LOSSES["logistic"], make_penalty(penalty_name, 0.05), NonconvexRegularizer(0.0), True, block_bounds(d, 3)
    )
    results = []
    for compiled in (True, False):
        algo = ProxSGDAlgorithm(problem, 8, 0.7, push, use_compiled=compiled, variance_reduction=vr)
        params = algo.init_params()
        params += torch.tensor(rng.normal(size=params.shape)) if not results else 0
        if results:
            params.copy_(results[0][1])
        start = params.clone()
        if vr:
            algo.refresh_snapshot(start * 0.5)
        for key in range(6):
            batch = torch.as_tensor(np.random.default_rng(key).choice(n, 8, replace=False))
            algo.apply(params, algo.compute(params, batch, 1.0, key), 0)
        results.append((params.clone(), start))
    np.testing.assert_allclose(results[0][0].numpy(), results[1][0].numpy(), rtol=1e-12, atol=1e-12)
    assert not torch.equal(results[0][0], results[0][1])  # the steps moved the parameters


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("loss", ["logistic", "squared", "smoothed_hinge", "sigmoid", "multinomial"])
@pytest.mark.parametrize(
    "penalty", ["l1", "l1-positive", "none", "l1-rows-scaled", "elasticnet", "elasticnet-rows-scaled", "l2-positive"]
)
def test_fused_compiled_step_matches_the_torch_reference_for_each_loss(loss, k, penalty, vr, weighted):
    """The sparse fast path does the whole step in two kernels (fast.sparse_block_step and
    eager_l1_apply), with its own copy of each loss derivative: checked against losses.py. With
    rows scaled (column_scaling on sparse data), each row's threshold is its own: against prox.py's.
    With sample weights, each sample's derivative is weighted: against problem.batch_weighted. Elastic
    net and L2: the threshold, then the L2 factor (fast.l2_shrink), against prox.py's. The multinomial
    (softmax over a sample's k margins) with 2 and 3 classes."""
    import scipy.sparse as sp

    from asyncopt.proxsgd import fast
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    assert loss in fast.LOSS_CODES
    rng = np.random.default_rng(7)
    n, d = 40, 9
    X = sp.csr_matrix(rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5))
    if loss == "multinomial":  # one-hot rows (of 2 classes where k is 1: a softmax over one never moves)
        k = max(k, 2)
        Y = np.eye(k)[rng.integers(0, k, size=n)]
    else:
        Y = rng.normal(size=(n, k)) if loss == "squared" else rng.choice([-1.0, 1.0], size=(n, k))
    name, positive, scaled = penalty.split("-")[0], penalty.endswith("positive"), penalty.endswith("scaled")
    problem = LinearProblem(
        LinearData.from_array(X, Y, weights=_weights(n, weighted)),
        LOSSES[loss],
        _rows_scaled(make_penalty(name, 0.03, l1_ratio=0.4, positive=positive), d, scaled),
        NonconvexRegularizer(0.0),
        True,
        block_bounds(d, 2),
    )
    start = torch.tensor(rng.normal(size=(d + 1, k))) * 2.0  # margins beyond |z| = 1: every branch of the hinge
    results = []
    for compiled in (True, False):
        algo = ProxSGDAlgorithm(problem, 6, 0.3, use_compiled=compiled, variance_reduction=vr)
        params = start.clone()
        if vr:
            algo.refresh_snapshot(start * 0.5)
        for key in range(8):
            batch = torch.as_tensor(np.random.default_rng(key).choice(n, 6, replace=False))
            algo.apply(params, algo.compute(params, batch, 1.0, key), 0)
        results.append(params)
    np.testing.assert_allclose(results[0].numpy(), results[1].numpy(), rtol=1e-12, atol=1e-12)
    assert not torch.equal(results[0], start)


def test_the_compiled_softmax_derivative_is_torchs_at_margins_that_overflow_exp():
    """The multinomial's coefficients (fast.batch_coefficients, code SOFTMAX) shift each row by its
    largest margin: margins of +-1000 give torch.softmax's values, finite; a NaN margin is reported."""
    from asyncopt.proxsgd import fast

    Z = np.array([[1000.0, 999.0, -1000.0], [0.5, -0.25, 2.0], [-1000.0, -1001.0, -999.5]])
    Y = np.eye(3)[[0, 2, 1]]
    rows = np.arange(3)
    D = Z.copy()
    intercept, finite = fast.batch_coefficients(Y, rows, D, fast.LOSS_CODES["multinomial"], Y, False, np.empty(0))
    expected = (torch.softmax(torch.tensor(Z), dim=1) - torch.tensor(Y)).numpy() / 3
    assert finite
    np.testing.assert_allclose(D, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(intercept, expected.sum(0), rtol=1e-12, atol=1e-15)
    Z[1, 1] = np.nan
    assert not fast.batch_coefficients(Y, rows, Z, fast.LOSS_CODES["multinomial"], Y, False, np.empty(0))[1]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("blocks", [1, 3, 4])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
def test_a_compiled_task_applies_the_same_updates_as_compute_and_apply(push, vr, lazy, blocks, scaled, weighted, dense):
    """The engine's compiled task loop (the servers-in-workers fast path: no torch per step) against
    the step-by-step rule (torch's, use_compiled=False), with an intercept, 3 outputs and a task of 7
    batches, eager or lazy (then flushed), sparse X or dense rows; the version counter counts every
    update."""
    _check_compiled_task(push, vr, lazy, blocks, scaled, weighted, dense)


@pytest.mark.parametrize("loss", ["logistic", "multinomial"])
@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
def test_a_compiled_task_on_wide_dense_rows_multiplies_by_blas_with_the_same_updates(push, vr, blocks, loss):
    """Dense rows of 96 columns in batches of 24: the margins and the block gradients go through BLAS
    (fast.DENSE_BLAS_MIN_ENTRIES, fast.dense_blas_step); the same updates as torch's step by step, for an
    elementwise loss and the softmax."""
    from asyncopt.proxsgd import fast

    assert 24 * 96 // blocks >= fast.DENSE_BLAS_MIN_ENTRIES
    _check_compiled_task(push, vr, False, blocks, False, False, True, n=120, d=96, batch=24, loss=loss)


GROUPS = torch.as_tensor(np.repeat(np.arange(5), [3, 1, 4, 2, 2]))  # (12 rows)
SWEPT_PENALTIES = {
    "box": (("box", dict(bounds=(-0.3, 0.2))), 0.0, False),
    "box, positive, scaled rows": (("box", dict(bounds=(-0.3, 0.2), positive=True)), 0.0, True),
    "group L1": (("group_l1", dict(alpha=0.05, group_of_row=GROUPS)), 0.0, False),
    "group L1, positive": (("group_l1", dict(alpha=0.05, group_of_row=GROUPS, positive=True)), 0.0, False),
    "L1 + smooth": (("l1", dict(alpha=0.02)), 0.3, False),
    "elastic net + smooth, scaled rows": (("elasticnet", dict(alpha=0.02)), 0.3, True),
    "box + smooth": (("box", dict(bounds=(-0.3, 0.2))), 0.3, False),
}


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
@pytest.mark.parametrize("case", list(SWEPT_PENALTIES))
def test_box_group_l1_and_the_smooth_regularizer_run_compiled_with_the_torch_steps_updates(
    case, push, vr, blocks, dense
):
    """The penalties without a listed support (box, group L1) and the smooth regularizer run the
    compiled task loop (block_prox.py's sweep of the block), with the same updates as torch's step
    by step: the regularizer's gradient is taken at the server's value of the row, which in a task of
    one worker is the worker's read."""
    penalty, reg, scaled = SWEPT_PENALTIES[case]
    _check_compiled_task(push, vr, False, blocks, scaled, False, dense, penalty=penalty, reg=reg)


def _check_compiled_task(
    push,
    vr,
    lazy,
    blocks,
    scaled,
    weighted,
    dense,
    n=50,
    d=12,
    batch=5,
    loss="logistic",
    penalty=("l1", dict(alpha=0.02)),
    reg=0.0,
):
    import scipy.sparse as sp

    from asyncopt.engines import atomics, compiled
    from asyncopt.engines.base import Task
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(8)
    k = 3
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.4)
    X = X if dense else sp.csr_matrix(X)
    Y = np.eye(k)[rng.integers(0, k, size=n)] if loss == "multinomial" else rng.choice([-1.0, 1.0], size=(n, k))
    problem = LinearProblem(
        LinearData.from_array(X, Y, weights=_weights(n, weighted)),
        LOSSES[loss],
        _rows_scaled(make_penalty(penalty[0], **penalty[1]), d, scaled),
        NonconvexRegularizer(reg),
        True,
        block_bounds(d, blocks, None if "group_of_row" not in penalty[1] else penalty[1]["group_of_row"].numpy()),
    )
    algo = ProxSGDAlgorithm(problem, batch, 0.4, push, variance_reduction=vr, use_compiled=False)
    fused_algo = ProxSGDAlgorithm(problem, batch, 0.4, push, variance_reduction=vr, lazy="on" if lazy else "off")
    if dense and lazy:  # (lazy updates are for sparse data only)
        assert fused_algo.fused and not fused_algo.lazy_active
        return
    start = torch.tensor(rng.normal(size=(d + 1, k)))
    if vr:
        algo.refresh_snapshot(start * 0.5)
        fused_algo.refresh_snapshot(start * 0.5)
    rows = np.concatenate([np.random.default_rng(key).choice(n, batch, replace=False) for key in range(7)])
    task = Task(rows, np.full(7, batch), np.arange(7), batch)
    stepwise = start.clone()
    for rows_of_batch, scale, key in task.batches():
        algo.apply(stepwise, algo.compute(stepwise, torch.as_tensor(rows_of_batch), scale, key), 0)
    fused, sync = start.clone(), atomics.new_sync(algo.n_locks).numpy()
    if lazy and push == "full" and blocks > 1:  # lazy counts are per block: a full push over 3 is not fused
        assert not fused_algo.fused and not fused_algo.compiled_tasks
        return
    assert fused_algo.fused and fused_algo.lazy_active == lazy
    stalenesses, samples = compiled.run_task(fused_algo, fused, task, sync)
    assert stalenesses.tolist() == [0] * 7 and samples == 7 * batch
    assert sync[atomics.VERSION_WORD] == 7 and sync[atomics.CURSOR_WORD] == 0  # counted
    assert all(sync[atomics.lock_word(b)] == 0 for b in range(algo.n_locks))  # locks free
    clocks = compiled.server_clocks(sync, algo.n_locks)  # updates each server applied
    per_block = [0] * blocks
    for key in range(7):
        for b in [key % blocks] if push == "block" else range(blocks):
            per_block[b] += 1
    assert clocks == per_block + [7]  # the intercept server: every update
    fused_algo.flush(fused)
    np.testing.assert_allclose(fused.numpy(), stepwise.numpy(), rtol=1e-12, atol=1e-12)
    assert not torch.equal(fused, start)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("kind", ["pairs", "samples"])
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("blocks", [1, 3, 4])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
@pytest.mark.parametrize("penalty", ["l1", "positive l1", "none", "elasticnet"])
def test_a_bundled_task_is_the_batches_computed_and_applied_one_by_one(
    penalty, push, vr, blocks, adaptive, kind, weighted
):
    """Ray's bundles (proxsgd/bundles.py): the task computed in one compiled call on a worker's copy
    (each update applied to it before the next batch), split by server, and each server's bundle
    applied in one call, against the same steps one by one with compute / apply / server_parts. Both
    copies and the servers' parameters agree; every server gets the updates it owns. Both kinds of
    bundle: gradient pairs, and samples with coefficients (the servers sum the gradient from their
    columns). Each penalty's branch of the server's step: the prox, the positive prox, none."""
    _check_bundled_task("logistic", penalty, push, vr, blocks, adaptive, kind, weighted)


@pytest.mark.parametrize("kind", ["pairs", "samples"])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
def test_a_bundled_multinomial_task_is_its_batches_one_by_one(push, vr, kind):
    """The same for the multinomial loss (softmax over 3 classes): Ray's bundles take the compiled
    coefficients too."""
    _check_bundled_task("multinomial", "l1", push, vr, 3, False, kind, False)


def _check_bundled_task(loss, penalty, push, vr, blocks, adaptive, kind, weighted):
    import scipy.sparse as sp

    from asyncopt.engines.base import Task
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(9)
    n, d = 60, 12
    X = sp.csr_matrix(rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.4))
    if loss == "multinomial":
        Y = np.eye(3)[rng.integers(0, 3, size=n)]
    else:
        Y = rng.choice([-1.0, 1.0], size=(n, 2))
    k = Y.shape[1]
    problem = LinearProblem(
        LinearData.from_array(X, Y, weights=_weights(n, weighted)),
        LOSSES[loss], make_penalty(penalty.split()[-1], 0.02, positive=penalty.startswith("positive")),
        NonconvexRegularizer(0.0), True, block_bounds(d, blocks),
    )  # fmt: skip
    algo = ProxSGDAlgorithm(
        problem, 5, 0.4, push, delay=2.0, delay_adaptive=adaptive, variance_reduction=vr, bundle_pushes=kind
    )
    assert algo.bundles and algo.sample_bundles == (kind == "samples")
    start = torch.tensor(rng.normal(size=(d + 1, k)))
    if vr:
        algo.refresh_snapshot(start * 0.5)
    rows = np.concatenate([np.random.default_rng(key).choice(n, 5, replace=False) for key in range(6)] + [[3, 7]])
    task = Task(rows, np.array([5] * 6 + [2]), np.arange(7), 5)  # (the last batch short: a scaled step)
    stale = 3  # the step of the servers' last count (the delay bound 2 when not delay-adaptive)
    copy, servers = start.clone(), start.clone()
    for i, (batch, scale, key) in enumerate(task.batches()):
        update = algo.compute(copy, torch.as_tensor(batch), scale, key)
        if i < 6:
            algo.apply(copy, update, stale)
        for _, part in algo.server_parts(update):
            algo.apply(servers, part, stale)
    bundled_copy, bundled_servers = start.clone(), start.clone()
    bundle = algo.compute_bundle(bundled_copy, task, stale)
    assert len(bundle) == 7 and hasattr(bundle, "coefs") == (kind == "samples")
    owned = {}
    for server, part, updates in algo.bundle_parts(bundle):
        algo.apply_bundle(bundled_servers, server, part, stale)
        owned[server] = updates.tolist()
    np.testing.assert_allclose(bundled_copy.numpy(), copy.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bundled_servers.numpy(), servers.numpy(), rtol=1e-12, atol=1e-12)
    assert not torch.equal(bundled_servers, bundled_copy)  # (the copy lacks the last update)
    for b in range(blocks):
        assert owned.get(b, []) == [t for t in range(7) if push == "full" or t % blocks == b]
    assert owned[blocks] == list(range(7))  # the intercept server: every update


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("vr", [False, True])
def test_the_servers_copy_holds_no_samples_and_applies_the_same_steps(sparse, vr):
    """ProxSGDAlgorithm.for_servers (Ray's server actors): data of no rows, and the same server rule
    (step, prox, intercept, SVRG mean), per part and per bundle; its kernels load with no samples."""
    import pickle

    import scipy.sparse as sp

    from asyncopt.engines.base import Task
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(4)
    n, d = 300, 12
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.4)
    problem = LinearProblem(
        LinearData.from_array(sp.csr_matrix(X) if sparse else X, rng.choice([-1.0, 1.0], size=(n, 1))),
        LOSSES["logistic"], make_penalty("l1", 0.02), NonconvexRegularizer(0.0), True, block_bounds(d, 3),
    )  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 5, 0.4, "block", variance_reduction=vr)
    start = torch.tensor(rng.normal(size=(d + 1, 1)))
    if vr:
        algo.refresh_snapshot(start * 0.5)
    algo.step = 0.3  # (the schedule's current step travels too)
    server = algo.for_servers()
    assert server.problem.data.n == 0 and len(pickle.dumps(server)) < len(pickle.dumps(algo)) / 3
    server.prepare()
    # sample bundles: each block server's copy holds its block's columns of X, together X once
    own = [algo.for_server(b) for b in range(algo.n_locks)]
    assert algo.sample_bundles == sparse
    if sparse:
        held = sum(len(s._server_columns[2]) for s in own if hasattr(s, "_server_columns"))
        assert held == problem.data.nnz and not hasattr(own[algo.intercept_server], "_server_columns")
    if vr:
        server.load_state_dict(algo.state_dict(), server.init_params())  # (the broadcast: D is not kept)
    ours, theirs = start.clone(), start.clone()
    for key in range(6):
        update = algo.compute(ours, torch.as_tensor(rng.choice(n, 5, replace=False)), 1.0, key)
        for _, part in algo.server_parts(update):
            algo.apply(ours, part, 2)
            server.apply(theirs, part, 2)
    np.testing.assert_allclose(theirs.numpy(), ours.numpy(), rtol=1e-13, atol=1e-14)
    if sparse:  # bundles (the compiled path on sparse data)
        for copy in own:
            copy.warm_bundles("server")
            if vr:
                copy.load_state_dict(algo.state_dict(), copy.init_params())
        task = Task(rng.choice(n, 20, replace=False), np.full(4, 5), np.arange(4), 5)
        bundle = algo.compute_bundle(ours.clone(), task, 1)
        for b, part, _ in algo.bundle_parts(bundle):
            algo.apply_bundle(ours, b, part, 1)
            own[b].apply_bundle(theirs, b, part, 1)
        np.testing.assert_allclose(theirs.numpy(), ours.numpy(), rtol=1e-13, atol=1e-14)
        with pytest.raises(RuntimeError, match="no columns of X"):  # (not silently nothing)
            server.apply_bundle(theirs, 0, algo.bundle_parts(bundle)[0][1], 1)


@pytest.mark.parametrize("sparse", [True, False])
def test_the_object_stores_copy_carries_the_data_as_arrays_and_computes_the_same_steps(sparse):
    """ProxSGDAlgorithm.for_object_store (Ray's workers' copy): pickled (protocol 5, as Ray does), the
    data's arrays travel as out-of-band buffers, which Ray's object store holds once and its actors
    map in place (a pickled tensor is copied into each); read back, the copy computes the same
    updates. Without it the same pickle carries the data in-band."""
    import pickle

    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(5)
    n, d = 400, 30
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.3)
    problem = LinearProblem(
        LinearData.from_array(sp.csr_matrix(X) if sparse else X, rng.choice([-1.0, 1.0], size=(n, 1)),
                              weights=rng.uniform(0.5, 1.5, n)),
        LOSSES["logistic"], make_penalty("l1", 0.02), NonconvexRegularizer(0.0), True, block_bounds(d, 2),
    )  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 8, 0.3, "full", variance_reduction=True)
    algo.refresh_snapshot(torch.tensor(rng.normal(size=(d + 1, 1))) * 0.1)
    data = problem.data.for_workers()
    data_bytes = sum(t.numel() * t.element_size() for t in data.tensors())
    buffers = []
    payload = pickle.dumps(algo.for_object_store(), protocol=5, buffer_callback=buffers.append)
    assert sum(b.raw().nbytes for b in buffers) >= data_bytes
    assert len(payload) < len(pickle.dumps(algo, protocol=5)) - data_bytes / 2  # (in-band: the data)
    copy = pickle.loads(payload, buffers=buffers)
    held = copy.problem.data.values if sparse else copy.problem.data.dense
    assert isinstance(held, torch.Tensor) and isinstance(copy.problem.data.Y, torch.Tensor)
    assert isinstance(algo.problem.data.Y, torch.Tensor)  # (the original keeps its tensors)
    start = torch.tensor(rng.normal(size=(d + 1, 1)))
    for key in range(4):
        batch = torch.as_tensor(rng.choice(n, 8, replace=False))
        ours, theirs = algo.compute(start, batch, 1.0, key), copy.compute(start, batch, 1.0, key)
        np.testing.assert_array_equal(theirs.values.numpy(), ours.values.numpy())


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_a_block_servers_columns_are_xs_columns_in_its_rows_order(index_dtype):
    """fast.csr_column_range (ProxSGD's `for_server`: a Ray block server's columns of X): X[:, lo:hi]
    over every row, X's column numbers, each row's entries in X's order (unsorted rows included:
    the pairs a server forms must come in the worker's order)."""
    import scipy.sparse as sp

    from asyncopt.proxsgd import fast

    rng = np.random.default_rng(7)
    X = sp.random(40, 30, density=0.3, random_state=7, format="csr")
    order = np.concatenate([rng.permutation(np.arange(a, b)) for a, b in zip(X.indptr[:-1], X.indptr[1:], strict=True)])
    indices, values = X.indices[order].astype(index_dtype), X.data[order]  # (each row's entries shuffled)
    for lo, hi in [(0, 30), (0, 10), (10, 25), (29, 30), (12, 12)]:
        ptr, idx, val = fast.csr_column_range(X.indptr.astype(np.int64), indices, values, lo, hi)
        assert ptr.dtype == np.int64 and idx.dtype == index_dtype and len(ptr) == 41
        for i in range(40):
            row = slice(X.indptr[i], X.indptr[i + 1])
            keep = (indices[row] >= lo) & (indices[row] < hi)
            np.testing.assert_array_equal(idx[ptr[i] : ptr[i + 1]], indices[row][keep])
            np.testing.assert_array_equal(val[ptr[i] : ptr[i + 1]], values[row][keep])
        block = sp.csr_matrix((val, idx, ptr), shape=(40, 30)).toarray()
        np.testing.assert_array_equal(block[:, lo:hi], X.toarray()[:, lo:hi])
        assert not block[:, :lo].any() and not block[:, hi:].any()


@pytest.mark.parametrize("sparse", [True, False])
def test_full_push_split_into_server_parts_equals_one_full_step(sparse):
    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(6)
    n, d = 50, 13
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.4)
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, rng.choice([-1.0, 1.0], size=(n, 1)))
    problem = LinearProblem(
        data, LOSSES["logistic"], make_penalty("l1", 0.02), NonconvexRegularizer(0.0), True, block_bounds(d, 4)
    )
    algo = ProxSGDAlgorithm(problem, 10, 0.9, "full")
    start = torch.tensor(rng.normal(size=(d + 1, 1)))
    update = algo.compute(start, torch.arange(10), 1.0, 0)
    whole, parted = start.clone(), start.clone()
    algo.apply(whole, update, 0)
    parts = algo.server_parts(update)
    assert [k for k, _ in parts] == [0, 1, 2, 3, 4]  # the 4 blocks' servers, then the intercept server
    for _, part in parts:
        algo.apply(parted, part, 0)
    np.testing.assert_allclose(parted.numpy(), whole.numpy(), atol=1e-14)


@pytest.mark.parametrize("push", ["block", "full"])
@pytest.mark.parametrize("sparse", [True, False])
def test_svrg_step_at_the_anchor_is_an_exact_proximal_gradient_step(push, sparse):
    """At x = x~ the minibatch terms cancel: any batch gives grad f(x~) exactly (on the pushed block)."""
    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(8)
    n, d, eta, alpha = 70, 12, 0.6, 0.03
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5)
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, rng.choice([-1.0, 1.0], size=(n, 1)))
    problem = LinearProblem(
        data, LOSSES["logistic"], make_penalty("l1", alpha), NonconvexRegularizer(0.0), True, block_bounds(d, 3)
    )
    algo = ProxSGDAlgorithm(problem, 9, eta, push, variance_reduction=True)
    x = torch.tensor(rng.normal(size=(d + 1, 1)))
    algo.refresh_snapshot(x)
    _, grad = problem.smooth_value_and_gradient(x)
    key = 4  # block 1 of 3 for push="block"
    lo, hi = (int(problem.bounds[1]), int(problem.bounds[2])) if push == "block" else (0, d)
    expected = x.clone()
    expected[lo:hi] -= eta * grad[lo:hi]
    expected[lo:hi] = torch.sign(expected[lo:hi]) * torch.clamp(expected[lo:hi].abs() - eta * alpha, min=0)
    expected[d] -= eta * grad[d]
    stepped = x.clone()
    batch = torch.as_tensor(rng.choice(n, 9, replace=False))
    algo.apply(stepped, algo.compute(x, batch, 1.0, key), 0)
    np.testing.assert_allclose(stepped.numpy(), expected.numpy(), atol=1e-12)


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("push", ["block", "full"])
def test_lazy_updates_equal_eager_ones_after_a_flush(push, vr, k, blocks, scaled):
    """Just-in-time prox (only the rows a minibatch touches, the rest caught up in closed form when
    read or flushed) gives the parameters of applying the prox to whole blocks at every update."""
    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(9)
    n, d = 80, 40
    X = sp.random(n, d, density=0.08, random_state=1, format="csr")
    y = rng.choice([-1.0, 1.0], size=(n, k))
    data = LinearData.from_array(X, y)
    penalty = _rows_scaled(make_penalty("l1", 0.01), d, scaled)
    problem = LinearProblem(data, LOSSES["logistic"], penalty, NonconvexRegularizer(0.0), True, block_bounds(d, blocks))
    start = torch.tensor(rng.normal(size=(d + 1, k))) * (
        torch.rand(d + 1, k, generator=torch.Generator().manual_seed(0)) < 0.5
    )
    results = []
    for lazy in (False, True):
        algo = ProxSGDAlgorithm(problem, 6, 0.8, push, variance_reduction=vr, lazy="on" if lazy else "off")
        assert algo.lazy_active == lazy
        params = start.clone()
        if vr:
            algo.refresh_snapshot(start * 0.3)
        reads = []
        for key in range(25):
            batch = torch.as_tensor(np.random.default_rng(key).choice(n, 6, replace=False))
            update = algo.compute(params, batch, 1.0, key)
            reads.append(update.values.sum().item())  # the worker's read (margins) must be caught up
            algo.apply(params, update, 0)
        algo.flush(params)
        results.append((params, reads))
    np.testing.assert_allclose(results[1][0].numpy(), results[0][0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-9, atol=1e-12)
    assert not torch.equal(results[0][0], start)


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_smoothness_estimate_is_the_top_eigenvalue_of_the_gram_matrix_with_a_margin(sparse, fit_intercept):
    """Power iteration (stopping once the Rayleigh quotient settles) against numpy's eigvalsh of
    A^T A / n, A with a column of ones when an intercept is fitted; beta is the largest row norm."""
    import scipy.sparse as sp

    from asyncopt.proxsgd.stepsize import estimate_smoothness

    rng = np.random.default_rng(9)
    n, d = 80, 15
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5) + 0.3
    data = LinearData.from_array(sp.csr_matrix(X) if sparse else X, np.ones((n, 1)))
    A = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    top = np.linalg.eigvalsh(A.T @ A / n)[-1]
    est = estimate_smoothness(data, fit_intercept)
    assert est.top_eigenvalue == pytest.approx(1.05 * top, rel=1e-3)
    assert est.max_row_sq_norm == pytest.approx((A * A).sum(1).max())


@pytest.mark.parametrize("float32", [False, True])
def test_the_setups_compiled_passes_equal_scipys_products(float32):
    """column_sums (X^T 1) and gram_product (X^T (X v + s), sum(X v + s)): one compiled pass over X's
    rows each, against scipy's products, with empty rows and columns (the power iteration's products)."""
    import scipy.sparse as sp

    X = sp.random(120, 70, density=0.08, random_state=3, format="csr")
    X = sp.vstack([X, sp.csr_matrix((3, 70))]).tocsr()  # empty rows at the end
    dtype = torch.float32 if float32 else torch.float64
    data = LinearData.from_array(X, np.ones((123, 1)), dtype=dtype)
    A = X.toarray().astype(np.float32 if float32 else np.float64)
    rtol = 1e-5 if float32 else 1e-12
    np.testing.assert_allclose(data.column_sums().numpy(), A.sum(0), rtol=rtol, atol=rtol)
    v = torch.as_tensor(np.random.default_rng(1).normal(size=(70, 1)), dtype=dtype)
    for shift in (0.0, -0.7):
        u = A @ v.numpy()[:, 0] + shift
        product, total = data.gram_product(v, shift)
        assert product.shape == (70, 1) and product.dtype == dtype
        np.testing.assert_allclose(product.numpy()[:, 0], A.T @ u, rtol=rtol * 10, atol=rtol * 10)
        assert total == pytest.approx(u.sum(), rel=rtol * 10, abs=rtol * 10)


def test_a_workers_copy_of_the_algorithm_holds_no_transposed_data():
    """X^T and the products' row pointers serve the coordinator's full passes: a pickled algorithm (what a
    processes or Ray worker receives) and the shared tensors leave them out, and still take the same step."""
    import pickle

    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    X = sp.random(300, 200, density=0.05, random_state=0, format="csr")
    y = np.where(np.random.default_rng(0).random((300, 1)) < 0.5, -1.0, 1.0)
    problem = LinearProblem(LinearData.from_array(X, y), LOSSES["logistic"], make_penalty("l1", 0.01),
                            NonconvexRegularizer(0.0), False, block_bounds(200, 2))  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 4, 0.5, variance_reduction=True)
    algo.refresh_snapshot(algo.init_params())
    copy = pickle.loads(pickle.dumps(algo))
    data = copy.problem.data
    assert data.t_indptr is None and data.t_values is None and data.product_indptr is None
    assert data.indices.dtype == torch.int32  # (the column indices narrow: 4 bytes an entry)
    everything = problem.data.tensors()  # the coordinator's own copy keeps them (built on a thread)
    assert problem.data.t_indptr is not None and any(t is problem.data.t_values for t in everything)
    shared = {t.data_ptr() for t in problem.data.worker_tensors()}
    assert problem.data.t_values.data_ptr() not in shared
    rows = torch.arange(8)
    params = algo.init_params()
    params[:5] = 0.1
    mine, theirs = algo.compute(params, rows, 1.0), copy.compute(params, rows, 1.0)
    assert torch.equal(mine.values, theirs.values)


@pytest.mark.parametrize("packed", [False, True])
def test_the_step_read_after_moving_to_shared_memory_is_the_shared_one(packed):
    """share_memory_ moves storages and frees the old ones: views cached before (prepare) must not
    be read after, or the plateau schedule and lazy flushes in the coordinator see freed memory.
    Packed (the pool's way, engines/handover.py): the state moves into one block, views dropped first."""
    import scipy.sparse as sp

    from asyncopt.engines import handover
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    X = sp.random(30, 20, density=0.2, random_state=0, format="csr")
    problem = LinearProblem(
        LinearData.from_array(X, np.ones((30, 1))),
        LOSSES["logistic"],
        make_penalty("l1", 0.01),
        NonconvexRegularizer(0.0),
        False,
        block_bounds(20, 2),
    )
    algo = ProxSGDAlgorithm(problem, 4, 0.5, variance_reduction=True, lazy="on")
    algo.prepare()  # caches numpy views of the step, the anchor and the data
    algo.share_memory(handover.pack_shared if packed else None)
    algo.step = 0.125
    assert algo.step == 0.125
    assert algo._numpy_views()["snap_mu"].ctypes.data == algo._snap_mu.data_ptr()
    assert algo._snap_mu.is_shared() and algo._eta.is_shared()
    if packed:  # (nothing else held them: one block)
        assert algo._eta.untyped_storage().data_ptr() == algo._snap_mu.untyped_storage().data_ptr()


def test_a_shared_task_is_split_between_two_workers_and_each_batch_is_applied_once():
    """A shared task (the engines' rounds for compiled tasks): two threads take its batches from the
    cursor; together they apply every batch once. One worker alone applies them in order, exactly
    as an unshared task."""
    import dataclasses
    import threading

    import scipy.sparse as sp

    from asyncopt.engines import atomics, compiled
    from asyncopt.engines.base import Task
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(3)
    n, d = 300, 40
    X = sp.random(n, d, density=0.2, random_state=3, format="csr")
    problem = LinearProblem(
        LinearData.from_array(X, rng.choice([-1.0, 1.0], size=(n, 1))),
        LOSSES["logistic"],
        make_penalty("l1", 0.01),
        NonconvexRegularizer(0.0),
        True,
        block_bounds(d, 3),
    )
    algo = ProxSGDAlgorithm(problem, 5, 0.2)
    algo.prepare()
    batches = 2000
    task = Task(rng.integers(0, n, batches * 5), np.full(batches, 5), rng.integers(0, 2**62, batches), 5)
    shared = dataclasses.replace(task, shared=True)

    alone, in_order = algo.init_params(), algo.init_params()
    compiled.run_task(algo, alone, shared, atomics.new_sync(algo.n_locks).numpy())
    compiled.run_task(algo, in_order, task, atomics.new_sync(algo.n_locks).numpy())
    np.testing.assert_array_equal(alone.numpy(), in_order.numpy())

    params, sync = algo.init_params(), atomics.new_sync(algo.n_locks).numpy()
    start, results = threading.Barrier(2), [None, None]

    def work(i):
        start.wait()
        results[i] = compiled.run_task(algo, params, shared, sync)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r[0]) for r in results) == batches and sum(r[1] for r in results) == 5 * batches
    assert sync[atomics.VERSION_WORD] == batches and sync[atomics.CURSOR_WORD] >= batches
    assert all(sync[atomics.lock_word(b)] == 0 for b in range(algo.n_locks))  # every server lock released
    clocks = compiled.server_clocks(sync, algo.n_locks)
    assert sum(clocks[:3]) == clocks[3] == batches  # one block each, and the intercept server every time
    assert np.isfinite(params.numpy()).all() and not torch.equal(params, algo.init_params())


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_rows_read_are_the_batch_columns_and_a_step_reads_nothing_else(fit_intercept):
    """What a Ray worker pulls: the columns its samples touch (and the intercept row), and a step
    computed with every other row garbage is the same step."""
    import scipy.sparse as sp

    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
    from asyncopt.proxsgd.losses import get_loss

    X = sp.random(200, 300, density=0.02, random_state=0, format="csr")
    y = np.where(np.random.default_rng(0).random(200) > 0.5, 1.0, -1.0).reshape(-1, 1)
    data = LinearData.from_array(X, y)
    problem = LinearProblem(data, get_loss("logistic"), make_penalty("l1", 1e-3), NonconvexRegularizer(0.0),
                            fit_intercept, block_bounds(300, 3))  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 8, 0.1, lazy="off")
    algo.prepare()
    rows = np.array([3, 17, 17, 150, 199])
    needed = algo.rows_read(rows)
    expected = np.unique(X[rows].indices)
    if fit_intercept:
        expected = np.append(expected, 300)
    np.testing.assert_array_equal(needed, expected)
    params = torch.as_tensor(np.random.default_rng(1).normal(size=(301, 1)))
    if not fit_intercept:
        params[300] = 0.0  # (row d, never updated: no server owns it, a worker keeps its zero)
    garbage = torch.full_like(params, 1e6)
    garbage[needed], garbage[300] = params[needed], params[300]
    a = algo.compute(params, torch.as_tensor(rows), 1.0, 7)
    b = algo.compute(garbage, torch.as_tensor(rows), 1.0, 7)
    np.testing.assert_array_equal(a.index.numpy(), b.index.numpy())
    np.testing.assert_array_equal(a.values.numpy(), b.values.numpy())
    assert algo.rows_read(rows) is not None and ProxSGDAlgorithm(
        LinearProblem(LinearData.from_array(X.toarray(), y), get_loss("logistic"), make_penalty("l1", 1e-3),
                      NonconvexRegularizer(0.0), fit_intercept, block_bounds(300, 3)), 8, 0.1
    ).rows_read(rows) is None  # fmt: skip


@pytest.mark.parametrize("blocks", [1, 2, 5])
def test_a_full_pushs_pairs_grouped_by_block_are_found_by_bisection(blocks):
    """group_by_block reorders a full push's (row, value) pairs by block, keeping each row's pairs in
    their order (duplicates add up in the same order), and block_pairs finds block b's run of them:
    the pairs a filter over all of them would pick, in the same order (blocks with no pair: empty)."""
    from asyncopt.proxsgd import fast

    rng = np.random.default_rng(blocks)
    d = 40
    bounds = np.asarray(block_bounds(d, blocks), dtype=np.int64)
    index = rng.integers(0, d // 2, 60).astype(np.int64)  # (the upper blocks get no pair)
    values = rng.normal(size=(60, 3))
    grouped, grouped_values = fast.group_by_block(index, values, bounds)
    assert sorted(grouped.tolist()) == sorted(index.tolist())
    for b in range(blocks):
        first, stop = fast.block_pairs(grouped, bounds[b], bounds[b + 1])
        mine = (index >= bounds[b]) & (index < bounds[b + 1])
        np.testing.assert_array_equal(grouped[first:stop], index[mine])
        np.testing.assert_array_equal(grouped_values[first:stop], values[mine])


def test_a_server_lock_never_released_stops_the_task_naming_it_after_the_free_servers(monkeypatch):
    """The compiled loop takes an update's servers in whichever order their locks come free: with
    block 1's lock held by a worker that died, the task applies the update to blocks 0 and 2, then
    gives up on block 1 after LOCK_SPINS tries, naming it (the engine turns it into a failed worker)."""
    import scipy.sparse as sp

    from asyncopt.engines import atomics, compiled
    from asyncopt.engines.base import Task
    from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm

    rng = np.random.default_rng(3)
    n, d = 30, 9
    X = sp.csr_matrix(rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5))
    problem = LinearProblem(LinearData.from_array(X, rng.choice([-1.0, 1.0], size=(n, 1))), LOSSES["logistic"],
                            make_penalty("l1", 0.01), NonconvexRegularizer(0.0), False, block_bounds(d, 3))  # fmt: skip
    algo = ProxSGDAlgorithm(problem, 5, 0.4, "full", lazy="off")
    params, sync = algo.init_params(), atomics.new_sync(algo.n_locks).numpy()
    sync[atomics.lock_word(1)] = 1  # held, never released
    monkeypatch.setattr(compiled, "LOCK_SPINS", 10_000)
    task = Task(np.arange(5), np.array([5]), np.array([0]), 5)
    with pytest.raises(RuntimeError, match="parameter server 1's lock stayed taken for 10,000 tries"):
        compiled.run_task(algo, params, task, sync)
    assert compiled.server_clocks(sync, algo.n_locks)[:3] == [1, 0, 1]  # the free ones took the update
    assert sync[atomics.lock_word(0)] == 0 and sync[atomics.lock_word(2)] == 0
