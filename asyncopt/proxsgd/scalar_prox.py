"""The scalar prox kernels every compiled server rule shares (fast.py, block_prox.py): the soft
threshold, a row's threshold weight and the L2 part's factor."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True, inline="always")
def soft(x, t, positive):
    """sign(x) max(|x| - t, 0), or max(x - t, 0) with positive."""
    if positive:
        return x - t if x > t else 0.0
    if x > t:
        return x - t
    if x < -t:
        return x + t
    return 0.0


@njit(cache=True, nogil=True, inline="always")
def row_weight(rw, c):
    """Row c's threshold weight: rw[c], or 1 where rw is empty (one threshold for every row). rw holds
    1 / s for the penalty's row_scale s (prox.Penalty.row_scale: L1 on u / s thresholds at eta alpha / s)."""
    return 1.0 if rw.shape[0] == 0 else rw[c]


@njit(cache=True, nogil=True, inline="always")
def l2_shrink(eta, l2, w):
    """The L2 part's prox factor for a row of threshold weight w: 1 / (1 + eta l2 w^2) (elastic net,
    L2: prox.ElasticNet, prox.SquaredL2; w = 1 / s on scaled rows), exactly 1 without an L2 part."""
    return 1.0 if l2 == 0.0 else 1.0 / (1.0 + eta * l2 * w * w)
