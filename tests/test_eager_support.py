"""The compiled eager updates visit only each block's support (fast.eager_support_apply): the rows
that may be non-zero, those the SVRG anchor's mean moves off 0, and the pairs' rows. They must give
the parameters of the sweep over the whole block, update for update, also after the anchor moves
(drained points list the supports again)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from asyncopt.engines import atomics, compiled
from asyncopt.engines.base import Task
from asyncopt.proxsgd import fast
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.data import LinearData
from asyncopt.proxsgd.losses import LOSSES, NonconvexRegularizer
from asyncopt.proxsgd.problem import LinearProblem, block_bounds
from asyncopt.proxsgd.prox import make_penalty


def _problem(alpha, blocks, k=1, positive=False, seed=0, reg=0.0):
    rng = np.random.default_rng(seed)
    n, d = 200, 600
    X = sp.random(n, d, density=0.02, random_state=seed, format="csr")
    w = rng.normal(size=(d, k)) * (rng.random((d, 1)) < 0.05)
    Y = np.where(X @ w + 0.1 * rng.normal(size=(n, k)) > 0, 1.0, -1.0)
    penalty = make_penalty("l1", alpha, positive=positive)
    return LinearProblem(LinearData.from_array(X, Y), LOSSES["logistic"], penalty, NonconvexRegularizer(reg), True,
                         block_bounds(d, blocks))  # fmt: skip


def _support_invariant(algo, params):
    """Each block lists every non-zero row (and every row the anchor moves), marks exactly its list."""
    state, rows, member = (algo._support[name].numpy() for name in ("state", "rows", "member"))
    P = params.numpy()
    bounds = algo.problem.bounds
    for b in range(algo.problem.n_blocks):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        listed = set(rows[lo : lo + state[b, 0]].tolist())
        assert len(listed) == state[b, 0]  # (no row twice)
        assert listed == set(np.flatnonzero(member[lo:hi]) + lo)
        assert set(np.flatnonzero(P[lo:hi].any(axis=1)) + lo) <= listed


@pytest.mark.parametrize(
    "alpha, blocks, push, vr, k, positive, reg",
    [
        (0.006, 1, "full", True, 1, False, 0.0),
        (0.006, 3, "full", True, 1, False, 0.0),
        (0.006, 5, "full", True, 2, False, 0.0),  # (4 blocks or more: the pairs come grouped by block)
        (0.006, 3, "block", True, 1, False, 0.0),
        (0.03, 2, "full", False, 1, False, 0.0),
        (0.006, 2, "full", True, 1, True, 0.0),
        (0.0, 2, "full", True, 1, False, 0.0),  # no penalty: the anchor moves every row (the support is dense)
        # the smooth regularizer (r'(0) = 0: the same support): against the torch step's updates
        (0.006, 3, "full", True, 1, False, 0.5),
        (0.006, 2, "block", True, 2, True, 0.5),
        (0.03, 2, "full", False, 1, False, 0.5),
    ],
)
def test_support_updates_equal_the_sweep_update_for_update(alpha, blocks, push, vr, k, positive, reg):
    problem = _problem(alpha, blocks, k, positive, reg=reg)
    n, d = problem.data.n, problem.data.d
    reference = ProxSGDAlgorithm(problem, 4, 0.5, push, variance_reduction=vr, lazy="off")
    algo = ProxSGDAlgorithm(problem, 4, 0.5, push, variance_reduction=vr, lazy="off")
    assert algo.compiled_tasks and algo._support is not None
    rng = np.random.default_rng(1)
    stepwise, fused = reference.init_params(), algo.init_params()
    sparse_seen = False
    for _ in range(4):  # drained points between the chunks: the anchor moves to the parameters
        if vr:
            reference.refresh_snapshot(stepwise)
            algo.refresh_snapshot(fused)
        algo.flush(fused)
        batches = 60
        task = Task(rng.integers(0, n, 4 * batches), np.full(batches, 4), rng.integers(0, 2**62, batches), 4)
        for batch, scale, key in task.batches():
            reference.apply(stepwise, reference.compute(stepwise, torch.as_tensor(batch), scale, key), 0)
        compiled.run_task(algo, fused, task, atomics.new_sync(algo.n_locks).numpy())
        if reg:  # (the torch step: its own order of additions)
            np.testing.assert_allclose(fused.numpy(), stepwise.numpy(), rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_array_equal(fused.numpy(), stepwise.numpy())
        modes = algo._support["state"].numpy()[:, 1]
        assert (modes != fast.SUPPORT_REBUILD).all()  # every block was updated, and listed its support
        if (modes == fast.SUPPORT_SPARSE).all():
            sparse_seen = True
            _support_invariant(algo, fused)
    nonzero = int(fused[:d].count_nonzero())
    assert 0 < nonzero < d * k
    # the penalized runs stay sparse enough for the listed path; with no penalty every row moves
    assert sparse_seen == (alpha > 0)


def test_a_row_the_new_anchor_moves_off_zero_is_updated_untouched():
    """After the anchor moves, a row at 0 that no pair touches moves under the mean alone when
    |mu| > alpha: the drained point's rebuild lists it, and the listed updates after it move it
    (a stale support would leave it where it is)."""
    problem = _problem(0.02, 2, seed=3)
    d = problem.data.d
    reference = ProxSGDAlgorithm(problem, 4, 0.5, "full", variance_reduction=True, lazy="off")
    algo = ProxSGDAlgorithm(problem, 4, 0.5, "full", variance_reduction=True, lazy="off")
    stepwise, params = reference.init_params(), algo.init_params()
    for a, p in ((reference, stepwise), (algo, params)):
        a.refresh_snapshot(p)
    task = Task(np.arange(8), np.array([4, 4]), np.array([0, 1]), 4)
    compiled.run_task(algo, params, task, atomics.new_sync(algo.n_locks).numpy())  # (a support listed)
    assert (algo._support["state"].numpy()[:, 1] == fast.SUPPORT_SPARSE).all()
    moving = np.arange(d) % 7 == 0  # a new anchor mean that moves other rows
    for a, p in ((reference, stepwise), (algo, params)):
        a._snap_mu.numpy()[:d, 0] = np.where(moving, 0.5, 0.0)
        a._invalidate_support()  # (what refresh_snapshot does)
        p.zero_()
        a.flush(p)
    for batch, scale, key in task.batches():
        reference.apply(stepwise, reference.compute(stepwise, torch.as_tensor(batch), scale, key), 0)
    compiled.run_task(algo, params, task, atomics.new_sync(algo.n_locks).numpy())  # rebuild, then listed
    np.testing.assert_array_equal(params.numpy(), stepwise.numpy())
    touched = np.unique(problem.data.indices.numpy()[: int(problem.data.indptr[8])])
    untouched = moving.copy()
    untouched[touched] = False
    P = params.numpy()[:d, 0]
    assert untouched.sum() > 50 and (P[untouched] < 0).all()
    np.testing.assert_allclose(P[untouched], -2 * 0.5 * (0.5 - 0.02))  # two steps of eta (mu - alpha)
