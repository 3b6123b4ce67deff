"""The composite problem F(x) = (1/n) sum_i loss(y_i, a_i.w + b) + r(w) + h(w) and its measures.

Parameters are one (d + 1, k) tensor: rows 0..d-1 the coefficients (split into M contiguous
blocks, each owned by one parameter server), row d the intercept (unpenalized; zero and never
touched without fit_intercept). Everything here is pure: it reads parameters and returns numbers
or tensors.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from asyncopt.proxsgd.data import LinearData, MiniBatch
from asyncopt.proxsgd.losses import Loss, NonconvexRegularizer
from asyncopt.proxsgd.prox import Penalty


def block_bounds(d: int, n_blocks: int, group_of_row: np.ndarray | None = None) -> np.ndarray:
    """Split rows 0..d into n_blocks contiguous ranges of near-equal size that never cut a group."""
    n_blocks = max(1, min(n_blocks, d))
    cuts = np.linspace(0, d, n_blocks + 1).round().astype(np.int64)
    if group_of_row is not None and d > 0:
        starts = np.flatnonzero(np.r_[True, group_of_row[1:] != group_of_row[:-1]])  # first row of each group
        starts = np.r_[starts, d]
        cuts = np.unique(starts[np.searchsorted(starts, cuts)])  # move each cut to the next group start
        cuts = np.unique(np.r_[0, cuts, d])
    return cuts


@dataclasses.dataclass
class LinearProblem:
    data: LinearData
    loss: Loss
    penalty: Penalty
    regularizer: NonconvexRegularizer
    fit_intercept: bool
    bounds: np.ndarray  # block boundaries over rows 0..d (len M + 1)

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1

    @property
    def k(self) -> int:
        return self.data.Y.shape[1]

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.data.d + 1, self.k, dtype=self.data.dtype, device=self.data.device)

    # -- minibatch pieces (workers) --------------------------------------------------------
    def batch_loss_derivative(self, batch: MiniBatch, params: torch.Tensor) -> tuple[torch.Tensor, float]:
        """d loss / d margin on the batch (N x k), and the sum of its margins (finite unless diverged)."""
        d = self.data.d
        z = self.data.batch_margins(batch, params[:d]) + params[d]
        y = self.data.Y[batch.rows]
        return self.loss.derivative(z, y), float(z.sum())

    # -- full-data measures (evaluation points) --------------------------------------------
    def snapshot(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SVRG's anchor at params: every sample's d loss / d margin (n x k), the loss term's mean
        gradient (d + 1 x k; the nonconvex regularizer is left out: workers evaluate it exactly), and
        the margins (n x k), which the local step reuses."""
        d, n = self.data.d, self.data.n
        z = self.data.margins(params[:d]) + params[d]
        D = self.loss.derivative(z, self.data.Y)
        grad = torch.zeros_like(params)
        grad[:d] = self.data.transpose_product(D) / n
        if self.fit_intercept:
            grad[d] = D.sum(0) / n
        return D, grad, z

    def smooth_value_and_gradient(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        d, n = self.data.d, self.data.n
        z = self.data.margins(params[:d]) + params[d]
        y = self.data.Y
        value = float(self.loss.value(z, y).sum()) / n
        D = self.loss.derivative(z, y) / n
        grad = torch.zeros_like(params)
        grad[:d] = self.data.transpose_product(D)
        if self.fit_intercept:
            grad[d] = D.sum(0)
        if self.regularizer.strength:
            value += self.regularizer.value(params[:d])
            grad[:d] += self.regularizer.gradient(params[:d])
        return value, grad

    def objective(self, params: torch.Tensor) -> float:
        value, _ = self.smooth_value_and_gradient(params)
        return value + self.penalty.value(params[: self.data.d])

    def prox_all(self, v: torch.Tensor, eta: float) -> None:
        """prox of eta * h on every block of the coefficient rows of v, in place."""
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            self.penalty.prox(v[lo:hi], eta, int(lo), int(hi))

    def measures(self, params: torch.Tensor, eta: float) -> dict:
        """F(x), ||G(x)||^2 with G the gradient mapping (x - prox_{eta h}(x - eta grad f(x))) / eta, non-zeros."""
        value, grad = self.smooth_value_and_gradient(params)
        d = self.data.d
        stepped = params - eta * grad
        self.prox_all(stepped, eta)
        if not self.fit_intercept:
            stepped[d] = 0.0
        mapping = (params - stepped) / eta
        return {
            "objective": value + self.penalty.value(params[:d]),
            "grad_mapping_sq": float((mapping * mapping).sum()),
            "nnz": int(torch.count_nonzero(params[:d])),
        }
