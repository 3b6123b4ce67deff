"""Kernel functions k(x, z), evaluated blockwise with torch on any device.

Radial kernels are written as a profile applied *in place* to a block of squared
distances, so that one block of memory holds distances and then kernel values: the
only large temporary is the matmul output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)


def _gaussian(d2: torch.Tensor, h: float) -> torch.Tensor:
    # exp(-||x-z||^2 / (2 h^2))
    return d2.mul_(-0.5 / (h * h)).exp_()


def _laplacian(d2: torch.Tensor, h: float) -> torch.Tensor:
    # exp(-||x-z|| / h); equal to Matern nu=1/2
    return d2.sqrt_().mul_(-1.0 / h).exp_()


def _matern32(d2: torch.Tensor, h: float) -> torch.Tensor:
    # (1 + t) exp(-t), t = sqrt(3) ||x-z|| / h
    t = d2.sqrt_().mul_(_SQRT3 / h)
    return torch.exp(-t).mul_(t.add_(1.0))


def _matern52(d2: torch.Tensor, h: float) -> torch.Tensor:
    # (1 + t + t^2 / 3) exp(-t), t = sqrt(5) ||x-z|| / h
    t = d2.sqrt_().mul_(_SQRT5 / h)
    e = torch.exp(-t)
    return t.mul_(t.div(3.0).add_(1.0)).add_(1.0).mul_(e)


RADIAL_PROFILES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "gaussian": _gaussian,
    "rbf": _gaussian,
    "laplacian": _laplacian,
    "matern12": _laplacian,
    "matern32": _matern32,
    "matern52": _matern52,
}


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel with a bandwidth.

    Either radial (``profile`` maps squared Euclidean distances to kernel values) or a
    user callable ``function(A, B, bandwidth) -> Tensor`` of shape (len(A), len(B)).
    """

    name: str
    bandwidth: float
    profile: Callable[[torch.Tensor, float], torch.Tensor] | None = None
    function: Callable | None = None

    @property
    def is_radial(self) -> bool:
        return self.profile is not None

    def block(
        self,
        A: torch.Tensor,
        B: torch.Tensor,
        a_sqnorm: torch.Tensor | None = None,
        b_sqnorm: torch.Tensor | None = None,
        a_extra: torch.Tensor | None = None,
        zero_below: float = 0.0,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """K(A, B) as a dense (len(A), len(B)) tensor.

        ``a_sqnorm``/``b_sqnorm`` are the rows' squared norms when already known;
        ``a_extra`` is a per-row term added to every squared distance of that row
        (used when constant training features were dropped, see ``KernelData``).
        Squared distances at or below ``zero_below`` become exactly 0: the expansion
        ||a||^2 + ||b||^2 - 2 a.b leaves round-off of about eps * ||a||^2 there, which the
        square root of the Laplacian and Matern kernels would otherwise magnify, e.g. into
        k(x, x) != 1 and into predictions that depend on how queries are batched.
        ``out``: a contiguous (len(A), len(B)) buffer the distances are computed in (a radial
        kernel's values then end up there too), so that chunked products allocate nothing per chunk.
        """
        if not self.is_radial:
            return self._call_user(A, B)
        if a_sqnorm is None:
            a_sqnorm = A.pow(2).sum(1)
        if b_sqnorm is None:
            b_sqnorm = B.pow(2).sum(1)
        # ||a||^2 + ||b||^2 - 2 a.b: one broadcast add, then the matmul accumulates onto it (one
        # pass over the block fewer than a bias-initialised addmm followed by an add)
        a_term = a_sqnorm if a_extra is None else a_sqnorm + a_extra
        d2 = torch.add(a_term.unsqueeze(1), b_sqnorm.unsqueeze(0), out=out)
        d2.addmm_(A, B.T, alpha=-2.0)
        torch.threshold_(d2, zero_below, 0.0)  # also clears round-off below zero
        return self.profile(d2, self.bandwidth)

    def _call_user(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        out = self.function(A, B, self.bandwidth)
        out = torch.as_tensor(out, dtype=A.dtype, device=A.device)
        if out.shape != (A.shape[0], B.shape[0]):
            raise ValueError(
                f"kernel callable {self.name} returned shape {tuple(out.shape)} for inputs of "
                f"{A.shape[0]} and {B.shape[0]} rows; expected ({A.shape[0]}, {B.shape[0]})"
            )
        return out


def roundoff_floor(max_sqnorm: float, dtype: torch.dtype) -> float:
    """Squared distances below this are round-off of the norm expansion (see `Kernel.block`).

    It depends on the training points only, so a query's kernel row never depends on which
    other queries share its block.
    """
    return float(16 * torch.finfo(dtype).eps * max_sqnorm)


def make_kernel(kernel, bandwidth: float) -> Kernel:
    """Resolve a kernel name or callable and a bandwidth into a `Kernel`."""
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)):
        raise ValueError(f"bandwidth={bandwidth!r} must be a positive number")
    if not (bandwidth > 0 and math.isfinite(bandwidth)):
        raise ValueError(f"bandwidth={bandwidth!r} must be positive and finite")
    if callable(kernel):
        name = getattr(kernel, "__name__", type(kernel).__name__)
        return Kernel(name=name, bandwidth=float(bandwidth), function=kernel)
    if isinstance(kernel, str) and kernel.lower() in RADIAL_PROFILES:
        key = kernel.lower()
        return Kernel(name=key, bandwidth=float(bandwidth), profile=RADIAL_PROFILES[key])
    raise ValueError(
        f"unknown kernel {kernel!r}; use one of {sorted(RADIAL_PROFILES)} or a callable "
        "f(A, B, bandwidth) returning the (len(A), len(B)) kernel matrix"
    )
