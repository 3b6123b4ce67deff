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

from asyncopt.proxsgd.data import LinearData, MiniBatch, one_torch_thread
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


def feature_order(counts: np.ndarray, n_blocks: int, group_of_row: np.ndarray | None = None) -> np.ndarray:
    """The order the run keeps the features in (order[j]: the user's column at position j): most stored
    entries first, dealt over the blocks in turn, so that the coefficients every minibatch reads and
    writes (the popular features) share cache lines and each block gets its share of them.
    Chosen by the estimator where updates are lazy (ProxSGD._frequency_order; benchmarks/feature_order.py).
    With groups (group_l1), groups stay contiguous, each group's features by count."""
    d = counts.shape[0]
    ranked = np.lexsort((-counts, group_of_row)) if group_of_row is not None else np.argsort(-counts, kind="stable")
    if group_of_row is not None or n_blocks <= 1 or d == 0:
        return ranked
    cuts = block_bounds(d, n_blocks)
    sizes = np.diff(cuts)
    block = np.repeat(np.arange(sizes.size), sizes)
    # slot j of block b has the quantile (j + 1/2) / size_b: ranks fill the slots in quantile order,
    # a round-robin deal that also fits blocks of unequal sizes
    quantile = (np.arange(d) - cuts[block] + 0.5) / sizes[block]
    slots = np.argsort(quantile, kind="stable")
    order = np.empty(d, dtype=np.int64)
    order[slots] = ranked
    return order


@dataclasses.dataclass
class FullPass:
    """What `LinearProblem.full_pass` measured at `params`."""

    params: torch.Tensor  # a copy of the parameters it was taken at
    margins: torch.Tensor  # z = X w + b (n x k)
    derivative: torch.Tensor  # d loss / d margin per sample (n x k)
    loss_value: float  # the loss term's mean (no regularizer, no penalty)
    loss_gradient: torch.Tensor  # the loss term's mean gradient (d + 1 x k)
    curvature: torch.Tensor | None  # with a probe: each sample's d^2 loss / dz^2 (n,)
    probe_product: torch.Tensor | None  # with a probe v: A^T diag(curvature) A v / n (d + 1 x 1)

    def at(self, params: torch.Tensor) -> bool:
        return self.params.shape == params.shape and torch.equal(self.params, params)


