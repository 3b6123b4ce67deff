"""The engines hold the BLAS that compiled kernels call (numba's np.dot: scipy's OpenBLAS) to each
worker's threads while worker threads run, and give the limit back after the fit."""

import numpy as np
import pytest
import threadpoolctl

from asyncopt import ProxSGDClassifier


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_worker_threads_hold_blas_to_their_threads_during_the_fit_and_restore_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 64))  # dense rows of 64 columns: the compiled loop's BLAS products
    y = (X[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(int)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # (as on a 2-core machine)
        before = _blas_threads()
        seen = []

        def callback(entry):
            seen.append(_blas_threads())

        ProxSGDClassifier(
            backend="threads", n_workers=2, threads_per_worker=1, max_epochs=3, callback=callback, random_state=0
        ).fit(X, y)
        after = _blas_threads()
    assert before and all(n == 2 for n in before)
    assert seen and all(all(n == 1 for n in threads) for threads in seen)
    assert after == before
