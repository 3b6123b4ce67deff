"""Automatic step size: smoothness estimated from the data, coupled to the delay.

f's gradient is L-Lipschitz with L = curvature * lambda_1(A^T A / n) (+ 2r for the nonconvex
regularizer), A the data with a column of ones when an intercept is fitted. A minibatch of N
samples is smoother on average than one sample: its step is set by the expected smoothness
``L_N = curvature * (beta / N + (1 - 1/N) lambda_1)`` with beta = max_i ||a_i||^2 (the minibatch
rule of Ma, Bassily & Belkin 2018, the same one EigenPro uses), and eta_0 = 1 / L_N.

Delay: gradient descent on a quadratic with curvature L and gradients tau steps old is stable iff
eta L < 2 sin(pi / (2 (2 tau + 1))). Block updates change one of M blocks, so tau block updates
move the iterate about as far as tau / M full ones. What a stale read gets wrong is the drift of
the iterate over those tau updates, and the drift follows the mean gradient: its L is
curvature * lambda_1 (no beta / N term: minibatch noise does not add up coherently), or with SVRG's
local step lambda_1(A^T diag(l'') A / n) at the iterate, about half the worst case once the model
is confident (a9a: 0.77 against 1.65). The automatic step keeps DELAY_MARGIN of that limit:
``eta(tau) = min(eta_0, 2 DELAY_MARGIN sin(pi / (2 (2 tau / M + 1))) / L)``. With ``delay_adaptive``
the server evaluates eta(tau) at each update's measured staleness instead of the delay bound.
A given step size keeps the older rule eta_0 sin(...). The margin 0.75 and its measurements (a9a and
news20, 0.5 / 0.75 / 0.9): docs/guide.md and benchmarks/results/proxsgd_delay_study.md.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from asyncopt.proxsgd.data import LinearData, one_torch_thread


@dataclasses.dataclass(frozen=True)
class Smoothness:
    top_eigenvalue: float  # lambda_1 of A^T A / n
    max_row_sq_norm: float  # beta
    # the power iteration's last vector (d + 1, 1), a warm start for the local estimates: at x = 0 the
    # logistic curvature is 1/4 for every sample, so there it is the local top eigenvector too
    vector: torch.Tensor | None = dataclasses.field(default=None, compare=False, repr=False)
    # ||a_i||^2 per sample (data.row_sq_norms(), a pass over the data): kept for the local estimates
    row_sq_norms: torch.Tensor | None = dataclasses.field(default=None, compare=False, repr=False)

    def minibatch(self, curvature: float, batch_size: int, regularizer_smoothness: float = 0.0) -> float:
        N = max(1, batch_size)
        return curvature * (self.max_row_sq_norm / N + (1 - 1 / N) * self.top_eigenvalue) + regularizer_smoothness


# the power iteration's rows: all of them up to this many, else this many drawn at random (without
# replacement, seeded). lambda_1 of a sample's A^T A / m against all rows' (5 draws each, from the
# column sums): the large benchmark problem (2*10^6 rows) 0.991-1.009 with 2^16 rows, 0.999-1.003 with
# 2^18; a9a 0.998-1.004 with 2^12 of its 32,561. Within the 5% margin, and 1/8 of the products' cost
# on 2*10^6 rows (4.2 s of the setup there); the shipped sets are smaller and use all their rows.
POWER_ITERATION_ROWS = 2**18


def estimate_smoothness(
    data: LinearData,
    fit_intercept: bool,
    iterations: int = 30,
    seed: int = 0,
    rtol: float = 1e-3,
    sample_rows: int = POWER_ITERATION_ROWS,
    row_sq_norms: torch.Tensor | None = None,
) -> Smoothness:
    """Power iteration on A^T A / n (A with the intercept column when fitted): at most `iterations`
    pairs of sparse products, fewer once the Rayleigh quotient moves by less than `rtol` (relative;
    this setup is timed as training).

    It starts from A^T 1, the column sums (plus 1% of a random vector, in case they vanish): data with
    one sign per column (counts, tf-idf, one-hot, pixels) has a top eigenvector close to them. From there
    a9a, news20, MNIST and California housing stop after 3 iterations within 1e-6 of the 200-iteration
    value, against 4-5 from a random vector (an iteration over all rows of the large benchmark problem:
    ~1 s; over its sample of 2^18 rows: 0.06-0.12 s). rtol
    1e-3 rather than 1e-4: the quotient converges geometrically (the error after the stop is far
    below the change that stopped it, and far below the 5% margin): on the large benchmark problem's
    first 5*10^5 rows it stops after 4 iterations, 3e-5 below the 12-iteration value, instead of 5
    (3e-6); the shipped sets stop after 3 either way.
    Its products are serial, from X's rows (read in place): they run while another thread builds X^T
    where it is built (LinearData). Beyond `sample_rows` samples it runs on that many drawn at random
    (POWER_ITERATION_ROWS); beta, the largest row norm, is always taken over all of them (from
    `row_sq_norms`, data.row_sq_norms(), where the caller has them)."""
    with one_torch_thread():
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sample = None  # (all rows)
        if data.n > sample_rows:
            sample = torch.randperm(data.n, generator=gen)[:sample_rows].sort().values
        lam, v = _top_eigenpair(data, sample, fit_intercept, iterations, gen, rtol)
        rows = data.row_sq_norms() if row_sq_norms is None else row_sq_norms
    # the Rayleigh quotient approaches lambda_1 from below: a 5% margin keeps the step safe
    return Smoothness(1.05 * max(lam, 0.0), largest_draw(data, rows, fit_intercept), v, rows)


def largest_draw(data: LinearData, row_sq_norms: torch.Tensor, fit_intercept: bool) -> float:
    """beta: the largest smoothness of one draw, its weight in the batch (w_i, times r_i where heavy
    rows are drawn more often: LinearData.draw_factors) times ||a_i||^2 (+ 1 with an intercept)."""
    if not data.n:
        return 0.0
    return float(data.draw_factored(data.weighted(row_sq_norms + (1.0 if fit_intercept else 0.0))).max())


def _top_eigenpair(
    data: LinearData, rows: torch.Tensor | None, fit_intercept: bool, iterations: int, gen: torch.Generator, rtol: float
) -> tuple[float, torch.Tensor]:
    """lambda_1 of A_S^T A_S / |S| (S: the samples `rows`, or all) and its vector, by power iteration."""
    d, n = data.d, data.n if rows is None else len(rows)
    noise = torch.randn(d + 1, 1, generator=gen, dtype=data.dtype).to(data.device)
    v = torch.zeros_like(noise)
    v[:d] = data.column_sums(rows).reshape(-1, 1)
    v[d] = n
    if not fit_intercept:
        v[d] = noise[d] = 0.0
    tiny = torch.finfo(v.dtype).tiny
    # Centred columns (standardized data, and every dense fit's columns: column_scaling) sum to 0, and
    # with an intercept the start is then the intercept's own direction, an eigenvector of eigenvalue 1:
    # from 1% of noise the quotient crept up by less than rtol and stopped at 1.0002 on California
    # (lambda_1 3.91), a step 3.7x too long that diverged with 2 workers. Dense data (cheap products)
    # and sums with nothing off the intercept start half from noise.
    degenerate = v[:d].norm() < 0.01 * v.norm()
    share = 1.0 if not data.sparse or bool(degenerate) else 0.01
    v = v / v.norm().clamp(min=tiny) + share * noise / noise.norm().clamp(min=tiny)
    lam = 0.0
    for it in range(iterations):
        v /= v.norm().clamp(min=torch.finfo(v.dtype).tiny)
        w = torch.zeros_like(v)
        w[:d], total = data.gram_product(v[:d], float(v[d]), rows)
        if fit_intercept:
            w[d] = total
        w /= n
        lam, previous = float((v * w).sum()), lam
        v = w
        if it >= 2 and abs(lam - previous) <= rtol * abs(lam):
            break
    return lam, v


# power iterations per local estimate: the curvature moves slowly between anchors, so one warm
# iteration lands within 0.2% of a 100-iteration value on a9a and news20 (within 0.02% after the second
# anchor); the first estimate starts cold and takes LOCAL_COLD_ITERATIONS
LOCAL_ITERATIONS = 1
LOCAL_COLD_ITERATIONS = 10
# from the global estimate's vector (Smoothness.vector) the first local estimate is within 0.02% of a
# 200-iteration value after 2 iterations (a9a and news20 at alpha 1e-4 and 1e-5, epochs 1 to 3; one
# iteration alone: 5.5% below on a9a, more than the 5% margin)
LOCAL_WARM_ITERATIONS = 2
LOCAL_GAIN_MAX = 16.0  # the local step never exceeds the global one by more than this


def local_smoothness(
    data: LinearData,
    curvatures: torch.Tensor,
    fit_intercept: bool,
    v: torch.Tensor,
    iterations: int = LOCAL_ITERATIONS,
    row_sq_norms: torch.Tensor | None = None,
    first_product: torch.Tensor | None = None,
) -> tuple[Smoothness, torch.Tensor]:
    """The minibatch smoothness at the current iterate: lambda_1(A^T diag(c) A / n) and max_i c_i ||a_i||^2,
    with c_i the loss's second derivative at sample i's margin (logistic: p (1 - p), far below its bound
    1/4 once most samples are classified with confidence) times its weight (LinearProblem.curvature).
    `v` (d + 1, 1) warm-starts the power iteration and is returned updated; `row_sq_norms`
    (data.row_sq_norms(), a pass over the data) may be given by a caller that keeps it, and
    `first_product` the first iteration's product for the unit vector v (LinearProblem.full_pass
    computes it with the anchor). Returned with curvature folded in (use `minibatch(1.0, N)`)."""
    d, n = data.d, data.n
    c = curvatures.reshape(-1, 1)
    lam = 0.0
    for it in range(iterations):
        v = v / v.norm().clamp(min=torch.finfo(v.dtype).tiny)
        if it == 0 and first_product is not None:
            w = first_product
        else:
            u = (data.margins(v[:d]) + v[d]) * c
            w = torch.zeros_like(v)
            w[:d] = data.transpose_product(u)
            if fit_intercept:
                w[d] = u.sum(0)
            w /= n
        lam, v = float((v * w).sum()), w
    rows = (data.row_sq_norms() if row_sq_norms is None else row_sq_norms) + (1.0 if fit_intercept else 0.0)
    beta = float(data.draw_factored(c.squeeze(1) * rows).max()) if n else 0.0  # (c: weighted; r_i: the draws')
    # a few warm iterations approach lambda_1 from below: the same 5% margin as the global estimate
    return Smoothness(1.05 * max(lam, 0.0), beta), v


def base_step(smoothness: Smoothness, curvature: float, batch_size: int, regularizer_smoothness: float) -> float:
    L = smoothness.minibatch(curvature, batch_size, regularizer_smoothness)
    return 1.0 / L if L > 0 else 1.0


DELAY_MARGIN = 0.75  # the fraction of the delayed-gradient stability limit the step keeps


def delay_unit(mean_smoothness: float) -> float:
    """The step scale of the delay bound: eta(tau) = delay_unit * delay_factor(tau, M) =
    2 DELAY_MARGIN sin(pi / (2 (2 tau / M + 1))) / L. L is the smoothness of the mean gradient
    (curvature * lambda_1, or lambda_1 at the iterate: `local_smoothness`), not the minibatch's L_N:
    a delayed read changes the gradient by the drift of the iterate, and the drift is driven by the
    mean gradient (the minibatch noise does not accumulate coherently over tau updates)."""
    return 2.0 * DELAY_MARGIN / mean_smoothness if mean_smoothness > 0 else math.inf


def delay_factor(staleness: float, n_blocks: int) -> float:
    """eta(tau) / eta_0: half the stability limit of gradient descent with tau / M delayed full steps."""
    tau = max(0.0, staleness) / max(1, n_blocks)
    return math.sin(math.pi / (2 * (2 * tau + 1)))
