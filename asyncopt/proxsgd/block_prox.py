"""The compiled server rule for box, group L1 and the smooth nonconvex regularizer (fast.py's task
loop and Ray's bundles).

fast.eager_support_apply visits only a block's support because a row at 0 stays at 0 under the L1
prox. A box's projection moves every row the anchor's mean moves, and group L1 zeroes or scales a
whole group from its norm, so these penalties sweep their block on every update: the rows' new
values x - eta (g + mu + r'(x)) computed and projected (box) or scaled by their group's norm (group
L1), each row written once. The separable penalties (L1, elastic net, L2, none) with the regularizer
keep the listed support (r'(0) = 0: a row at 0 stays there under the same rule); their passes over a
whole block (the support's rebuild, a dense support, Ray's bundles) are general_sweep's too. Until
session 35 all of these took the torch step a batch (prox.py, which stays the reference): 4-12x
slower whole fits with one worker on a9a and California.

r'(x) is the regularizer's gradient at the server's current value of the row, not at the worker's
read: the server holds the row under its lock, so that part of the gradient has no delay (the
torch step adds it in the worker, at the read).

`prox` is the tuple of `prox_args`: (kind, alpha, l2, positive, rw, box, scale, group_of_row,
group_weight, reg); arrays a kind does not use are empty. The box's bounds and row scales s are in
the parameters' precision, multiplied there as prox.Box does: a bound times s rounded otherwise
lies outside the box by an ulp, where the objective is infinite.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from asyncopt.proxsgd.scalar_prox import l2_shrink, row_weight

PROX_SEPARABLE, PROX_BOX, PROX_GROUP = 0, 1, 2


def prox_args(
    kind, alpha, l2, positive, rw, dtype, box=None, scale=None, group_of_row=None, group_weight=None, reg=0.0
) -> tuple:
    """The kernels' penalty tuple, of one set of types for every penalty of a precision (one
    compile): the arrays read-only, as Ray's actors would receive them (numba compiles writable and
    read-only arrays apart)."""
    return (
        int(kind), float(alpha), float(l2), bool(positive), rw,
        _read_only((-np.inf, np.inf) if box is None else box, dtype),
        _read_only(() if scale is None else scale, dtype),
        _read_only(() if group_of_row is None else group_of_row, np.int64),
        _read_only(() if group_weight is None else group_weight, np.float64),
        float(reg),
    )  # fmt: skip


def _read_only(values, dtype) -> np.ndarray:
    view = np.asarray(values, dtype=dtype).view()
    view.flags.writeable = False
    return view


@njit(cache=True, nogil=True, inline="always")
def sweeps(prox) -> bool:
    """A pass over the whole block takes general_sweep (not fast.soft_step's separable rule)."""
    return prox[0] != PROX_SEPARABLE or prox[9] != 0.0


@njit(cache=True, nogil=True, inline="always")
def listed(prox) -> bool:
    """The rule keeps a row at 0 that no pair touches and the anchor's mean does not move
    (fast.eager_support_apply's listed support): the separable penalties, with the regularizer too
    (its gradient is 0 at 0)."""
    return prox[0] == PROX_SEPARABLE


@njit(cache=True, nogil=True, inline="always")
def stepped(x, g, eta, reg):
    """x - eta (g + r'(x)): g the pairs' sum and the anchor's mean, r' the regularizer's gradient
    2 r x / (1 + x^2)^2 (losses.NonconvexRegularizer)."""
    if reg != 0.0:
        q = 1.0 + x * x
        g += 2.0 * reg * x / (q * q)
    return x - eta * g


@njit(cache=True, nogil=True, inline="always")
def _soft(x, t, positive):
    """scalar_prox.soft without data-dependent branches: x - clip(x, -t, t) is x - t above t, x + t
    below -t and exactly 0 between, bit for bit; max(x - t, 0) with positive. soft's branches, taken
    at random over a block's rows, cost ~9 ns a row in a sweep that does not vectorize."""
    if positive:
        return max(x - t, 0.0)
    return x - min(max(x, -t), t)


@njit(cache=True, nogil=True)
def general_sweep(P, acc, mu, has_mu, eta, lo, hi, prox):
    """In place on rows lo..hi of P: the step with acc's sums (left for the caller to clear), the
    anchor's mean and the regularizer, then the penalty's prox; each row written once (a lock-free
    reader sees a row as it was or as it is after the update). The rows are walked as one flat
    range where the rule is the same for every row (7x faster than indexing rows and columns: it
    vectorizes), row by row where each has its own threshold or bounds."""
    kind, alpha, l2, positive, rw, box, scale, group_of_row, group_weight, reg = prox
    k = P.shape[1]
    v, a = P[lo:hi].reshape(-1), acc[: hi - lo].reshape(-1)
    m, with_mu = a, 0.0  # (without the anchor: a + 0 a = a, no branch in the loops)
    if has_mu:
        m, with_mu = mu[lo:hi].reshape(-1), 1.0
    if kind == PROX_GROUP:  # prox.GroupL1: (clipped at 0 with positive) times max(0, 1 - eta alpha w_g / ||v_g||)
        r = lo
        while r < hi:
            g = group_of_row[r]
            e = r + 1
            while e < hi and group_of_row[e] == g:
                e += 1
            sq = 0.0
            for q in range((r - lo) * k, (e - lo) * k):  # (the group's norm first, then its rows written)
                x = stepped(v[q], a[q] + with_mu * m[q], eta, reg)
                if positive:
                    x = max(x, 0.0)
                sq += x * x
            t, norm = eta * alpha * group_weight[g], np.sqrt(sq)
            factor = 1.0 - t / norm if norm > t else 0.0
            for q in range((r - lo) * k, (e - lo) * k):
                x = stepped(v[q], a[q] + with_mu * m[q], eta, reg)
                if positive:
                    x = max(x, 0.0)
                v[q] = x * factor
            r = e
        return
    if kind == PROX_BOX:  # prox.Box: the projection, on scaled rows onto the bounds times s
        lower, upper = box[0], box[1]
        if positive and lower < 0.0:
            lower = box[0] * 0.0  # (0 in the box's precision)
        if scale.shape[0] == 0:
            for q in range(v.shape[0]):
                v[q] = min(max(stepped(v[q], a[q] + with_mu * m[q], eta, reg), lower), upper)
            return
        for r in range(hi - lo):
            low, high = lower * scale[lo + r], upper * scale[lo + r]
            for q in range(r * k, (r + 1) * k):
                v[q] = min(max(stepped(v[q], a[q] + with_mu * m[q], eta, reg), low), high)
        return
    if rw.shape[0] == 0:  # the soft threshold (times the L2 factor) of fast.soft_step, one for every row
        t, shrink = eta * alpha, l2_shrink(eta, l2, 1.0)
        for q in range(v.shape[0]):
            v[q] = _soft(stepped(v[q], a[q] + with_mu * m[q], eta, reg), t, positive) * shrink
        return
    for r in range(hi - lo):
        w = row_weight(rw, lo + r)
        t, shrink = eta * alpha * w, l2_shrink(eta, l2, w)
        for q in range(r * k, (r + 1) * k):
            v[q] = _soft(stepped(v[q], a[q] + with_mu * m[q], eta, reg), t, positive) * shrink


@njit(cache=True, nogil=True)
def general_apply(P, index, values, eta, mu, has_mu, lo, hi, acc, prox):
    """The server's rule on rows lo..hi (no intercept) from (row, value) pairs (those outside lo..hi
    skipped; duplicates add up), summed aside in acc (at least hi - lo rows, zero between updates:
    the pairs' rows are cleared after the sweep)."""
    k = P.shape[1]
    if acc.shape[0] < hi - lo or acc.shape[1] != k:  # (numba does not check bounds)
        raise ValueError("general_apply: the scratch has fewer rows than the block")
    for q in range(index.shape[0]):
        c = index[q]
        if lo <= c < hi:
            for j in range(k):
                acc[c - lo, j] += values[q, j]
    general_sweep(P, acc, mu, has_mu, eta, lo, hi, prox)
    for q in range(index.shape[0]):
        c = index[q]
        if lo <= c < hi:
            for j in range(k):
                acc[c - lo, j] = 0.0
