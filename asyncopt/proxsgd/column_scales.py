"""Column scales for the estimators' ``column_scaling="auto"``.

One step serves every coefficient and X's largest direction sets it (1 / L), so the coefficients of
columns on a much smaller scale crawl: a fit ends far from its optimum, or runs out of epochs. The run
then solves on X's columns divided by s (and, dense with an intercept, centred), for u = s * w, with
the penalty kept on the user's coefficients (prox.Penalty.row_scale): the problem is unchanged.

- Dense data: every column standardized (the Jacobi preconditioner): minus its mean with an intercept
  (which absorbs the shift), over its spread.
- Sparse data: the zeros stay (no centring), and only columns whose entries are far from the data's
  typical entry are brought to it: far larger ones, and far smaller ones present in at least
  SMALL_COLUMN_MIN_ROWS of the rows. Standardizing every sparse column would scale rare ones up: on
  news20 (TF-IDF, a column's largest entry 1e-4 to 0.66) a MaxAbsScaler in front of the default fit
  left it 0.2 and 1.08 above the optimum after 100 epochs, against 1e-2 in 6 and 58 epochs as given
  (its small columns are rare words of long documents: none is in 0.1% of the rows). Columns as given
  are the right scale for indicators and normalized text; what slows a sparse fit is a raw numeric
  column among them (an income, an age beside one-hot columns, or a quantity in tiny units).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# dense: a column's scale is at least this fraction of the largest (near-empty columns are not blown
# up by the division)
COLUMN_SCALE_FLOOR = 1e-6
# sparse: a column is scaled down when the root mean square of its entries exceeds the typical
# entry's by this factor (its share of X^T X is then over 900x that of a typical column as frequent).
# news20's largest ratio is 11, a9a's 1: both keep their columns.
LARGE_COLUMN_FACTOR = 30.0
# sparse: a column smaller than the typical entry by that factor is scaled up only when it has entries in
# this share of the rows (a rare column scaled up makes a few rows' norms, and with them the step, large)
SMALL_COLUMN_MIN_ROWS = 0.01


# rows of X centred at a time (a 2,048 x 784 float64 chunk is 12.8 MB)
CHUNK_ROWS = 2048


def dense_scales(X: np.ndarray, centre: bool) -> tuple[np.ndarray | None, np.ndarray] | None:
    """(shift, scale): each column's mean (with `centre`, else None) and its spread about it (standard
    deviation, or root mean square without centring); None when every column is constant 0."""
    shift = X.mean(axis=0, dtype=np.float64) if centre else None
    squares = np.zeros(X.shape[1])
    for lo in range(0, X.shape[0], CHUNK_ROWS):  # (chunks: no n x d temporary, 0.84 s -> ? on MNIST)
        part = X[lo : lo + CHUNK_ROWS]
        centred = part if shift is None else part - shift
        squares += np.einsum("ij,ij->j", centred, centred, dtype=np.float64)
    spread = np.sqrt(squares / X.shape[0])
    top = float(spread.max())
    if not (top > 0 and np.isfinite(top)):
        return None
    return shift, np.maximum(spread, top * COLUMN_SCALE_FLOOR)


def entry_magnitudes(X) -> tuple[np.ndarray, np.ndarray]:
    """(counts, rms): each column's stored entries and their root mean square (0 for empty columns)."""
    from asyncopt.proxsgd import fast

    X = sp.csr_matrix(X)
    d = X.shape[1]
    counts = np.zeros(d, dtype=np.int64)
    squares = np.zeros(d, dtype=np.float64)
    fast.csr_column_square_sums(X.indices, X.data, counts, squares)
    rms = np.sqrt(squares / np.maximum(counts, 1))
    return counts, rms


def weighted_median(values: np.ndarray, weights: np.ndarray, bins: int = 1024) -> float:
    """The smallest of the (non-negative) values whose weight and the smaller values' reach half the
    total weight. A histogram of the values' logarithms finds the bin that holds it and only that bin
    is sorted: O(len) where a sort of every column cost 8 ms on news20's 130,108 (a fit's setup pays it)."""
    half = 0.5 * float(weights.sum())
    zero = values <= 0.0
    below = float(weights[zero].sum())
    if below >= half:
        return 0.0
    v, w = values[~zero], weights[~zero]
    logs = np.log(v)
    lo, hi = float(logs.min()), float(logs.max())
    index = np.zeros(len(v), dtype=np.int64)
    if hi > lo:
        index = np.minimum(((logs - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    cumulative = below + np.cumsum(np.bincount(index, weights=w, minlength=bins))
    k = int(np.searchsorted(cumulative, half))
    start = below if k == 0 else float(cumulative[k - 1])
    inside = index == k
    order = np.argsort(v[inside], kind="stable")
    within = start + np.cumsum(w[inside][order])
    return float(v[inside][order][min(int(np.searchsorted(within, half)), len(order) - 1)])


def sparse_scales(X) -> np.ndarray | None:
    """Each column's divisor for sparse X (1 for most), or None when every column keeps its scale. A
    column is off scale when the root mean square of its stored entries is over LARGE_COLUMN_FACTOR
    times the typical entry's (the median over X's stored entries of their column's root mean square),
    or under 1 / LARGE_COLUMN_FACTOR times it with entries in SMALL_COLUMN_MIN_ROWS of the rows; it is
    divided by its ratio to the typical entry, which brings it to that entry's magnitude."""
    counts, rms = entry_magnitudes(X)
    stored = counts > 0
    if not stored.any():
        return None
    typical = weighted_median(rms[stored], counts[stored].astype(np.float64))
    if not (typical > 0 and np.isfinite(typical)):
        return None
    frequent = counts >= SMALL_COLUMN_MIN_ROWS * X.shape[0]
    off = (rms > LARGE_COLUMN_FACTOR * typical) | (frequent & (rms > 0) & (rms * LARGE_COLUMN_FACTOR < typical))
    if not off.any():
        return None
    scale = np.ones(X.shape[1], dtype=np.float64)
    scale[off] = rms[off] / typical
    return scale


def divided_columns(X, scale: np.ndarray):
    """Sparse X with column j divided by scale[j] (CSR; new values, X's index arrays)."""
    X = sp.csr_matrix(X)
    values = X.data / scale[X.indices]
    return sp.csr_matrix((values, X.indices, X.indptr), shape=X.shape)
