"""The EigenPro 2 Nystrom preconditioner and its automatic hyperparameters.

Ma & Belkin, "Kernel machines that adapt to GPUs for effective large batch training"
(SysML 2019), section 1.2 of docs/algorithms.md. Differences from the public code:
the eigensolve is an exact float64 one up to s = 4,000 and a randomized subspace iteration for
the top eigenpairs above (no lobpcg cap q <= s/3), the batch is not capped at s, and
K(X_S, X_B) is never evaluated separately (blocks.kernel_product gathers it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from asyncopt.kernels.blocks import KernelData, kernel_matrix

EIGEN_EXPONENT = 0.95  # the "a" of the preconditioner: D_i = (1 - (lam_q/lam_i)^a) / lam_i
# Nystrom eigenvectors beyond a fraction of s are dominated by sampling noise.
MAX_COMPONENT_FRACTION = 0.25
# Large enough for a kernel chunk to run matmul at full speed, small enough that the
# automatic q stays where the Nystrom estimate is accurate (see benchmarks/README.md).
DEFAULT_TARGET_BATCH = 4096


def auto_subsample_size(n: int) -> int:
    """EigenPro 2's default: min(n, 2000) below 100,000 points, else 12,000."""
    return min(n, 2000) if n < 100_000 else 12_000


@dataclasses.dataclass(frozen=True)
class Preconditioner:
    """Read-only state every worker shares: the subsample S and the correction V diag(D) V^T."""

    indices: torch.Tensor  # (s,) sorted indices of the Nystrom subsample S
    V: torch.Tensor  # (s, q-1) eigenvectors of K_S / s, divided by sqrt(s)
    D: torch.Tensor  # (q-1,)
    eigenvalues: np.ndarray  # top eigenvalues of K_S / s, float64, descending
    beta: float  # max_i k(x_i, x_i) over S
    n_components: int  # q
    top_eigenvalue: float  # lam1p, top eigenvalue of the preconditioned operator

    @property
    def critical_batch_size(self) -> float:
        """m* = beta / lam1p + 1: the largest batch with linear scaling of the step."""
        return self.beta / self.top_eigenvalue + 1.0

    def correction(self, K_BS: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Rows of S to add, (eta/m) times this: V diag(D) V^T K(X_S, X_B) g."""
        if self.V.shape[1] == 0:
            return torch.zeros(len(self.indices), g.shape[1], dtype=g.dtype, device=g.device)
        return self.V @ (self.D.unsqueeze(1) * (self.V.T @ (K_BS.T @ g)))


def step_size(batch_size: int, beta: float, top_eigenvalue: float, rule: str = "stability") -> float:
    """Step size eta for batch size m.

    ``"stability"`` (asyncopt's default): ``0.99 * 2m / (beta + (m-1) lam1p)`` at every m, the
    bound EigenPro 2 uses above the critical batch m*, applied below it too. Below m* it gives a
    per-sample step between 1/beta and 2/beta, where EigenPro 2's linear-scaling rule gives 1/beta.
    ``"eigenpro2"``: ``m / beta`` below m*, the same bound above it (the public implementation).
    """
    m = float(batch_size)
    if rule == "eigenpro2" and m < beta / top_eigenvalue + 1.0:
        return m / beta
    if rule not in ("stability", "eigenpro2"):
        raise ValueError(f"unknown step rule {rule!r}; use 'stability' or 'eigenpro2'")
    return 0.99 * 2.0 * m / (beta + (m - 1.0) * top_eigenvalue)


def choose_n_components(eigenvalues: np.ndarray, max_batch: int, s: int | None = None) -> int:
    """EigenPro 2's rule: the count of lam_i with lam_i^-a < max_batch, minus one, at least 5.

    That makes the critical batch m* of the preconditioned operator about `max_batch`. `s`: the
    subsample's size, when `eigenvalues` are only the top ones of its kernel matrix.
    """
    s = len(eigenvalues) if s is None else s
    positive = eigenvalues[eigenvalues > 0]
    q = int(np.sum(np.power(positive, -EIGEN_EXPONENT) < max_batch)) - 1
    q_cap = max(2, int(MAX_COMPONENT_FRACTION * s))
    return int(min(max(q, 5), q_cap, s))


EXACT_EIGH_MAX = 4000  # subsamples up to this size get the exact eigh; larger ones the top eigenpairs
POWER_ITERATIONS = 4  # subspace iterations of the randomized eigensolver (Halko et al. 2011, alg. 4.4)
OVERSAMPLE = 32  # extra columns of the sketch: the top k eigenpairs come from k + 32 columns


def top_eigenpairs(K: torch.Tensor, target_batch: int, wanted: int | None, rng: np.random.Generator):
    """The leading eigenpairs of the symmetric PSD `K` (float64), descending, by randomized subspace
    iteration: as many as the choice of q needs. With `wanted` None (automatic q), the count of
    eigenvalues the rule keeps must end inside the computed ones; the sketch doubles until it does.
    Costs O(s^2 k) against eigh's O(s^3) (s = 12,000: seconds instead of about a minute)."""
    s = K.shape[0]
    cap = max(2, int(MAX_COMPONENT_FRACTION * s))  # (choose_n_components never keeps more)
    k = min(cap + 1, 256 if wanted is None else 2 * (wanted + 1))
    gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))
    while True:
        width = min(s, k + OVERSAMPLE)
        Q = torch.randn(s, width, dtype=K.dtype, generator=gen).to(K.device)
        for _ in range(POWER_ITERATIONS):
            Q, _ = torch.linalg.qr(K @ Q)
        B = Q.T @ K @ Q
        evals, W = torch.linalg.eigh((B + B.T) / 2)
        evals, W = evals.flip(0)[:k], W.flip(1)[:, :k]
        if wanted is not None:
            keep = wanted + 1
            break
        q = choose_n_components(evals.cpu().numpy(), target_batch, s)
        # settled when the rule's count ends in the sketch's first half, where its eigenvalues are
        # accurate (those near the sketch's width come out low on a slowly decaying spectrum)
        if 2 * (q + 1) <= k or k >= cap + 1:
            keep = q + 1
            break
        k = min(cap + 1, 2 * k)
    keep = min(k, max(keep, 10))
    return evals[:keep], (Q @ W)[:, :keep]


