"""Convex, possibly nonsmooth penalties h and their proximal operators, acting on one block of rows.

The parameters are a (d, k) tensor (k = 1, or one column per class); a block is a contiguous range
of rows [lo, hi). ``prox(v, eta, lo, hi)`` overwrites v (the block's rows after the gradient step)
with ``argmin_u h(u) + ||u - v||^2 / (2 eta)`` restricted to the block; ``value(x)`` is h on the
whole parameter matrix. Groups (group L1) are contiguous row ranges that never straddle a block.
``positive=True`` adds the constraint u >= 0; for these penalties prox(h + indicator) = max(prox_h(v), 0)
(L1, L2^2, elastic net are symmetric and increasing in |u|; for the group norm the clipping comes first).

``row_scale`` (s, one positive number per row, or None): the run solves for u = s * x, its columns of X
divided by s (the estimators' `column_scaling`), so the penalty is h(u / s). The separable penalties
(none, L1, L2^2, elastic net, box) take it: the prox of a coordinate's h(u / s) is the unscaled
prox with eta / s (L1), eta / s^2 (L2^2) or the bounds times s (box). Group L1 does not.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Penalty:
    positive: bool = False
    row_scale: torch.Tensor | None = dataclasses.field(default=None, kw_only=True)

    def value(self, x: torch.Tensor) -> float:
        return 0.0

    def _scale(self, v: torch.Tensor, lo: int, hi: int, power: int = 1) -> torch.Tensor | float:
        """s^power of rows [lo, hi) as a column to broadcast over v's k columns (1.0 without scaling)."""
        if self.row_scale is None:
            return 1.0
        return self.row_scale[lo:hi].to(v.device, v.dtype).pow(power).unsqueeze(1)

    def _unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """x / s (the user's coefficients) for value(): x holds every row."""
        return x if self.row_scale is None else x / self._scale(x, 0, len(x))

    def prox(self, v: torch.Tensor, eta: float, lo: int, hi: int) -> None:
        if self.positive:
            v.clamp_(min=0.0)


@dataclasses.dataclass
class L1(Penalty):
    alpha: float = 0.0

    def value(self, x):
        return float(self.alpha * self._unscaled(x).abs().sum())

    def prox(self, v, eta, lo, hi):
        t = eta * self.alpha / self._scale(v, lo, hi)
        if self.positive:
            v.sub_(t).clamp_(min=0.0)
        else:  # soft threshold: sign(v) max(|v| - t, 0)
            v.copy_(v.sign() * (v.abs() - t).clamp_(min=0.0))


@dataclasses.dataclass
class SquaredL2(Penalty):
    """(alpha / 2) ||x||^2."""

    alpha: float = 0.0

    def value(self, x):
        x = self._unscaled(x)
        return float(0.5 * self.alpha * (x * x).sum())

    def prox(self, v, eta, lo, hi):
        v.div_(1.0 + eta * self.alpha / self._scale(v, lo, hi, 2))
        super().prox(v, eta, lo, hi)


@dataclasses.dataclass
class ElasticNet(Penalty):
    """alpha (l1_ratio ||x||_1 + (1 - l1_ratio) / 2 ||x||^2), scikit-learn's convention."""

    alpha: float = 0.0
    l1_ratio: float = 0.5

    def value(self, x):
        a, r, x = self.alpha, self.l1_ratio, self._unscaled(x)
        return float(a * r * x.abs().sum() + 0.5 * a * (1 - r) * (x * x).sum())

    def prox(self, v, eta, lo, hi):
        L1(self.positive, self.alpha * self.l1_ratio, row_scale=self.row_scale).prox(v, eta, lo, hi)
        v.div_(1.0 + eta * self.alpha * (1 - self.l1_ratio) / self._scale(v, lo, hi, 2))


@dataclasses.dataclass
class GroupL1(Penalty):
    """alpha sum_g sqrt(|g|) ||x_g||_2 over row groups (all k columns of a row belong to its group).

    `group_of_row` holds sorted group ids 0..G-1 (rows of a group contiguous).
    """

    alpha: float = 0.0
    group_of_row: torch.Tensor | None = None

    def __post_init__(self):
        if self.row_scale is not None:
            raise ValueError("group L1 takes no row_scale: its prox has no closed form on scaled rows")
        sizes = torch.bincount(self.group_of_row)
        self.weights = sizes.to(torch.float64).sqrt()

    def _norms(self, x, groups):
        first = int(groups[0])
        local = groups - first
        sq = torch.zeros(int(local[-1]) + 1, dtype=x.dtype, device=x.device)
        sq.index_add_(0, local, (x * x).sum(1))
        return sq.sqrt(), local, first

    def value(self, x):
        if len(x) == 0:
            return 0.0
        norms, local, first = self._norms(x, self.group_of_row.to(x.device))
        w = self.weights.to(x.device, x.dtype)
        return float(self.alpha * (w * norms).sum())

    def prox(self, v, eta, lo, hi):
        if hi <= lo:
            return
        if self.positive:
            v.clamp_(min=0.0)
        groups = self.group_of_row[lo:hi].to(v.device)
        norms, local, first = self._norms(v, groups)
        w = self.weights[first : first + len(norms)].to(v.device, v.dtype)
        scale = (1.0 - eta * self.alpha * w / norms.clamp(min=torch.finfo(v.dtype).tiny)).clamp_(min=0.0)
        v.mul_(scale[local].unsqueeze(1))


@dataclasses.dataclass
class Box(Penalty):
    """The indicator of lower <= x <= upper: prox is the projection."""

    lower: float = -1.0
    upper: float = 1.0

    def value(self, x):
        x = self._unscaled(x)
        inside = bool(((x >= self.lower) & (x <= self.upper)).all())
        return 0.0 if inside else float("inf")

    def prox(self, v, eta, lo, hi):
        lower = max(self.lower, 0.0) if self.positive else self.lower
        if self.row_scale is None:
            v.clamp_(min=lower, max=self.upper)
        else:
            s = self._scale(v, lo, hi)
            v.copy_(torch.minimum(torch.maximum(v, lower * s), self.upper * s))


PENALTIES = ("l1", "l2", "elasticnet", "group_l1", "box", "none")


def make_penalty(name, alpha=0.0, l1_ratio=0.5, group_of_row=None, bounds=None, positive=False) -> Penalty:
    """The penalty for an estimator's parameters (None means no penalty)."""
    name = "none" if name is None else name
    if name == "l1":
        return L1(positive, alpha)
    if name == "l2":
        return SquaredL2(positive, alpha)
    if name == "elasticnet":
        return ElasticNet(positive, alpha, l1_ratio)
    if name == "group_l1":
        if group_of_row is None:
            raise ValueError("penalty='group_l1' needs groups= (one group label per feature)")
        return GroupL1(positive, alpha, group_of_row)
    if name == "box":
        lower, upper = (-1.0, 1.0) if bounds is None else bounds
        if not lower <= upper:
            raise ValueError(f"bounds={bounds!r}: the lower bound must not exceed the upper one")
        return Box(positive, float(lower), float(upper))
    if name == "none":
        return Penalty(positive)
    raise ValueError(f"penalty={name!r} is not one of {PENALTIES}")
