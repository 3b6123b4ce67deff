"""The drained passes' own threads (data.pass_threads): inside the block torch runs on one thread and
the CPU products X @ W and X^T @ D are torch's products of parts of the rows, on the caller's and
helper threads, as many as torch's thread count was on entry. They must equal scipy's products."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import asyncopt.proxsgd.data as data_module
from asyncopt import ProxSGDClassifier
from asyncopt.proxsgd.data import LinearData, pass_threads


def _sparse(n=700, d=300, seed=0):
    X = sp.random(n, d, density=0.04, random_state=seed, format="csr")
    X.data += 0.5
    rows, columns = np.ones(n), np.ones(d)
    rows[5] = columns[7] = 0  # an empty row and an empty column
    X = (sp.diags(rows) @ X @ sp.diags(columns)).tocsr()
    X.eliminate_zeros()
    return X


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("prefetch", [False, True])
def test_the_products_inside_pass_threads_equal_scipys(threads_restored, monkeypatch, threads, k, ordered, prefetch):
    """Also with the gathers prefetched (for W of PREFETCH_MIN_BYTES and more: here every W)."""
    if prefetch:
        monkeypatch.setattr(data_module, "PREFETCH_MIN_BYTES", 0)
    X = _sparse()
    order = np.random.default_rng(1).permutation(X.shape[1]) if ordered else None
    Xo = X if order is None else X[:, order]
    data = LinearData.from_array(X, np.ones((X.shape[0], 1)), column_order=order)
    data._transposed()
    rng = np.random.default_rng(k)
    W = torch.as_tensor(rng.normal(size=(X.shape[1], k)))
    D = torch.as_tensor(rng.normal(size=(X.shape[0], k)))
    torch.set_num_threads(threads)
    with pass_threads():
        assert torch.get_num_threads() == 1  # torch's OpenMP threads stay idle
        assert data_module._PASS_THREADS.get() == threads
        margins, back = data.margins(W), data.transpose_product(D)
    assert torch.get_num_threads() == threads and data_module._PASS_THREADS.get() is None
    np.testing.assert_allclose(margins.numpy(), Xo @ W.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(back.numpy(), Xo.T @ D.numpy(), rtol=1e-12, atol=1e-13)
    assert margins.shape == (X.shape[0], k) and back.shape == (X.shape[1], k)


def test_more_threads_than_rows_and_an_exception_inside_restore_the_state(threads_restored):
    X = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    data = LinearData.from_array(X, np.ones((2, 1)))
    torch.set_num_threads(2)
    W = torch.ones(3, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="inside"):
        with pass_threads():
            data_module._PASS_THREADS.set(8)  # (more threads than the 2 rows)
            np.testing.assert_array_equal(data.margins(W).numpy()[:, 0], [3.0, 3.0])
            raise ValueError("inside")
    assert torch.get_num_threads() == 2 and data_module._PASS_THREADS.get() is None


def test_a_fits_drained_passes_run_inside_pass_threads(monkeypatch, threads_restored):
    """The anchor's passes and the evaluations of a fit take the split products, and give the model of
    a fit whose passes are torch's own, up to rounding."""
    X = _sparse(n=600, d=200, seed=3)
    y = (np.asarray(X.sum(1)).ravel() > np.median(np.asarray(X.sum(1)).ravel())).astype(int)
    calls = []
    original = data_module._rows_product

    def counted(*args):
        calls.append(args[-1])
        return original(*args)

    monkeypatch.setattr(data_module, "_rows_product", counted)
    params = dict(penalty="l1", alpha=1e-3, backend="serial", random_state=0, max_epochs=3, tol=None)
    torch.set_num_threads(1)
    compiled = ProxSGDClassifier(**params).fit(X, y)
    assert calls, "no drained product went through the split products"
    import asyncopt.training.proxsgd as training

    monkeypatch.setattr(training, "pass_threads", __import__("contextlib").nullcontext)
    calls.clear()
    reference = ProxSGDClassifier(**params).fit(X, y)
    assert not calls
    np.testing.assert_allclose(compiled.coef_, reference.coef_, rtol=1e-9, atol=1e-12)
    assert [e["objective"] for e in compiled.history_] == pytest.approx(
        [e["objective"] for e in reference.history_], rel=1e-10
    )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_x_transposed_from_the_rows_with_the_scatters_prefetched_equals_scipys(monkeypatch, threads_restored, k):
    """Without X^T (above TRANSPOSE_MAX_ENTRIES) X^T D is a scatter from X's rows; with an output of
    PREFETCH_MIN_BYTES or more (here every output) its rows are prefetched: the same product."""
    X = _sparse(seed=4)
    monkeypatch.setattr(data_module, "TRANSPOSE_MAX_ENTRIES", X.nnz - 1)
    monkeypatch.setattr(data_module, "PREFETCH_MIN_BYTES", 0)
    data = LinearData.from_array(X, np.ones((X.shape[0], 1)))
    D = torch.as_tensor(np.random.default_rng(k).normal(size=(X.shape[0], k)))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with pass_threads():
            back = data.transpose_product(D)
        np.testing.assert_allclose(back.numpy(), X.T @ D.numpy(), rtol=1e-12, atol=1e-13)
    assert data.t_indptr is None
