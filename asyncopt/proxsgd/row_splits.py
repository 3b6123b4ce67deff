"""Heavy rows drawn more often: importance sampling without replacement, for data whose largest row
dwarfs the typical one.

The minibatch step is 1 / L_N with L_N = curvature (beta / N + lambda_1) and beta = max_i w_i ||a_i||^2
(stepsize.py), and the automatic batch is the critical one, beta / lambda_1. One row far larger than
the rest sets both: uci-elevators (standardized) has a row of squared norm 20,720 against a mean of
19, so its batch was 3,249, an epoch 5 updates (and an SVRG anchor pass), and its lasso fits reached
1e-2 of the optimum at epoch 12 and 37 (alpha_max / 10, / 100) and stopped 1.5e-3 and 4.3e-3 above it.

A row i of smoothness s_i = w_i (||a_i||^2 + 1 with an intercept) above a threshold T is drawn k_i =
ceil(s_i / T) times an epoch, each draw weighted by r_i = (n' / n) / k_i in its batch (n' = sum k_i,
the draws an epoch). A batch's mean stays unbiased for F's gradient: E[r_i w_i grad f_i] over a
uniform draw of the n' is (1/n) sum_i w_i grad f_i. Each draw's smoothness r_i s_i is at most
(n' / n) T, so beta falls to about T. F, its full passes, the SVRG anchor and lambda_1 are unchanged:
they weigh each sample once. This is Prox-SVRG's importance sampling (Xiao & Zhang 2014, q_i
proportional to L_i), kept as a permutation of a multiset so that an epoch still visits every row.
Nothing is copied: the coordinator's epochs draw row i k_i times (engines.base.Schedule.draws).

T (`split_threshold`) is no lower than lambda_1 times the batch the run wants: below that, beta / N
no longer dominates L_N, and splitting further only shrinks the automatic batch. With the automatic
batch, that is the batch leaving MIN_UPDATES = 64 updates an epoch. Measured
(benchmarks/results/proxsgd_row_split_times.md, whole fits to a target): on uci-elevators the batch
becomes 251 (66 updates an epoch, 19 extra draws), 3.0x and 5.7x faster to 1e-2; magic, uci-pol
and California (largest rows 20-140 times the mean, 67-288 updates an epoch) are not split. Splitting
down to 512 updates an epoch (batches 33-64) was mixed on those (0.70-1.53x), and 1.4-8x slower
while dense batches took the torch step (a smaller batch cost its per-update overhead). T is also at
least SPLIT_FACTOR = 8 times the mean, which bounds the extra draws by n / 8.
"""

from __future__ import annotations

import numpy as np

SPLIT_FACTOR = 8.0  # a row is drawn more than once when its smoothness exceeds this many times the mean
MIN_UPDATES = 64  # an automatic batch is not left so large that an epoch holds fewer updates than this


def split_threshold(mean: float, top_eigenvalue: float, n: int, batch_size: int | None, bounds: tuple) -> float:
    """The smoothness above which a row is drawn more than once: SPLIT_FACTOR times the mean, and no
    lower than lambda_1 times the batch the run wants, where a draw's beta / N no longer dominates
    lambda_1 in the step's L_N = beta / N + lambda_1: a given `batch_size`, or for the automatic batch
    (beta / lambda_1) the one that leaves MIN_UPDATES updates an epoch, within `bounds` (the automatic
    batch's). Splitting below that would shrink the automatic batch and add per-update overhead for
    little (the module's docstring)."""
    if batch_size is None:
        batch_size = int(min(max(n // MIN_UPDATES, bounds[0]), bounds[1]))
    return max(SPLIT_FACTOR * mean, top_eigenvalue * batch_size)


def heavy_row_counts(smoothness: np.ndarray, threshold: float | None = None) -> np.ndarray | None:
    """k_i, the times each row is drawn an epoch, from the rows' smoothness s_i = w_i (||a_i||^2 + 1
    with an intercept); None when no row exceeds the threshold (default SPLIT_FACTOR times the mean;
    `split_threshold`): each drawn once."""
    s = np.asarray(smoothness, dtype=np.float64)
    if s.size == 0:
        return None
    if threshold is None:
        threshold = SPLIT_FACTOR * float(s.mean())
    if not threshold > 0 or float(s.max()) <= threshold:
        return None
    return np.maximum(1, np.ceil(s / threshold)).astype(np.int64)


def epoch_draws(counts: np.ndarray) -> np.ndarray:
    """The rows one epoch draws: row i counts[i] times (in row order; the coordinator shuffles)."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)
