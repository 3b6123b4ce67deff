"""Compiled (numba) kernels for a worker's step on CPU.

A ProxSGD update touches a few thousand numbers; done with torch on CPU, the ~25 tensor
operations of a step cost ~250 us of dispatch overhead for ~5 us of arithmetic. These loops do
the minibatch margins, the block gradient and the L1 prox in three calls. They are used when the
data lives on the CPU; the torch code in data.py / prox.py stays the reference (and the path on
other devices), and tests check that both give the same updates.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def csr_batch_margins(indptr, indices, values, rows, W):
    """Z = X[rows] @ W for CSR X; reads only the rows of W the batch touches (the pull)."""
    k = W.shape[1]
    Z = np.zeros((rows.shape[0], k), dtype=W.dtype)
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            v = values[p]
            for j in range(k):
                Z[r, j] += v * W[c, j]
    return Z


@njit(cache=True, nogil=True)
def csr_block_gradient(indptr, indices, values, rows, D, lo, hi):
    """The entries of X[rows][:, lo:hi]^T @ D as (parameter row, value) pairs (duplicates add up)."""
    count = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            if lo <= indices[p] < hi:
                count += 1
    k = D.shape[1]
    index = np.empty(count, dtype=np.int64)
    out = np.empty((count, k), dtype=D.dtype)
    q = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            if lo <= c < hi:
                index[q] = c
                for j in range(k):
                    out[q, j] = values[p] * D[r, j]
                q += 1
    return index, out


@njit(cache=True, nogil=True)
def scatter_add(params, index, values, scale):
    """params[index] += scale * values, duplicates accumulated."""
    for q in range(index.shape[0]):
        for j in range(values.shape[1]):
            params[index[q], j] += scale * values[q, j]


@njit(cache=True, nogil=True)
def soft_threshold(v, t, positive):
    """In place: sign(v) max(|v| - t, 0), or max(v - t, 0) with positive."""
    flat = v.reshape(-1)
    for q in range(flat.shape[0]):
        x = flat[q]
        if positive:
            flat[q] = x - t if x > t else 0.0
        elif x > t:
            flat[q] = x - t
        elif x < -t:
            flat[q] = x + t
        else:
            flat[q] = 0.0