def column_major(V: torch.Tensor) -> torch.Tensor:
    """V in Fortran order, as eigh returns its vectors: the layout the step's products were tuned
    with, and one a checkpoint (stored row-major) is restored to, so a resumed run rounds alike."""
    return V.t().contiguous().t()


def nystrom_preconditioner(
    data: KernelData,
    subsample_size: int,
    n_components: int | str,
    target_batch: int,
    rng: np.random.Generator,
) -> Preconditioner:
    """Draw S, eigendecompose K_S / s in float64 and build the EigenPro correction."""
    n = data.n
    s = int(min(subsample_size, n))
    indices = np.sort(rng.choice(n, size=s, replace=False))
    idx = torch.as_tensor(indices, device=data.X.device)
    K_S = kernel_matrix(data, idx, idx).to(torch.float64)
    beta = float(K_S.diagonal().max())
    K_S /= s
    wanted = None if n_components == "auto" else int(min(n_components, s))
    # float64: float32 eigensolvers fail on near-singular kernel matrices
    if s <= EXACT_EIGH_MAX:
        evals, evecs = torch.linalg.eigh(K_S)
        evals, evecs = evals.flip(0), evecs.flip(1)
    else:  # the top eigenpairs only: enough for q (doubled until the rule's count fits inside them)
        evals, evecs = top_eigenpairs(K_S, target_batch, wanted, rng)
    del K_S
    eigenvalues = evals.cpu().numpy()
    if n_components == "auto":
        q = choose_n_components(eigenvalues, target_batch, s)
    else:
        q = wanted
    q = max(q, 1)
    lam = eigenvalues[:q].clip(min=np.finfo(np.float64).tiny)
    lam_q = lam[q - 1]
    D = (1.0 - np.power(lam_q / lam[: q - 1], EIGEN_EXPONENT)) / lam[: q - 1]
    top = float(lam[0] * (lam_q / lam[0]) ** EIGEN_EXPONENT) if q > 1 else float(lam[0])
    if not top > 0:
        top = beta  # degenerate subsample (all points equal): plain SGD bound
    V = evecs[:, : q - 1] / np.sqrt(s)
    return Preconditioner(
        indices=idx,
        V=column_major(V.to(data.options.dtype)),
        D=torch.as_tensor(D, dtype=data.options.dtype, device=data.X.device),
        eigenvalues=eigenvalues[: max(q, min(s, 10))].copy(),
        beta=beta,
        n_components=q,
        top_eigenvalue=top,
    )
