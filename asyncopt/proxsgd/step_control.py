"""The server step of AsyB-ProxSGD (a part of ProxSGDAlgorithm): the schedule's step, its delay-free
bound (eta_0, or the local bound from the loss's curvature at the anchor) and the delay bound's
scale, kept in one shared tensor so that changes made with the workers drained reach them; and the
step an update read `staleness` updates ago is applied with."""

from __future__ import annotations

import torch

from asyncopt.proxsgd import stepsize
from asyncopt.proxsgd.stepsize import delay_factor


class StepControl:
    """ProxSGDAlgorithm's step: its fields (`eta`, `batch_size`, `delay`, ...) and `_eta` are the
    algorithm's (algorithm.py)."""

    @property
    def step(self) -> float:
        return float(self._numpy_views()["eta"][0])  # (a numpy read: ~20x cheaper than a tensor's)

    @step.setter
    def step(self, value: float) -> None:
        self._eta[0] = value

    @property
    def step_cap(self) -> float:
        """The delay-free step bound: eta_0, or the local bound adapt_step last set."""
        return float(self._numpy_views()["eta"][1])

    @step_cap.setter
    def step_cap(self, value: float) -> None:
        self._eta[1] = value

    @property
    def delay_unit(self) -> float:
        """eta(tau) = min(step, delay_unit * delay_factor(tau, M))."""
        return float(self._numpy_views()["eta"][2])

    @delay_unit.setter
    def delay_unit(self, value: float) -> None:
        self._eta[2] = value

    def warm_start(self, smoothness: stepsize.Smoothness) -> None:
        """Start the local step from the global estimate (estimate_smoothness): its power iteration
        from the global vector, LOCAL_WARM_ITERATIONS for the first estimate instead of
        LOCAL_COLD_ITERATIONS, and the global figures where the curvature is the same for every sample."""
        if smoothness.vector is not None and self.local_steps:
            self._local_vector = smoothness.vector.reshape(-1, 1).clone()
            self._local_first = stepsize.LOCAL_WARM_ITERATIONS
            self._global_smoothness = smoothness
            if smoothness.row_sq_norms is not None:
                self._row_sq_norms = smoothness.row_sq_norms

    def adapt_step(self, params: torch.Tensor) -> None:
        """Set the step bound from the loss's curvature at `params` (call with no update in flight, after
        `flush`): 1 / L_N of the local minibatch smoothness (stepsize.local_smoothness), between eta_0
        and LOCAL_GAIN_MAX eta_0. The schedule's reductions so far (step / cap) carry over."""
        if not self.local_steps:
            return
        problem, data = self.problem, self.problem.data
        d = data.d
        taken = getattr(self, "_pass", None)  # the anchor's pass, when at params: its margins and product
        first = v = c = None
        if taken is not None and taken.at(params):
            z, c = taken.margins, taken.curvature
            first, v = taken.probe_product, self._pass_probe
        else:
            z = data.margins(params[:d]) + params[d]
        c = problem.curvature(z) if c is None else c
        if c is None or data.n == 0:
            return
        local = self._uniform_curvature_smoothness(c)
        if local is not None:
            self._local_first = stepsize.LOCAL_ITERATIONS
            self._set_local_step(local)
            return
        iterations, self._local_first = max(self._local_first, stepsize.LOCAL_ITERATIONS), stepsize.LOCAL_ITERATIONS
        if self._local_vector is None:
            iterations = stepsize.LOCAL_COLD_ITERATIONS
            gen = torch.Generator(device="cpu").manual_seed(0)
            self._local_vector = torch.randn(d + 1, 1, generator=gen, dtype=data.dtype).to(data.device)
            if not problem.fit_intercept:
                self._local_vector[d] = 0.0
        if getattr(self, "_row_sq_norms", None) is None:
            self._row_sq_norms = data.row_sq_norms()  # (kept: a pass over the data, as slow as a product)
        local, self._local_vector = stepsize.local_smoothness(
            data, c, problem.fit_intercept, self._local_vector if first is None else v, iterations,
            self._row_sq_norms, first,
        )  # fmt: skip
        self._set_local_step(local)

    def _uniform_curvature_smoothness(self, c: torch.Tensor) -> stepsize.Smoothness | None:
        """With one curvature c0 for every sample (the logistic loss at zero coefficients: 1/4),
        A^T diag(c) A = c0 A^T A: the local estimate is the global one times c0, no power iteration."""
        smoothness = getattr(self, "_global_smoothness", None)
        # (weighted samples: c holds w_i c_i, and the global estimate is already of A^T W A)
        if smoothness is None or self.problem.data.weights is not None or not bool((c == c[0]).all()):
            return None
        c0 = float(c[0])
        return stepsize.Smoothness(c0 * smoothness.top_eigenvalue, c0 * smoothness.max_row_sq_norm)

    def _set_local_step(self, local: stepsize.Smoothness) -> None:
        problem = self.problem
        L = local.minibatch(1.0, self.batch_size, problem.regularizer.smoothness)
        cap = self.eta * min(
            max((1.0 / L) / self.eta if L > 0 else stepsize.LOCAL_GAIN_MAX, 1.0), stepsize.LOCAL_GAIN_MAX
        )
        reduced = self.step / self.step_cap
        self.step_cap = cap
        self.step = reduced * cap
        if self.delay_smoothness > 0:  # the delay bound from the mean curvature at the iterate
            mean = local.top_eigenvalue + problem.regularizer.smoothness
            self.delay_unit = min(max(stepsize.delay_unit(mean), self._global_unit, cap),
                                  stepsize.LOCAL_GAIN_MAX * self._global_unit)  # fmt: skip

    def step_at(self, staleness: float) -> float:
        """The server's step for an update read `staleness` updates ago.

        The delay only caps the step (a stability bound): eta = min(eta_schedule, unit * factor(tau)),
        unit = 2 margin / L of the mean gradient (stepsize.delay_unit; eta_0 for a given step), so once
        the schedule has lowered the step below the cap, delays cost nothing more.
        """
        tau = staleness if self.delay_adaptive else self.delay
        blocks = self.problem.n_blocks if self.push == "block" else 1
        return min(self.step, self.delay_unit * delay_factor(tau, blocks))
