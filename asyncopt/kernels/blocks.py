"""Kernel products K(A, X) @ W evaluated in column chunks under a memory budget.

Memory model: a product with m query rows allocates one (m x w) kernel chunk at a time
(two for the Matern 3/2 and 5/2 profiles, which need a temporary), the (m x c) output and,
when asked, the (m x |S|) block of gathered columns. The chunk width w is the largest that
fits the budget left after the persistent buffers, capped near the CPU cache sweet spot;
`K(X_B, X)` for n in the millions therefore never exists at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from asyncopt.kernels.functions import Kernel, roundoff_floor
from asyncopt.options import ComputeOptions

MIN_CHUNK_COLUMNS = 128
# Chunks of about 2**18 elements (1 MiB in float32, cache resident): one EigenPro step on MNIST
# (m = 2,800) ran at 130-150 GFLOP/s with them against about 87 with 2**24-element chunks,
# because the elementwise passes (sqrt, exp) then stay in cache.
PREFERRED_CHUNK_ELEMENTS = 2**18


def to_device(X, options: ComputeOptions) -> torch.Tensor:
    """An array or tensor as a tensor in the options' device and dtype (read-only arrays are copied)."""
    if isinstance(X, np.ndarray) and not X.flags.writeable:
        X = np.array(X)
    return torch.as_tensor(X).to(device=options.device, dtype=options.dtype)


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold a required buffer."""


def temporaries_per_element(kernel: Kernel) -> int:
    return 2 if kernel.name in ("matern32", "matern52") or not kernel.is_radial else 1


@dataclasses.dataclass
class KernelData:
    """Training points prepared for repeated kernel products.

    For radial kernels, features that are constant over the training set are dropped:
    they add nothing to distances between training points, and for a query point their
    contribution ``sum_j (q_j - c_j)^2`` is one number per query row (``query_extra``).
    Training then does fewer flops with an exactly equal result.
    """

    kernel: Kernel
    X: torch.Tensor  # (n, d_kept) on the compute device
    sqnorm: torch.Tensor  # (n,)
    kept_columns: torch.Tensor | None  # indices of kept features, None when all are kept
    dropped_values: torch.Tensor | None  # value of each dropped constant feature
    options: ComputeOptions

    @classmethod
    def from_array(cls, X, kernel: Kernel, options: ComputeOptions, drop_constant=True):
        X = to_device(X, options)
        kept = dropped_values = None
        if kernel.is_radial and drop_constant and X.shape[0] > 1:
            constant = (X == X[0]).all(dim=0)
            if constant.any() and not constant.all():
                kept = torch.nonzero(~constant).squeeze(1)
                dropped_values = X[0, constant].clone()
                X = X[:, kept].contiguous()
        X = X.contiguous()
        sqnorm = X.pow(2).sum(1) if kernel.is_radial else None
        return cls(kernel, X, sqnorm, kept, dropped_values, options)

    @property
    def max_sqnorm(self) -> float:
        if self.sqnorm is None or self.sqnorm.numel() == 0:
            return 0.0
        if getattr(self, "_max_sqnorm", None) is None:
            self._max_sqnorm = float(self.sqnorm.max())
        return self._max_sqnorm

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def prepare_queries(self, Q):
        """Queries in the training feature layout, with their squared norms and extra term."""
        Q = to_device(Q, self.options)
        if self.kept_columns is None:
            return Q, (Q.pow(2).sum(1) if self.kernel.is_radial else None), None
        mask = torch.ones(Q.shape[1], dtype=torch.bool, device=Q.device)
        mask[self.kept_columns] = False
        extra = (Q[:, mask] - self.dropped_values).pow(2).sum(1)
        Qk = Q[:, self.kept_columns].contiguous()
        return Qk, Qk.pow(2).sum(1), extra

    def persistent_bytes(self) -> int:
        return self.X.numel() * self.X.element_size() + 4 * self.n * self.X.element_size()


def chunk_columns(data: KernelData, rows: int, budget_bytes: int, buffer: str) -> int:
    """Widest kernel chunk for `rows` query rows that fits in `budget_bytes`."""
    itemsize = data.options.itemsize
    per_column = rows * itemsize * temporaries_per_element(data.kernel)
    width = budget_bytes // max(per_column, 1)
    if width < min(MIN_CHUNK_COLUMNS, data.n):
        need = min(MIN_CHUNK_COLUMNS, data.n) * per_column
        raise MemoryBudgetError(
            f"memory budget too small: a kernel chunk for {buffer} ({rows} rows x "
            f"{min(MIN_CHUNK_COLUMNS, data.n)} columns, {need / 2**20:.1f} MiB on "
            f"{data.options.device}) does not fit in the {budget_bytes / 2**20:.1f} MiB left of "
            f"memory_gb={data.options.memory_bytes / 2**30:.3g}; raise memory_gb or lower batch_size"
        )
    preferred = max(MIN_CHUNK_COLUMNS, PREFERRED_CHUNK_ELEMENTS // max(rows, 1))
    if data.options.max_chunk_columns:
        preferred = min(preferred, data.options.max_chunk_columns)
    return int(min(width, preferred, data.n))


def kernel_product(
    data: KernelData,
    W: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    queries=None,
    gather: torch.Tensor | None = None,
    budget_bytes: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Compute K(A, X) @ W chunk by chunk over the columns of X.

    A is either training rows (``rows``, indices into X) or new ``queries``.
    ``gather`` (sorted indices into X) additionally returns the block K(A, X[gather]),
    collected from the chunks as they pass rather than evaluated again.
    """
    if rows is not None:
        A, a_sq, a_extra = data.X[rows], (data.sqnorm[rows] if data.sqnorm is not None else None), None
    else:
        A, a_sq, a_extra = data.prepare_queries(queries)
    m = A.shape[0]
    c = W.shape[1]
    gathered_bytes = 0 if gather is None else m * len(gather) * data.options.itemsize
    width = chunk_columns(
        data,
        m,
        budget_bytes - gathered_bytes - m * c * data.options.itemsize,
        "K(X_B, X)" if rows is not None else "K(X_query, X)",
    )
    # MKL runs (m x w) @ (w x c) up to 4x faster when c is a multiple of 16 than for c = 10,
    # so the weights are read once into a zero-padded copy (this copy is also the step's snapshot).
    c_pad = -(-c // 16) * 16
    if c_pad != c:
        padded = torch.zeros(W.shape[0], c_pad, dtype=W.dtype, device=W.device)
        padded[:, :c] = W
        W = padded
    out = torch.zeros(m, c_pad, dtype=W.dtype, device=W.device)
    K_gather = None
    if gather is not None:
        K_gather = torch.empty(m, len(gather), dtype=data.options.dtype, device=data.options.device)
    floor = roundoff_floor(data.max_sqnorm, data.options.dtype)
    # one chunk buffer for the whole product: a fresh 1 MiB block per chunk costs page faults
    chunk = torch.empty(m * min(width, data.n), dtype=data.options.dtype, device=data.options.device)
    for start in range(0, data.n, width):
        stop = min(start + width, data.n)
        sq = data.sqnorm[start:stop] if data.sqnorm is not None else None
        buffer = chunk[: m * (stop - start)].view(m, stop - start)
        Kc = data.kernel.block(A, data.X[start:stop], a_sq, sq, a_extra, floor, out=buffer)
        out.addmm_(Kc, W[start:stop])
        if gather is not None:
            lo, hi = torch.searchsorted(gather, torch.tensor([start, stop], device=gather.device)).tolist()
            if hi > lo:
                K_gather[:, lo:hi] = Kc[:, gather[lo:hi] - start]
        del Kc  # (Matern profiles allocate their values: free them before the next chunk)
    return out[:, :c], K_gather


def kernel_matrix(data: KernelData, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The dense block K(X[rows], X[cols]) (for small blocks: the Nystrom subsample, tests)."""
    sq = data.sqnorm
    if sq is None:
        return data.kernel.block(data.X[rows], data.X[cols])
    return data.kernel.block(
        data.X[rows],
        data.X[cols],
        sq[rows],
        sq[cols],
        zero_below=roundoff_floor(data.max_sqnorm, data.options.dtype),
    )
