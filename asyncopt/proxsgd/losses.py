"""Smooth losses on margins z = X w + b, and the optional smooth nonconvex regularizer.

Every loss is a pair of pure functions on torch tensors of shape (n, k): ``value(z, y)`` per entry
(summed over the k columns by the caller) and ``derivative(z, y) = d value / d z``, plus
``curvature``, a bound on the second derivative that sets the smoothness constant
``L = curvature * lambda_max(X^T X / n)``. Binary losses take labels y in {-1, +1}; the squared
loss takes real targets; the multinomial loss takes one-hot rows.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Loss:
    name: str
    curvature: float  # sup of the second derivative in z
    convex: bool = True
    labels: str = "binary"  # "binary" (y in {-1, +1}), "real" or "onehot"

    def value(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def second_derivative(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """d^2 loss / dz^2 per sample (<= curvature), for the local step; None: only the bound is known."""
        return None

    def best_constant(self, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor | None:
        """The margin b (k,) that minimizes the mean loss with no features, z = b for every sample (the
        weighted mean with sample `weights`): where a fit with an intercept starts. None: zero (no
        closed form)."""
        return None


def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The column means of values (n x k) in float64, weighted by `weights` (n,) when given."""
    values = values.to(torch.float64)
    if weights is None:
        return values.mean(0)
    w = weights.to(torch.float64).reshape(-1, 1)
    return (values * w).sum(0) / w.sum()


class LogisticLoss(Loss):
    def value(self, z, y):
        return F.softplus(-y * z)

    def derivative(self, z, y):
        return -y * torch.sigmoid(-y * z)

    def second_derivative(self, z, y):
        p = torch.sigmoid(y * z)
        return p * (1 - p)

    def best_constant(self, y, weights=None):
        p = _mean(y > 0, weights).clamp(1e-12, 1 - 1e-12)  # (one class only: a large, finite b)
        return torch.log(p / (1 - p)).to(y.dtype)


class SquaredLoss(Loss):
    def value(self, z, y):
        return 0.5 * (z - y) ** 2

    def derivative(self, z, y):
        return z - y

    def best_constant(self, y, weights=None):
        return _mean(y, weights).to(y.dtype)


class SmoothedHingeLoss(Loss):
    """Quadratically smoothed hinge (Shalev-Shwartz & Zhang): 0 for m >= 1, (1-m)^2/2 on [0, 1], 1/2 - m below."""

    def value(self, z, y):
        m = y * z
        return torch.where(m >= 1, 0.0, torch.where(m <= 0, 0.5 - m, 0.5 * (1 - m) ** 2))

    def derivative(self, z, y):
        m = y * z
        return -y * torch.clamp(1 - m, 0.0, 1.0)

    def second_derivative(self, z, y):
        m = y * z
        return ((m > 0) & (m < 1)).to(z.dtype)


class SigmoidLoss(Loss):
    """sigmoid(-y z): a smooth, bounded, nonconvex surrogate of the 0-1 loss."""

    def value(self, z, y):
        return torch.sigmoid(-y * z)

    def derivative(self, z, y):
        s = torch.sigmoid(-y * z)
        return -y * s * (1 - s)


class MultinomialLoss(Loss):
    """Softmax cross-entropy on a row of k margins; y is one-hot. `value` puts each row's loss in column 0."""

    def value(self, z, y):
        out = torch.zeros_like(z)
        out[:, 0] = torch.logsumexp(z, dim=1) - (z * y).sum(1)
        return out

    def derivative(self, z, y):
        return torch.softmax(z, dim=1) - y

    def best_constant(self, y, weights=None):
        log_p = torch.log(_mean(y, weights).clamp(min=1e-12))
        return (log_p - log_p.mean()).to(y.dtype)  # (softmax ignores a common shift: centred)


# sup |d^2/dm^2 sigmoid(-m)| = 1 / (6 sqrt 3), attained where sigmoid = 1/2 -+ 1/(2 sqrt 3)
_SIGMOID_CURVATURE = 1.0 / (6.0 * math.sqrt(3.0))

LOSSES = {
    "logistic": LogisticLoss("logistic", 0.25),
    "squared": SquaredLoss("squared", 1.0, labels="real"),
    "smoothed_hinge": SmoothedHingeLoss("smoothed_hinge", 1.0),
    "sigmoid": SigmoidLoss("sigmoid", _SIGMOID_CURVATURE, convex=False),
    "multinomial": MultinomialLoss("multinomial", 0.5, labels="onehot"),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss={name!r} is not one of {sorted(LOSSES)}") from None


@dataclasses.dataclass(frozen=True)
class NonconvexRegularizer:
    """r * sum x^2 / (1 + x^2): smooth, nonconvex, bounded (a smooth surrogate of counting non-zeros)."""

    strength: float

    @property
    def smoothness(self) -> float:
        return 2.0 * self.strength  # sup of the second derivative, attained at x = 0

    def value(self, x: torch.Tensor) -> float:
        if self.strength == 0:
            return 0.0
        sq = x * x
        return float(self.strength * (sq / (1 + sq)).sum())

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        return self.strength * 2 * x / (1 + x * x) ** 2
