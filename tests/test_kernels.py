import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.gaussian_process.kernels import Matern

from asyncopt.kernels import KernelData, MemoryBudgetError, kernel_matrix, kernel_product, make_kernel
from asyncopt.options import ComputeOptions

OPTS64 = ComputeOptions(dtype=torch.float64)


def reference(name, A, B, h):
    d = cdist(A, B)
    if name in ("gaussian", "rbf"):
        return np.exp(-(d**2) / (2 * h * h))
    if name in ("laplacian", "matern12"):
        return np.exp(-d / h)
    nu = {"matern32": 1.5, "matern52": 2.5}[name]
    return Matern(length_scale=h, nu=nu)(A, B)


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    return rng.normal(size=(57, 5)), rng.normal(size=(31, 5))


@pytest.mark.parametrize("name", ["gaussian", "rbf", "laplacian", "matern12", "matern32", "matern52"])
@pytest.mark.parametrize("h", [0.5, 3.0])
def test_radial_kernels_match_reference(points, name, h):
    A, B = points
    k = make_kernel(name, h)
    got = k.block(torch.as_tensor(A), torch.as_tensor(B)).numpy()
    np.testing.assert_allclose(got, reference(name, A, B, h), rtol=1e-10, atol=1e-12)


def test_float32_kernel_is_close_to_float64(points):
    A, B = points
    k = make_kernel("laplacian", 2.0)
    got = k.block(torch.as_tensor(A, dtype=torch.float32), torch.as_tensor(B, dtype=torch.float32))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), reference("laplacian", A, B, 2.0), atol=2e-5)


def test_user_callable_kernel_and_bad_shape(points):
    A, B = points

    def poly(a, b, h):
        return (1 + a @ b.T / h) ** 2

    data = KernelData.from_array(A, make_kernel(poly, 2.0), OPTS64)
    W = torch.ones(len(A), 1, dtype=torch.float64)
    out, _ = kernel_product(data, W, queries=B, budget_bytes=2**20)
    np.testing.assert_allclose(out.numpy()[:, 0], ((1 + B @ A.T / 2.0) ** 2).sum(1))

    bad = KernelData.from_array(A, make_kernel(lambda a, b, h: a @ a.T, 1.0), OPTS64)
    with pytest.raises(ValueError, match="returned shape"):
        kernel_product(bad, W, queries=B, budget_bytes=2**20)


@pytest.mark.parametrize("bandwidth", [0, -1.0, float("nan"), float("inf"), "wide"])
def test_bad_bandwidth(bandwidth):
    with pytest.raises(ValueError, match="bandwidth"):
        make_kernel("gaussian", bandwidth)


def test_unknown_kernel_name():
    with pytest.raises(ValueError, match="unknown kernel 'cosine'.*laplacian"):
        make_kernel("cosine", 1.0)


@pytest.mark.parametrize("max_cols", [None, 128, 200])
def test_chunked_product_equals_dense_and_gathers_columns(max_cols):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(700, 6))
    W = torch.as_tensor(rng.normal(size=(700, 3)))
    options = ComputeOptions(dtype=torch.float64, max_chunk_columns=max_cols)
    data = KernelData.from_array(X, make_kernel("laplacian", 2.0), options)
    rows = torch.as_tensor(rng.choice(700, 50, replace=False))
    gather = torch.as_tensor(np.sort(rng.choice(700, 90, replace=False)))
    out, K_g = kernel_product(data, W, rows=rows, gather=gather, budget_bytes=2**30)
    K = reference("laplacian", X[rows.numpy()], X, 2.0)
    np.testing.assert_allclose(out.numpy(), K @ W.numpy(), rtol=1e-10)
    np.testing.assert_allclose(K_g.numpy(), K[:, gather.numpy()], rtol=1e-10)
    np.testing.assert_allclose(kernel_matrix(data, rows, gather).numpy(), K[:, gather.numpy()], rtol=1e-10)


def test_constant_features_are_dropped_without_changing_results():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 8))
    X[:, [1, 5]] = [0.0, 3.0]  # constant over the training set
    Q = rng.normal(size=(40, 8))  # queries are not constant there
    data = KernelData.from_array(X, make_kernel("gaussian", 2.5), OPTS64)
    assert data.X.shape[1] == 6
    W = torch.as_tensor(rng.normal(size=(300, 2)))
    out, _ = kernel_product(data, W, queries=Q, budget_bytes=2**30)
    np.testing.assert_allclose(out.numpy(), reference("gaussian", Q, X, 2.5) @ W.numpy(), rtol=1e-10)


def test_budget_too_small_for_one_chunk_names_the_buffer():
    X = np.random.default_rng(3).normal(size=(1000, 4))
    data = KernelData.from_array(X, make_kernel("laplacian", 1.0), ComputeOptions())
    W = torch.zeros(1000, 1)
    with pytest.raises(MemoryBudgetError, match=r"K\(X_B, X\).*MiB.*memory_gb"):
        kernel_product(data, W, rows=torch.arange(1000), budget_bytes=10_000)


def test_chunk_width_honours_budget():
    from asyncopt.kernels.blocks import chunk_columns

    X = np.zeros((10_000, 3))
    X[:, 0] = np.arange(10_000)
    data = KernelData.from_array(X, make_kernel("laplacian", 1.0), ComputeOptions())
    for budget in [2**20, 2**22, 2**26]:
        width = chunk_columns(data, 500, budget, "test")
        assert width * 500 * 4 <= budget
        assert width >= 128
