import numpy as np
import pytest
import torch

from asyncopt.eigenpro.preconditioner import choose_n_components, nystrom_preconditioner, step_size
from asyncopt.eigenpro.step import KernelProblem, apply_update, eigenpro_step
from asyncopt.kernels import KernelData, kernel_matrix, make_kernel
from asyncopt.options import ComputeOptions


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] ** 2], axis=1)
    data = KernelData.from_array(X, make_kernel("laplacian", 2.0), ComputeOptions(dtype=torch.float64))
    return KernelProblem(data, torch.as_tensor(Y))


def test_preconditioner_spectrum_and_vectors(problem):
    pre = nystrom_preconditioner(problem.data, 150, 20, 1000, np.random.default_rng(0))
    assert pre.n_components == 20 and pre.V.shape == (150, 19)
    K_S = kernel_matrix(problem.data, pre.indices, pre.indices).numpy()
    lam = np.linalg.eigvalsh(K_S / 150)[::-1]
    np.testing.assert_allclose(pre.eigenvalues[:20], lam[:20], rtol=1e-8)
    # V = U / sqrt(s) with orthonormal U
    np.testing.assert_allclose(pre.V.T @ pre.V * 150, np.eye(19), atol=1e-8)
    # D_i = (1 - (lam_q / lam_i)^0.95) / lam_i and lam1p = lam_1 (lam_q / lam_1)^0.95
    np.testing.assert_allclose(pre.D.numpy(), (1 - (lam[19] / lam[:19]) ** 0.95) / lam[:19], rtol=1e-8)
    assert pre.top_eigenvalue == pytest.approx(lam[0] * (lam[19] / lam[0]) ** 0.95)
    assert pre.beta == pytest.approx(1.0)


def test_preconditioned_operator_has_the_predicted_top_eigenvalue(problem):
    """On the subsample itself, (I - V D V^T K_S) K_S / s has top eigenvalue lam1p."""
    s = 150
    pre = nystrom_preconditioner(problem.data, s, 20, 1000, np.random.default_rng(0))
    K_S = kernel_matrix(problem.data, pre.indices, pre.indices).numpy()
    V, D = pre.V.numpy(), pre.D.numpy()
    P = np.eye(s) - V @ np.diag(D) @ V.T @ K_S
    top = np.max(np.abs(np.linalg.eigvals(P @ K_S / s)))
    assert top == pytest.approx(pre.top_eigenvalue, rel=1e-6)


def test_choose_n_components_rule():
    lam = 1.0 / np.arange(1, 2001) ** 1.0
    # lam_i^-0.95 < 100  <=>  i^0.95 < 100  <=>  i < 127.4 -> 127 values, minus one
    assert choose_n_components(lam, 100) == 126
    assert choose_n_components(lam, 2) == 5  # at least 5
    assert choose_n_components(lam, 10**9) == 500  # at most s/4


def test_step_size_rules_are_continuous_at_the_critical_batch():
    beta, lam1p = 1.0, 1e-3
    m_star = beta / lam1p + 1
    assert step_size(int(m_star) - 1, beta, lam1p, rule="eigenpro2") == pytest.approx(m_star - 1)
    assert step_size(int(m_star) + 1, beta, lam1p, rule="eigenpro2") == pytest.approx(0.99 * m_star, rel=1e-2)
    # the stability rule: 0.99 * 2m / (beta + (m-1) lam1p) at every m
    assert step_size(500, beta, lam1p) == pytest.approx(0.99 * 2 * 500 / (1 + 499e-3))
    assert step_size(int(m_star), beta, lam1p) == pytest.approx(
        step_size(int(m_star), beta, lam1p, "eigenpro2"), rel=1e-2
    )


