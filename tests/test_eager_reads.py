"""Lock-free readers of eagerly updated rows: can they see a value no server held (stepped, not proxed)?

No: the eager kernel writes each row once, its final value (fast.eager_l1_apply). The kernel
before it stepped the touched rows, then proxed the block, and between the two a reader saw
x - eta g; `_race` runs that kernel too (a copy of its source below), to show the test fails on it."""

import inspect
import threading

import numpy as np
import pytest
from numba import njit

from asyncopt.engines import atomics
from asyncopt.proxsgd import fast


def _race(module, updates=20_000, rows=100_000):
    """A server applies `updates` eager L1 updates to a block of `rows` rows; each has one gradient
    pair, on the block's last row, that steps it by +1, and the prox takes 0.25 off: the row holds
    0.75 t after update t (exact in binary). A reader meanwhile reads that row. Returns how many
    reads saw a value that is not a multiple of 0.75 (a row stepped and not yet proxed)."""
    apply = njit(nogil=True)(module.eager_l1_apply.py_func)
    with_scratch = "acc" in inspect.signature(module.eager_l1_apply.py_func).parameters

    rw = np.zeros(0)  # (one threshold for every row)

    @njit(nogil=True)
    def write(P, mu, n, acc):
        index, values, intercept = np.full(1, P.shape[0] - 2, dtype=np.int64), np.full((1, 1), -1.0), np.zeros(1)
        for _ in range(n):
            if with_scratch:
                apply(P, index, values, 1.0, 0.25, False, mu, False, 0, P.shape[0] - 1, intercept, False, acc, rw, 0.0)
            else:  # the kernel before the single write (to show the test fails on it)
                apply(P, index, values, 1.0, 0.25, False, mu, False, 0, P.shape[0] - 1, intercept, False)

    @njit(nogil=True)
    def read(P, row, done):
        bad = 0
        while atomics.load(done, 0) == 0:  # (an atomic load: a plain one may be hoisted out of the loop)
            v = P[row, 0]
            if v != 0.75 * np.floor(v / 0.75):
                bad += 1
        return bad

    P, mu = np.zeros((rows + 1, 1)), np.zeros((rows + 1, 1))
    acc, done = np.zeros((rows, 1)), np.ones(1, dtype=np.int64)
    write(P.copy(), mu, 2, acc)  # compile both before the race
    read(P, rows - 1, done)
    done[0] = 0
    bad = []
    reader = threading.Thread(target=lambda: bad.append(read(P, rows - 1, done)))
    reader.start()
    write(P, mu, updates, acc)
    done[0] = 1
    reader.join()
    assert P[rows - 1, 0] == 0.75 * updates and not P[: rows - 1].any() and not acc.any()
    return bad[0]


def test_concurrent_reads_of_eager_rows_only_see_values_the_server_held():
    assert _race(fast) == 0


class _TwoPass:
    """The kernel before the single write: step the pairs' rows, then prox the block."""

    @staticmethod
    def _soft_threshold(v, t, positive):
        flat = v.reshape(-1)
        for q in range(flat.shape[0]):
            flat[q] = fast.soft(flat[q], t, positive)

    def __init__(self):
        soft_threshold = njit(nogil=True)(self._soft_threshold)

        def eager_l1_apply(P, index, values, eta, thr, positive, mu, has_mu, lo, hi, intercept, has_intercept):
            for q in range(index.shape[0]):
                c = index[q]
                if lo <= c < hi:
                    for j in range(P.shape[1]):
                        P[c, j] -= eta * values[q, j]
            soft_threshold(P[lo:hi], thr, positive)

        self.eager_l1_apply = njit(nogil=True)(eager_l1_apply)


def test_the_race_catches_the_two_pass_kernel():
    # the stepped row is exposed for the prox pass's time (313 million of one run's reads saw
    # 0.75 t + 1); a reader thread on the second core sees it within the test's updates
    assert _race(_TwoPass()) > 0


def test_a_scratch_smaller_than_the_block_is_refused_not_overrun():
    # (numba checks no bounds: a push="full" apply once ran on a block-sized scratch and corrupted the heap)
    P, mu = np.zeros((11, 1)), np.zeros((11, 1))
    index, values, intercept, rw = np.array([9]), np.ones((1, 1)), np.zeros(1), np.zeros(0)
    with pytest.raises(ValueError, match="scratch"):
        fast.eager_l1_apply(P, index, values, 0.1, 0.0, False, mu, False, 0, 10, intercept, False, np.zeros((5, 1)), rw, 0.0)  # fmt: skip  # noqa: E501
    fast.eager_l1_apply(P, index, values, 0.1, 0.0, False, mu, False, 0, 10, intercept, False, np.zeros((10, 1)), rw, 0.0)  # fmt: skip  # noqa: E501
    assert P[9, 0] == -0.1