@dataclasses.dataclass
class LinearProblem:
    data: LinearData
    loss: Loss
    penalty: Penalty
    regularizer: NonconvexRegularizer
    fit_intercept: bool
    bounds: np.ndarray  # block boundaries over rows 0..d (len M + 1)
    # the intercept a run starts from (k,): the loss's best constant (`start_intercept`), so that a
    # target far from 0 (house prices) is not left to the step, which is set by X's scale; None: 0
    initial_intercept: torch.Tensor | None = None

    def start_intercept(self) -> LinearProblem:
        """This problem starting from the loss's best constant intercept (with fit_intercept)."""
        if not self.fit_intercept or self.data.n == 0:
            return self
        best = self.loss.best_constant(self.data.Y, self.data.weights)
        return self if best is None else dataclasses.replace(self, initial_intercept=best.to(self.data.device))

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1

    @property
    def k(self) -> int:
        return self.data.Y.shape[1]

    def init_params(self) -> torch.Tensor:
        params = torch.zeros(self.data.d + 1, self.k, dtype=self.data.dtype, device=self.data.device)
        if self.fit_intercept and self.initial_intercept is not None:
            params[self.data.d] = self.initial_intercept.to(params.dtype)
        return params

    # -- minibatch pieces (workers) --------------------------------------------------------
    def batch_loss_derivative(self, batch: MiniBatch, params: torch.Tensor) -> tuple[torch.Tensor, float]:
        """d loss / d margin on the batch (N x k), and the sum of its margins (finite unless diverged)."""
        d = self.data.d
        z = self.data.batch_margins(batch, params[:d]) + params[d]
        y = self.data.Y[batch.rows]
        return self.loss.derivative(z, y), float(z.sum())

    def batch_weighted(self, D: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A batch's per-sample derivatives D (N x k) times the draws' weights (LinearData.draw_weighted;
        D itself when every weight is 1)."""
        w = self.data.batch_weights
        return D if w is None else D * w[rows.to(w.device)].to(D.dtype).unsqueeze(1)

    # -- full-data measures (evaluation points) --------------------------------------------
    def curvature(self, z: torch.Tensor) -> torch.Tensor | None:
        """Each sample's d^2 loss / dz^2 at margins z (n,), the largest over the columns (they share a
        step), times its weight (its curvature in F); None where the loss only knows its bound."""
        c = self.loss.second_derivative(z, self.data.Y)
        if c is None:
            return None
        return self.data.weighted(c.abs().amax(1) if c.dim() == 2 else c.abs())

    def full_pass(self, params: torch.Tensor, probe: torch.Tensor | None = None) -> FullPass:
        """One product with X and one with X^T at params: the SVRG anchor (per-sample D~ and the mean
        gradient), F's loss term and its gradient for an evaluation point, and, with a `probe` v
        (d + 1 x 1, unit norm), one power-iteration product A^T diag(c) A v / n at the curvature c
        there. The probe rides as a second column of the same two sparse products, which cost what
        one column costs (they are bound by reading X's indices): on news20, 2 passes an evaluation
        point instead of 6."""
        d = self.data.d
        # (zero coefficients, the first anchor: no X product, and X^T's serial product, without waiting
        # for the transposition: workers start meanwhile)
        start = probe is None and not bool(params[:d].any())
        if start:
            with one_torch_thread():
                return self._full_pass(params, probe, start)
        return self._full_pass(params, probe, start)

    def _full_pass(self, params: torch.Tensor, probe: torch.Tensor | None, start: bool) -> FullPass:
        d, n, k = self.data.d, self.data.n, self.k
        columns = params[:d] if probe is None else torch.cat([params[:d], probe[:d]], 1)
        products = torch.zeros(n, k, dtype=params.dtype, device=params.device) if start else self.data.margins(columns)
        z = products[:, :k] + params[d]
        D = self.loss.derivative(z, self.data.Y)  # (unweighted: the SVRG anchor's D~, weighted where used)
        value = float(self.data.weighted(self.loss.value(z, self.data.Y)).sum()) / n if n else 0.0
        c = self.curvature(z) if probe is not None else None
        # the 1 / n applied to the n rows going in, not to the d rows coming out (d >> n on news20)
        weighted = self.data.weighted(D)
        columns = weighted if c is None else torch.cat([weighted, (products[:, k:] + probe[d]) * c.unsqueeze(1)], 1)
        columns = columns / max(n, 1)
        back = self.data.transpose_product(columns, serial=start)
        grad = torch.empty_like(params)
        grad[:d] = back[:, :k]
        grad[d] = columns[:, :k].sum(0) if self.fit_intercept else 0.0
        product = None
        if c is not None:
            product = torch.empty_like(probe)
            product[:d] = back[:, k:]
            product[d] = columns[:, k:].sum(0) if self.fit_intercept else 0.0
        return FullPass(params.clone(), z, D, value, grad, c, product)

    def smooth_value_and_gradient(self, params: torch.Tensor) -> tuple[float, torch.Tensor]:
        d, n = self.data.d, self.data.n
        z = self.data.margins(params[:d]) + params[d]
        y = self.data.Y
        value = float(self.data.weighted(self.loss.value(z, y)).sum()) / n
        D = self.data.weighted(self.loss.derivative(z, y)) / n
        grad = torch.zeros_like(params)
        grad[:d] = self.data.transpose_product(D)
        if self.fit_intercept:
            grad[d] = D.sum(0)
        if self.regularizer.strength:
            value += self.regularizer.value(params[:d])
            grad[:d] += self.regularizer.gradient(params[:d])
        return value, grad

    def objective(self, params: torch.Tensor, taken: FullPass | None = None) -> float:
        """F(params), from a full pass `taken` at these parameters when there is one (no product then)."""
        if taken is not None and taken.at(params):
            smooth = self.regularizer.value(params[: self.data.d]) if self.regularizer.strength else 0.0
            value = taken.loss_value + smooth
        else:
            value, _ = self.smooth_value_and_gradient(params)
        return value + self.penalty.value(params[: self.data.d])

    def prox_all(self, v: torch.Tensor, eta: float) -> None:
        """prox of eta * h on every block of the coefficient rows of v, in place."""
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            self.penalty.prox(v[lo:hi], eta, int(lo), int(hi))

    def measures(self, params: torch.Tensor, eta: float, taken: FullPass | None = None) -> dict:
        """F(x), ||G(x)||^2 with G the gradient mapping (x - prox_{eta h}(x - eta grad f(x))) / eta, non-zeros.
        A full pass `taken` at these parameters (the anchor's) saves the two products."""
        d = self.data.d
        if taken is not None and taken.at(params):
            value, grad = taken.loss_value, taken.loss_gradient.clone()
            if self.regularizer.strength:
                value += self.regularizer.value(params[:d])
                grad[:d] += self.regularizer.gradient(params[:d])
        else:
            value, grad = self.smooth_value_and_gradient(params)
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