def test_step_update_is_sparse_and_matches_the_formula(problem):
    pre = nystrom_preconditioner(problem.data, 100, 10, 1000, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    alpha = torch.as_tensor(rng.normal(size=(400, 2)) * 1e-2)
    batch = torch.as_tensor(rng.choice(400, 32, replace=False))
    upd = eigenpro_step(problem, pre, alpha, batch, eta=5.0, budget_bytes=2**24)
    K_B = kernel_matrix(problem.data, batch, torch.arange(400)).numpy()
    g = K_B @ alpha.numpy() - problem.Y[batch].numpy()
    np.testing.assert_allclose(upd.rows_delta.numpy(), -(5.0 / 32) * g, rtol=1e-10)
    K_SB = kernel_matrix(problem.data, pre.indices, batch).numpy()
    V, D = pre.V.numpy(), pre.D.numpy()
    np.testing.assert_allclose(
        upd.subsample_delta.numpy(), (5.0 / 32) * V @ np.diag(D) @ V.T @ K_SB @ g, rtol=1e-8, atol=1e-14
    )
    before = alpha.clone()
    apply_update(alpha, upd, pre.indices)
    changed = torch.nonzero((alpha != before).any(1)).squeeze(1)
    allowed = set(batch.tolist()) | set(pre.indices.tolist())
    assert set(changed.tolist()) <= allowed  # the write set is B u S


def test_iterations_interpolate_the_training_targets(problem):
    from asyncopt.training.eigenpro import EigenProSettings, run_eigenpro

    pre = nystrom_preconditioner(problem.data, 200, "auto", 64, np.random.default_rng(0))
    m = 64
    eta = step_size(m, pre.beta, pre.top_eigenvalue)
    alpha, hist, _ = run_eigenpro(
        problem, pre, EigenProSettings(m, eta, epochs=300), np.random.default_rng(0), budget_bytes=2**26
    )
    K = kernel_matrix(problem.data, torch.arange(400), torch.arange(400)).numpy()
    fit = K @ alpha.numpy()
    assert np.linalg.norm(fit - problem.Y.numpy()) / np.linalg.norm(problem.Y.numpy()) < 1e-4
    assert hist[-1].train_mse < 1e-8


def test_the_servers_rule_holds_no_data_and_adds_what_the_algorithm_adds(problem):
    """EigenProAlgorithm.for_servers (Ray's server actors): no kernel data, and the same additions
    (a whole update, or the row shards' parts) as the algorithm's own rule."""
    import pickle

    from asyncopt.eigenpro.algorithm import EigenProAlgorithm

    pre = nystrom_preconditioner(problem.data, 100, 10, 1000, np.random.default_rng(1))
    algo = EigenProAlgorithm(problem, pre, 5.0, 2**24, n_servers=2)
    rule = algo.for_servers()
    assert len(pickle.dumps(rule)) < len(pickle.dumps(algo)) / 10  # (400 x 5 data, V, D: not sent)
    rng = np.random.default_rng(3)
    alpha = torch.as_tensor(rng.normal(size=(400, 2)) * 1e-2)
    upd = eigenpro_step(problem, pre, alpha, torch.as_tensor(rng.choice(400, 32, replace=False)), 5.0, 2**24)
    whole, by_rule, by_parts = alpha.clone(), alpha.clone(), rule.init_params().to(alpha.dtype) + alpha
    algo.apply(whole, upd)
    rule.apply(by_rule, upd)
    for _, part in algo.server_parts(upd):
        rule.apply(by_parts, part)
    assert torch.equal(by_rule, whole) and torch.allclose(by_parts, whole, rtol=0, atol=1e-15)
    assert rule.init_params().shape == algo.init_params().shape and rule.additive


def test_the_object_stores_copy_carries_the_data_as_arrays_and_takes_the_same_step(problem):
    """EigenProAlgorithm.for_object_store (Ray's workers' copy): pickled (protocol 5, as Ray does),
    the kernel data, targets and preconditioner travel as out-of-band buffers, which Ray's object
    store holds once and its actors map in place (a pickled tensor is copied into each); read back,
    the copy takes the same step. Without it the same pickle carries them in-band."""
    import pickle

    from asyncopt.eigenpro.algorithm import EigenProAlgorithm

    pre = nystrom_preconditioner(problem.data, 100, 10, 1000, np.random.default_rng(1))
    algo = EigenProAlgorithm(problem, pre, 5.0, 2**24, n_servers=2)
    buffers = []
    payload = pickle.dumps(algo.for_object_store(), protocol=5, buffer_callback=buffers.append)
    data_bytes = sum(t.numel() * t.element_size() for t in (problem.data.X, problem.Y, pre.V))
    assert sum(b.raw().nbytes for b in buffers) >= data_bytes
    assert len(payload) < len(pickle.dumps(algo, protocol=5)) - data_bytes / 2
    copy = pickle.loads(payload, buffers=buffers)
    assert isinstance(copy.problem.data.X, torch.Tensor) and isinstance(copy.precond.V, torch.Tensor)
    assert isinstance(algo.problem.Y, torch.Tensor)  # (the original keeps its tensors)
    rng = np.random.default_rng(4)
    alpha = torch.as_tensor(rng.normal(size=(400, 2)) * 1e-2)
    batch = torch.as_tensor(rng.choice(400, 32, replace=False))
    ours, theirs = algo.compute(alpha, batch, 1.0), copy.compute(alpha, batch, 1.0)
    assert torch.equal(theirs.rows_delta, ours.rows_delta) and torch.equal(theirs.subsample_delta, ours.subsample_delta)


def test_the_randomized_eigensolver_matches_eigh_on_the_top_eigenpairs():
    """Above EXACT_EIGH_MAX the preconditioner takes only the top eigenpairs (randomized subspace
    iteration). On a real kernel matrix (digits, Laplacian) they agree with the exact eigh, and
    the automatic q, the correction's eigenvalues and its subspace come out the same."""
    from sklearn.datasets import load_digits

    from asyncopt.eigenpro.preconditioner import top_eigenpairs

    X = load_digits().data[:1500] / 16.0
    data = KernelData.from_array(X, make_kernel("laplacian", 10.0), ComputeOptions(dtype=torch.float64))
    every = torch.arange(len(X))
    K = kernel_matrix(data, every, every) / len(X)
    exact, vectors = torch.linalg.eigh(K)
    exact, vectors = exact.flip(0), vectors.flip(1)
    for target in (256, 4096):
        q = choose_n_components(exact.numpy(), target)
        evals, evecs = top_eigenpairs(K.clone(), target, None, np.random.default_rng(0))
        # (the rule counts eigenvalues above a threshold in a flat part of the spectrum: 1e-3 moves it by one)
        assert abs(choose_n_components(evals.numpy(), target, len(X)) - q) <= 1 and len(evals) >= q
        np.testing.assert_allclose(evals[: q - 1].numpy(), exact[: q - 1].numpy(), rtol=5e-3)
        top = min(20, q - 1)
        np.testing.assert_allclose(evals[:top].numpy(), exact[:top].numpy(), rtol=1e-8)
        # the span of the top q-1 eigenvectors (what V diag(D) V^T uses): principal angles ~ 0
        overlap = torch.linalg.svdvals(vectors[:, :top].T @ evecs[:, :top])
        assert overlap.min() > 1 - 1e-8

    evals, _ = top_eigenpairs(K.clone(), 4096, 40, np.random.default_rng(0))
    assert len(evals) == 41
