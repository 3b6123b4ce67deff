"""AsyB-ProxSGD as an engine algorithm: workers push one block's stochastic gradient, the
parameter server of that block applies the proximal step.

worker (compute):  read the parameters the minibatch touches (the pull), draw the block j from the
                   task's random key, return g_j = (1/N) sum_{i in I} grad_j f_i(x_hat) -- sparse:
                   only the (column, value) pairs of the minibatch that fall in block j.
server (apply):    x_j <- prox_{eta h_j}(x_j - eta g_j), eta = eta_0 * delay factor(staleness).

``push="full"`` is Asyn-ProxSGD: a worker pushes the gradient of every block and every block's
server applies its prox. One worker and one block is plain proximal SGD. The intercept (one
unpenalized coordinate, row d) travels with every push but has its own owner, the intercept server
(index n_blocks): in `server_parts` it is a part of its own, so row d is only ever written under
one lock, whichever blocks the pushes are for.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading

import numpy as np
import torch

from asyncopt.proxsgd import stepsize
from asyncopt.proxsgd.problem import LinearProblem
from asyncopt.proxsgd.prox import L1, Box, ElasticNet, GroupL1, Penalty, SquaredL2
from asyncopt.proxsgd.server_placement import ServerPlacement
from asyncopt.proxsgd.step_control import StepControl

LAZY_RATIO = 100.0  # lazy prox when a block is this many times wider than a minibatch's entries

from asyncopt.errors import TrainingDiverged  # noqa: E402 (one class for both families)

_SCRATCH = threading.local()  # the servers' per-thread scratch (ProxSGDAlgorithm._eager_scratch)


@dataclasses.dataclass
class BlockUpdate:
    block: int  # the block j, -1 for a full-vector push, n_blocks for the intercept alone (server_parts)
    index: torch.Tensor | None  # rows of the parameters with gradient entries (duplicates add up); None: dense
    values: torch.Tensor  # (len(index), k) entries, or the dense block gradient (hi - lo, k)
    intercept: torch.Tensor | None  # (k,) gradient of the intercept
    weight: float  # multiplies the server's step (1, or 1/P for a synchronous round)
    loss_sum: float  # sum of the minibatch margins at the read parameters (finite unless diverged)


@dataclasses.dataclass
class ProxSGDAlgorithm(StepControl, ServerPlacement):
    problem: LinearProblem
    batch_size: int
    eta: float  # eta_0: the server's step for a delay-free update (halved by the plateau schedule)
    push: str = "block"  # "block" (AsyB-ProxSGD) or "full" (Asyn-ProxSGD)
    delay: float = 0.0  # the delay bound the step is coupled to (ignored when delay_adaptive)
    delay_adaptive: bool = False
    use_compiled: bool = True  # numba kernels for the worker step when the data is on the CPU
    variance_reduction: bool = False  # SVRG gradients: corrected by an anchor refreshed with workers drained
    lazy: str = "off"  # just-in-time prox on sparse data (fast.py): "off", "on", or "auto" (when it pays)
    # the step's bound from the curvature at the iterate (`adapt_step`, with workers drained), not
    # only from the loss's worst case: up to LOCAL_GAIN_MAX times eta_0
    local_steps: bool = False
    # the mean gradient's smoothness the delay bound is scaled by (stepsize.delay_unit); 0: the delay
    # factor scales eta_0 itself (a given step size)
    delay_smoothness: float = 0.0
    # what a bundle (backend="ray") carries: "pairs" (each update's (row, value) gradient entries),
    # "samples" (each update's samples and their coefficients: the servers form the pairs from their
    # columns of X, `for_server`), or "auto" (samples where a sample has more than one entry in a
    # server's rows on average). The environment's ASYNCOPT_BUNDLES sets it for benchmarks' A/B runs.
    bundle_pushes: str = dataclasses.field(default_factory=lambda: os.environ.get("ASYNCOPT_BUNDLES", "auto"))
    # box, group L1 and the smooth regularizer in the compiled task loop (block_prox.py); the
    # environment's ASYNCOPT_COMPILED_PROX=off gives their torch step a batch (benchmarks' A/B runs, the
    # tests of the Python servers' path). A field, so that it travels to the workers with the algorithm.
    compiled_prox: bool = dataclasses.field(
        default_factory=lambda: os.environ.get("ASYNCOPT_COMPILED_PROX", "on") != "off"
    )

    def __post_init__(self):
        # the servers' step lives in a one-element tensor: shared with worker processes that apply
        # updates themselves, so the plateau schedule's changes reach them
        # [step, cap, unit]: the schedule's step (never above the cap), the delay-free bound (eta_0, or
        # the local bound of adapt_step) and the delay bound's scale (stepsize.delay_unit), all shared,
        # so their changes reach the workers at their next task
        unit = stepsize.delay_unit(self.delay_smoothness) if self.delay_smoothness > 0 else float(self.eta)
        self._eta = torch.tensor([float(self.eta), float(self.eta), max(unit, float(self.eta))], dtype=torch.float64)
        self._global_unit = float(self._eta[2])
        self._local_vector = None  # adapt_step's warm start
        self._local_first = stepsize.LOCAL_COLD_ITERATIONS  # power iterations of the first local estimate
        # SVRG anchor x~ (shared like the step): per-sample loss derivatives D~ (n x k) and the mean
        # gradient mu = grad f(x~). A worker pushes grad_j f_I(x^) - grad_j f_I(x~) (sparse: the
        # minibatch's columns, with D - D~ as coefficients); the server adds mu_j, which is dense but
        # rides on the prox's pass over the block. Unbiased, and its variance vanishes near x~ = x*.
        self._snap_D = self._snap_mu = None
        if self.variance_reduction:
            data = self.problem.data
            self._snap_D = torch.zeros(data.n, self.problem.k, dtype=data.dtype, device=data.device)
            self._snap_mu = torch.zeros(data.d + 1, self.problem.k, dtype=data.dtype, device=data.device)

        # the servers' scratch (fast.lazy_apply): each touched row's place in a lazy update, -1
        # between updates; row c is only used under the lock of the server that owns it
        self._slot = torch.full((self.problem.data.d,), -1, dtype=torch.int64)
        self._lazy_state = self._make_lazy_state() if self.lazy_active else None
        self._support = self._make_support() if self._lazy_state is None else None  # (eager updates)

    @property
    def compiled_penalty(self) -> bool:
        """The penalty is one the compiled kernels apply: L1, elastic net, L2 (its thresholds and L2
        factors weighted per row where it has a row_scale: `_numpy_views`' "rw") or none."""
        return type(self.problem.penalty) in (L1, ElasticNet, SquaredL2, Penalty)

    @property
    def task_penalty(self) -> bool:
        """The compiled task loop applies the penalty and the regularizer: a compiled_penalty without
        the regularizer (over the block's support), or (compiled_prox) any penalty with or without it
        (block_prox.py: a sweep of the block)."""
        if self.compiled_penalty and not self.problem.regularizer.strength:
            return True
        return self.compiled_prox and type(self.problem.penalty) in (L1, ElasticNet, SquaredL2, Penalty, Box, GroupL1)

    def _prox_args(self) -> tuple:
        """block_prox.py's penalty tuple for the task kernels."""
        from asyncopt.proxsgd import block_prox

        penalty, rw = self.problem.penalty, self._numpy_views()["rw"]
        reg, dtype = self.problem.regularizer.strength, self._scratch_layout[1]
        if type(penalty) is Box:
            scale = None if penalty.row_scale is None else penalty.row_scale.numpy()
            return block_prox.prox_args(block_prox.PROX_BOX, 0.0, 0.0, penalty.positive, rw, dtype,
                                        (penalty.lower, penalty.upper), scale, reg=reg)  # fmt: skip
        if type(penalty) is GroupL1:
            return block_prox.prox_args(block_prox.PROX_GROUP, penalty.alpha, 0.0, penalty.positive, rw, dtype,
                                        group_of_row=penalty.group_of_row.numpy(), group_weight=penalty.weights.numpy(),
                                        reg=reg)  # fmt: skip
        l1, l2 = self.penalty_weights
        return block_prox.prox_args(block_prox.PROX_SEPARABLE, l1, l2, penalty.positive, rw, dtype, reg=reg)

    @property
    def penalty_weights(self) -> tuple[float, float]:
        """(L1 weight, L2 weight) of a compiled penalty: alpha (r, (1 - r)) for elastic net (0, alpha)
        for L2, (alpha, 0) for L1, (0, 0) for none (the kernels' soft threshold and l2_shrink)."""
        penalty = self.problem.penalty
        if type(penalty) is L1:
            return penalty.alpha, 0.0
        if type(penalty) is ElasticNet:
            return penalty.alpha * penalty.l1_ratio, penalty.alpha * (1.0 - penalty.l1_ratio)
        if type(penalty) is SquaredL2:
            return 0.0, penalty.alpha
        return 0.0, 0.0

    @property
    def lazy_active(self) -> bool:
        """Lazy updates apply: compiled CPU kernels, sparse data, plain L1 (or no) penalty, no smooth
        regularizer, and a step that is constant between evaluation points (not delay-adaptive)."""
        problem = self.problem
        penalty = problem.penalty
        return (
            self.lazy != "off"
            and self.fast
            and problem.data.sparse
            and type(penalty) in (L1, Penalty)  # (the lazy closed form is the L1 prox's)
            and not penalty.positive
            and not problem.regularizer.strength
            and not self.delay_adaptive
            and (self.lazy == "on" or self._lazy_pays())
        )

    @property
    def sweep_dominates(self) -> bool:
        """A block's eager sweep costs far more than a batch's entries (sparse data; `_lazy_pays`):
        where lazy updates pay, and where a full push's sweeps of every block cost most."""
        return self.problem.data.sparse and self._lazy_pays()

    def _lazy_pays(self) -> bool:
        """A lazy update reads and writes ~4 arrays at random per minibatch entry (~100-200 ns each,
        cache misses); an eager one sweeps its blocks (~0.5 ns a coordinate). Measured with the
        whole-task kernel (benchmarks/proxsgd_step_cost.py), news20 in 4 blocks (32.5k columns each,
        ~150 entries a sample): batch 1 lazy 2.3x faster (sweep / entries = 216), batch 4 eager 1.4x
        faster (54; 12.3 against 17.7 us with the single-write eager kernel). Lazy when the sweep is
        over LAZY_RATIO times the batch's entries."""
        data = self.problem.data
        entries = self.batch_size * data.nnz / max(1, data.n)
        swept = data.d / self.problem.n_blocks if self.push == "block" else data.d  # an eager update's prox
        return swept > LAZY_RATIO * entries

    def _make_lazy_state(self) -> dict:
        problem, data = self.problem, self.problem.data
        block_of = np.searchsorted(problem.bounds, np.arange(data.d), side="right") - 1
        # every minibatch entry reads `last` and `block_of` at a random row: narrow types keep more of
        # them in cache (10^6 columns in 2 blocks: 1 and 2 worker throughput +17-31% and +4-20%, measured
        # on a 4*10^5 x 10^6 synthetic set); ticks restart at each flush (every evaluation point)
        return {
            "ticks": torch.zeros(problem.n_blocks, dtype=torch.int64),  # updates applied to each block
            # the block's tick each row is up to date with (an epoch is at most n updates)
            "last": torch.zeros(data.d, dtype=torch.int32 if data.n < 2**31 else torch.int64),
            "block_of": torch.from_numpy(block_of.astype(np.int16 if problem.n_blocks < 2**15 else np.int32)),
            "slot": self._slot,
            "mu": self._snap_mu if self._snap_mu is not None else torch.zeros(data.d + 1, problem.k, dtype=data.dtype),
        }

    def _make_support(self) -> dict:
        """The blocks' supports for the compiled eager updates (fast.eager_support_apply): the rows each
        block's update visits, listed in the block's own positions, their marks, and per block a cache
        line of [count, mode] (two servers' lines apart: different workers write them)."""
        d = self.problem.data.d
        return {
            "rows": torch.zeros(d, dtype=torch.int32 if d < 2**31 else torch.int64),
            "member": torch.zeros(d, dtype=torch.bool),
            "state": torch.zeros(self.problem.n_blocks, 8, dtype=torch.int64),  # mode 0: rebuild at the first update
        }

    def _invalidate_support(self) -> None:
        """The parameters or the anchor changed outside the eager kernels (with no update in flight):
        each block lists its support again at its next update."""
        if self._support is not None:
            self._support["state"][:, 1] = 0  # (fast.SUPPORT_REBUILD)

    def _lazy_step(self) -> tuple[float, float]:
        """(eta, eta alpha): the server step of every update until the next flush."""
        eta = self.step_at(self.delay)
        return eta, eta * self.penalty_weights[0]

    def flush(self, params: torch.Tensor) -> None:
        """Bring lazily updated rows up to date (call with no update in flight, before the step or
        the anchor changes); a no-op without lazy updates. Eager updates list their blocks' supports
        again after it (fast.eager_support_apply): the caller may have changed the parameters."""
        self._invalidate_support()
        if self._lazy_state is not None:
            from asyncopt.proxsgd import fast

            st = self._lazy_state
            eta, thr = self._lazy_step()
            fast.lazy_flush(
                params.numpy(),
                st["mu"].numpy(),
                eta,
                thr,
                st["ticks"].numpy(),
                st["last"].numpy(),
                st["block_of"].numpy(),
                self._numpy_views()["rw"],
            )

    def refresh_snapshot(self, params: torch.Tensor) -> None:
        """Move the SVRG anchor to params (call with no update in flight). The same pass over the data
        carries the local step's power-iteration product (`adapt_step`) and the evaluation's loss and
        gradient (`measures`), which reuse it at these parameters."""
        probe = None
        d = self.problem.data.d
        # (zero coefficients: one margin for every sample, so one curvature: adapt_step needs no product)
        if self.local_steps and self._local_vector is not None and bool(params[:d].any()):
            v = self._local_vector
            probe = v / v.norm().clamp(min=torch.finfo(v.dtype).tiny)
        self._pass = self.problem.full_pass(params, probe)
        self._pass_probe = probe
        self._snap_D.copy_(self._pass.derivative)
        self._snap_mu.copy_(self._pass.loss_gradient)
        self._invalidate_support()  # (rows the new mean moves off 0)

    def objective(self, params: torch.Tensor) -> float:
        """F(params) (LinearProblem.objective), from the anchor's pass when it was taken at these parameters."""
        return self.problem.objective(params, getattr(self, "_pass", None))

    def measures(self, params: torch.Tensor, eta: float) -> dict:
        """The evaluation point's measures (LinearProblem.measures), from the anchor's pass when it was
        taken at these parameters."""
        return self.problem.measures(params, eta, getattr(self, "_pass", None))

    def _anchor_derivative(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self._snap_D[rows.to(self._snap_D.device)].to(like.device)

    passthrough_errors = (TrainingDiverged,)  # a diverging worker's error reaches fit as itself

    @property
    def n_samples(self) -> int:
        """Draws an epoch: the samples, heavy rows counted as often as they are drawn (proxsgd/row_splits.py)."""
        return self.problem.data.n_draws

    @property
    def draws(self) -> np.ndarray | None:
        """The rows an epoch draws (engines.base.Schedule.draws), or None: each sample once."""
        return self.problem.data.draws

    @property
    def n_locks(self) -> int:
        """One server per block, and the intercept server when there is an intercept."""
        return self.problem.n_blocks + (1 if self.problem.fit_intercept else 0)

    @property
    def servers_per_update(self) -> int:
        """The servers one update reaches (the clock ticks it makes): its block, or every block for a
        full push, and the intercept server."""
        blocks = 1 if self.push == "block" else self.problem.n_blocks
        return blocks + (1 if self.problem.fit_intercept else 0)

    @property
    def intercept_server(self) -> int:
        """The server (lock index) that owns the intercept row: the one after the blocks' servers."""
        return self.problem.n_blocks

    def server_parts(self, update: BlockUpdate) -> list[tuple[int, BlockUpdate]]:
        """(server, part) pairs: a block update goes to its block's server, a full push is split into
        one part per block, applied by each server; the intercept, when there is one, is a part of its
        own for the intercept server (no coefficients: an empty index, or None for dense updates)."""
        bounds, M = self.problem.bounds, self.problem.n_blocks
        if update.block >= 0:
            parts = [(update.block, dataclasses.replace(update, intercept=None))]
        else:
            if update.index is not None:
                owner = np.searchsorted(bounds, update.index.numpy(), side="right") - 1
            parts = []
            for k in range(M):
                if update.index is None:
                    index, values = None, update.values[int(bounds[k]) : int(bounds[k + 1])]
                else:
                    mine = torch.from_numpy(owner == k)
                    index, values = update.index[mine], update.values[mine]
                parts.append((k, BlockUpdate(k, index, values, None, update.weight, update.loss_sum)))
        if update.intercept is not None:
            index = None if update.index is None else update.index[:0]  # (apply takes the same path as the whole)
            part = BlockUpdate(M, index, update.values[:0], update.intercept, update.weight, update.loss_sum)
            parts.append((self.intercept_server, part))
        return parts

    def init_params(self) -> torch.Tensor:
        return self.problem.init_params()

    # -- worker --------------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_views", None)  # numpy views of the (shared) tensors: rebuilt where unpickled
        state.pop("_read_marks", None)  # (rows_read's scratch)
        for scratch in ("_pass", "_pass_probe", "_row_sq_norms", "_global_smoothness"):  # (the coordinator's)
            state.pop(scratch, None)
        state["_local_vector"] = None  # (adapt_step's warm start: the coordinator's too)
        # (and so is X^T: a worker reads minibatch rows only; a pickled copy or a shared one would cost
        # memory and seconds of copying on large data)
        state["problem"] = dataclasses.replace(self.problem, data=self.problem.data.for_workers())
        return state

    def _block_range(self, key: int) -> tuple[int, int, int]:
        problem = self.problem
        if self.push == "block":
            j = int(key % problem.n_blocks)
            return j, int(problem.bounds[j]), int(problem.bounds[j + 1])
        return -1, 0, problem.data.d

    @property
    def fast(self) -> bool:
        """Compiled CPU kernels (fast.py) for the worker step; the torch code is the reference."""
        return self.use_compiled and self.problem.data.device.type == "cpu"

    def compute(self, params: torch.Tensor, batch: torch.Tensor, scale: float, key: int = 0) -> BlockUpdate:
        if self.fast:
            return self._compute_compiled(params, batch, scale, key)
        problem, data = self.problem, self.problem.data
        mb = data.minibatch(batch)
        D, loss_sum = problem.batch_loss_derivative(mb, params)
        if self.variance_reduction:
            D = D - self._anchor_derivative(mb.rows, D)
        D = problem.batch_weighted(D, mb.rows) / mb.size
        j, lo, hi = self._block_range(key)
        if data.sparse:
            mask = (mb.cols >= lo) & (mb.cols < hi) if j >= 0 else slice(None)
            index = mb.cols[mask]
            values = mb.vals[mask].unsqueeze(1) * D[mb.local_row[mask]]
        else:
            index, values = None, mb.dense[:, lo:hi].T @ D
        return self._finish(params, j, lo, hi, index, values, D, loss_sum, scale, mb.size)

    def _compute_compiled(self, params, batch, scale, key) -> BlockUpdate:
        from asyncopt.proxsgd import fast

        problem, data = self.problem, self.problem.data
        v = self._numpy_views()
        rows = batch.numpy().astype(np.int64, copy=False)
        P = params.numpy()
        d = data.d
        if self._lazy_state is not None:
            st = self._lazy_state
            eta, thr = self._lazy_step()
            Z = fast.lazy_batch_margins(
                v["indptr"],
                v["indices"],
                v["values"],
                rows,
                P[:d],
                st["mu"].numpy(),
                eta,
                thr,
                st["ticks"].numpy(),
                st["last"].numpy(),
                st["block_of"].numpy(),
                self.variance_reduction,
                self.problem.n_blocks == 1,
                v["rw"],
            )
        elif data.sparse:
            Z = fast.csr_batch_margins(v["indptr"], v["indices"], v["values"], rows, P[:d])
        else:
            Xb = v["dense"][rows]
            Z = Xb @ P[:d]
        Z += P[d]
        j, lo, hi = self._block_range(key)
        if self._loss_code is not None and not problem.regularizer.strength and (data.sparse or self.fused):
            index, values, intercept, finite = self._fused_gradient(rows, Z, lo, hi)
            return BlockUpdate(
                j,
                torch.from_numpy(index),
                torch.from_numpy(values),
                torch.from_numpy(intercept) if problem.fit_intercept else None,
                scale * self.batch_size / len(rows),
                0.0 if finite else math.nan,
            )
        z, y = torch.from_numpy(Z), torch.from_numpy(v["Y"][rows])
        D = problem.loss.derivative(z, y)
        if self.variance_reduction:
            D -= self._anchor_derivative(batch, D)
        D = problem.batch_weighted(D, batch) / len(rows)
        loss_sum = float(Z.sum())  # only its finiteness is used
        if data.sparse:
            index, values = fast.csr_block_gradient(v["indptr"], v["indices"], v["values"], rows, D.numpy(), lo, hi)
            index, values = torch.from_numpy(index), torch.from_numpy(values)
        else:
            index, values = None, torch.from_numpy(Xb[:, lo:hi].T @ D.numpy())
        return self._finish(params, j, lo, hi, index, values, D, loss_sum, scale, len(rows))

    @property
    def _loss_code(self) -> int | None:
        from asyncopt.proxsgd import fast

        return fast.LOSS_CODES.get(self.problem.loss.name)

    def _fused_gradient(self, rows, Z, lo, hi):
        """(index, values, intercept gradient, finite) of the block lo..hi from the margins Z."""
        from asyncopt.proxsgd import fast

        v = self._numpy_views()
        snap_D = v["snap_D"] if self.variance_reduction else v["Y"]  # (unused without SVRG)
        return fast.sparse_block_step(
            v["indptr"], v["indices"], v["values"], v["Y"], rows, Z, self._loss_code, snap_D,
            self.variance_reduction, lo, hi, v["sw"],
        )  # fmt: skip

    def _fused_apply(self, P, index, values, intercept, eta, lo, hi) -> None:
        """The server's rule (anchor mean, gradient pairs, L1 / no prox, intercept) in one kernel."""
        from asyncopt.proxsgd import fast

        v, penalty = self._numpy_views(), self.problem.penalty
        l1, l2 = self.penalty_weights
        fast.eager_l1_apply(
            P, index, values, eta, eta * l1, penalty.positive,
            v["snap_mu"] if self.variance_reduction else v["Y"],  # (unused without SVRG)
            self.variance_reduction, lo, hi,
            intercept if intercept is not None else v["values"], intercept is not None, self._eager_scratch(hi - lo),
            v["rw"], l2,
        )  # fmt: skip

    @property
    def fused(self) -> bool:
        """A whole task can run compiled (`run_task`): CPU, a loss of fast.LOSS_CODES (the multinomial
        too, since session 33), a penalty and regularizer the task kernels apply (`task_penalty`: every
        penalty since session 35), eager updates. Dense data too, as dense rows (fast.py): whole fits
        on magic, uci-pol and California 2.9-8.3x faster than the torch step a batch with one worker,
        13-35x with two (benchmarks/results/dense_rows.md)."""
        problem = self.problem
        return (
            self.fast
            and (problem.data.sparse or os.environ.get("ASYNCOPT_DENSE_ROWS", "on") != "off")  # (the A/B switch)
            and self._loss_code is not None
            and self.task_penalty
            # lazy counts are per block: a full push over several blocks goes part by part (compute / apply)
            and (self._lazy_state is None or self.push == "block" or problem.n_blocks == 1)
        )

    @property
    def compiled_tasks(self) -> bool:
        """Whole tasks run in the engine's compiled loop (engines/compiled.py) with fast.py's task
        kernels, and one can be shared between workers (`Task.shared`)."""
        return self.fused

    def task_kernels(self) -> tuple:
        """(worker_step, route, server_apply): see engines.base.TaskKernels."""
        from asyncopt.proxsgd import fast

        return fast.task_worker_step, fast.task_route, fast.task_server_apply

    def task_args(self, params, task) -> tuple[tuple, tuple]:
        """(worker, server) arguments of fast.py's task kernels for this task: the data and the
        parameters (numpy views), the step schedule's current step (constant within a task: tasks
        never cross an evaluation point), the SVRG anchor, the lazy counts."""
        return self._task_args(params, task.round_batch, len(task.sizes))

    def _task_args(self, params, round_batch: int, n_batches: int) -> tuple[tuple, tuple]:
        problem, v, P = self.problem, self._numpy_views(), params.numpy()
        penalty, vr = problem.penalty, self.variance_reduction
        weight = self.batch_size / round_batch  # the step of a batch of the round's size
        lazy = self._lazy_state is not None
        if lazy:  # just-in-time prox (fast.py): rows are caught up when read or written
            st = {name: t.numpy() for name, t in self._lazy_state.items()}
            lazy_eta, lazy_thr = self._lazy_step()
            if weight != 1.0 and n_batches:  # (lazy updates need one constant step: rounds of one batch)
                raise RuntimeError(f"lazy updates need the constant step {lazy_eta:g}, got weight {weight:g}")
        else:  # (unused: of the lazy state's dtypes, so that lazy and eager runs share one compiled loop)
            unused = np.zeros(1, dtype=np.int64)
            st = {"mu": v["Y"], "ticks": unused, "last": unused.astype(np.int32), "block_of": unused.astype(np.int16)}
            lazy_eta = lazy_thr = 0.0
        # read-only, as Ray's actors receive it: numba compiles one kernel for read-only arrays and
        # one for writable ones, so the bundle kernels compiled here and in Ray's actors are the same
        bounds = np.asarray(problem.bounds, dtype=np.int64).view()
        bounds.flags.writeable = False
        snap_D, mu = (v["snap_D"], v["snap_mu"]) if vr else (v["Y"], v["Y"])  # (unused without SVRG)
        worker = (
            v["indptr"], v["indices"], v["values"], v["Y"], P, self._loss_code, snap_D, vr, bounds,
            self.push == "block", lazy, st["mu"], lazy_eta, lazy_thr, st["ticks"], st["last"], st["block_of"], v["rw"],
            v["sw"],
        )  # fmt: skip
        server = (
            P, bounds, self.penalty_weights[0], penalty.positive, mu, vr,
            problem.fit_intercept, self.step, self.delay_unit, float(self.delay), self.delay_adaptive,
            problem.n_blocks if self.push == "block" else 1, weight,
            lazy, st["mu"], lazy_eta, lazy_thr, st["ticks"], st["last"], st["block_of"], self._slot.numpy(),
            self._eager_scratch(self._largest_block), _eager_marks(self._largest_block), *self._support_views(),
            v["rw"], self.penalty_weights[1], self._prox_args(),
        )  # fmt: skip
        return worker, server

    def _support_views(self) -> tuple:
        if self._support is None:  # (lazy updates: unused; the dtypes of _make_support's, as above)
            return np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.bool_), np.zeros((1, 8), dtype=np.int64)
        return tuple(self._support[name].numpy() for name in ("rows", "member", "state"))

    def _eager_scratch(self, rows: int) -> np.ndarray:
        """The eager kernel's scratch for `rows` rows (fast.eager_l1_apply: the pairs summed aside,
        zero between updates), one per thread: the worker that applies a server's update uses its
        own. A block's size (a full push applied at once: the model's), not always the model's: a
        scratch as big as the parameters doubled the pass's working set over the blocks (2 MB on
        news20, the L2 cache), 1.7x the update."""
        scratch = getattr(_SCRATCH, "eager", None)
        k, dtype = self._scratch_layout
        if scratch is None or scratch.shape[0] < rows or scratch.shape[1] != k or scratch.dtype != dtype:
            scratch = _SCRATCH.eager = np.zeros((max(rows, 1), k), dtype=dtype)
        return scratch

    @functools.cached_property
    def _scratch_layout(self) -> tuple[int, np.dtype]:
        return self.problem.k, torch.empty(0, dtype=self.problem.data.dtype).numpy().dtype

    @property
    def _largest_block(self) -> int:
        return int(np.diff(np.asarray(self.problem.bounds)).max())

    def task_failed(self, status: int) -> None:
        """fast.STEP_NOT_FINITE: a worker's margins were not finite."""
        self.check(BlockUpdate(-1, None, torch.zeros(0), None, 1.0, math.nan), -1, -1)

    def server_rows(self, server: int) -> tuple[int, int]:
        """Block servers own their block's rows; the intercept server (index n_blocks) row d."""
        if server == self.problem.n_blocks:
            return self.problem.data.d, self.problem.data.d + 1
        return int(self.problem.bounds[server]), int(self.problem.bounds[server + 1])

    def prepare(self, per_batch: bool = True) -> None:
        """Load (or compile) the kernels now, in the setup or a worker's start, not in the timed steps
        (the engine loads its compiled task loop itself). `per_batch` False: only the lazy flush of the
        drained points, for a run whose steps all go through the task loop or Ray's bundles (the
        per-batch kernels took 17 of a cold first fit's 47 s on a9a, never to be called)."""
        if self.fast and not per_batch:
            self.flush(self.init_params())  # (a no-op without lazy updates)
        elif self.fast:
            params = self.init_params()
            if self.problem.data.n == 0:  # a server's copy (for_servers): its rule only
                k, dtype = self.problem.k, self.problem.data.dtype
                intercept = torch.zeros(k, dtype=dtype) if self.problem.fit_intercept else None
                nothing = BlockUpdate(0, torch.zeros(0, dtype=torch.int64), torch.zeros(0, k, dtype=dtype), intercept,
                                      1.0, 0.0)  # fmt: skip
                self.apply(params, nothing, 0)
                return
            one_row = torch.zeros(1, dtype=torch.int64)  # scale: a batch of 1 takes the step of a full one
            self.apply(params, self.compute(params, one_row, 1.0 / self.batch_size, 0), 0)
            self.flush(params)  # also resets the lazy counts

    def _numpy_views(self) -> dict:
        views = getattr(self, "_views", None)
        if views is None:
            data = self.problem.data
            views = {n: getattr(data, n).numpy() for n in ("Y", "dense") if getattr(data, n) is not None}
            if data.device.type == "cpu":  # X's rows as the compiled kernels read them (dense too)
                views["indptr"], views["indices"], views["values"] = data.row_arrays()
            views["eta"] = self._eta.numpy()
            # the compiled kernels' per-row threshold weights (fast.row_weight): 1 / s for an L1 penalty
            # on scaled rows, else empty (one threshold)
            penalty = self.problem.penalty
            scaled = self.compiled_penalty and penalty.row_scale is not None
            views["rw"] = (1.0 / penalty.row_scale.double()).numpy() if scaled else np.zeros(0, dtype=np.float64)
            views["sw"] = data.draw_weights_array()  # a draw's weight in its batch (empty: all 1)
            if self.variance_reduction:
                views["snap_D"], views["snap_mu"] = self._snap_D.numpy(), self._snap_mu.numpy()
            self._views = views
        return views

    def _finish(self, params, j, lo, hi, index, values, D, loss_sum, scale, size) -> BlockUpdate:
        problem = self.problem
        if problem.regularizer.strength:  # its gradient is dense on the block
            dense = torch.zeros(hi - lo, D.shape[1], dtype=D.dtype, device=D.device)
            if index is None:
                dense += values
            else:
                dense.index_add_(0, index - lo, values)
            index, values = None, dense + problem.regularizer.gradient(params[lo:hi])
        intercept = D.sum(0) if problem.fit_intercept else None
        weight = scale * self.batch_size / size
        return BlockUpdate(j, index, values, intercept, weight, loss_sum)

    # -- parameter server ----------------------------------------------------------------
    def apply(self, params: torch.Tensor, update: BlockUpdate, staleness: int = 0) -> None:
        problem = self.problem
        eta = self.step_at(staleness) * update.weight  # push="full" parts keep the full push's step
        if update.block == problem.n_blocks:  # the intercept server's part: row d alone
            lo = hi = problem.data.d
        elif update.block >= 0:
            lo, hi = int(problem.bounds[update.block]), int(problem.bounds[update.block + 1])
        else:
            lo, hi = 0, problem.data.d
        if self._lazy_state is not None:
            self._apply_lazy(params, update, eta)
            return
        self._invalidate_support()  # (this path sweeps; the compiled task loop's updates list the support again)
        if self.fast and update.index is not None and self.compiled_penalty:  # one kernel
            intercept = update.intercept.numpy() if update.intercept is not None else None
            self._fused_apply(params.numpy(), update.index.numpy(), update.values.numpy(), intercept, eta, lo, hi)
            return
        # the block's new value is computed aside and written once (a lock-free reader sees the block
        # as held before or after this update, never stepped and not yet proxed)
        new = params[lo:hi].clone()
        if self.variance_reduction:  # the anchor's mean gradient: dense on the block
            new.sub_(self._snap_mu[lo:hi], alpha=eta)
        if update.block != problem.n_blocks:  # (the intercept server's part has no coefficient rows)
            if update.index is None:
                new.sub_(update.values, alpha=eta)
            else:
                new.index_add_(0, update.index - lo, update.values, alpha=-eta)
            if update.block >= 0:
                problem.penalty.prox(new, eta, lo, hi)
            else:
                problem.prox_all(new, eta)
        params[lo:hi].copy_(new)
        if update.intercept is not None:
            d = problem.data.d
            mean = self._snap_mu[d] if self.variance_reduction else 0.0
            params[d].sub_(update.intercept + mean, alpha=eta)

    def _apply_lazy(self, params, update, eta) -> None:
        from asyncopt.proxsgd import fast

        st = self._lazy_state
        lazy_eta, thr = self._lazy_step()
        if eta != lazy_eta:  # a weighted (synchronous) or delay-adaptive step would break the closed form
            raise RuntimeError(f"lazy updates need the constant step {lazy_eta:g}, got {eta:g}")
        first, last = (update.block, update.block) if update.block >= 0 else (0, self.problem.n_blocks - 1)
        if update.block < self.problem.n_blocks:  # (not the intercept server's part: it has no block to tick)
            fast.lazy_apply(params.numpy(), update.index.numpy(), update.values.numpy(), eta, thr, st["mu"].numpy(),
                            st["ticks"].numpy(), st["last"].numpy(), st["block_of"].numpy(), first, last,
                            st["slot"].numpy(), self._numpy_views()["rw"])  # fmt: skip
        if update.intercept is not None:
            d = self.problem.data.d
            params[d].sub_(update.intercept + st["mu"][d], alpha=eta)

    def check(self, update: BlockUpdate, step: int, samples: int) -> None:
        if not math.isfinite(update.loss_sum):
            where = f"at step {step} (sample {samples})" if step >= 0 else "in a worker's task"
            raise TrainingDiverged(
                f"training diverged {where}: the minibatch margins became non-finite. "
                f"Lower step_size (now {self.step:.4g}) or use a smaller learning rate with max_delay / more workers"
            )

    # -- transport -------------------------------------------------------------------------
    def to(self, device) -> ProxSGDAlgorithm:
        data = self.problem.data
        moved = dataclasses.replace(
            data, **{f.name: getattr(data, f.name).to(device) for f in dataclasses.fields(data) if _is_tensor(data, f)}
        )
        problem = dataclasses.replace(self.problem, data=moved)
        if self._lazy_state is not None:
            raise ValueError("lazy updates need one shared parameter store, not per-device replicas")
        replica = dataclasses.replace(self, problem=problem)
        replica._snap_D, replica._snap_mu = self._snap_D, self._snap_mu  # the anchor stays where it is refreshed
        return replica

    def update_to(self, update: BlockUpdate, device) -> BlockUpdate:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            update, index=move(update.index), values=move(update.values), intercept=move(update.intercept)
        )

    def update_to_numpy(self, update: BlockUpdate):
        as_np = lambda t: None if t is None else t.cpu().numpy()  # noqa: E731
        return (update.block, as_np(update.index), as_np(update.values), as_np(update.intercept), update.weight,
                update.loss_sum)  # fmt: skip

    def update_from_numpy(self, payload) -> BlockUpdate:
        block, index, values, intercept, weight, loss_sum = payload
        device = self.problem.data.device
        as_t = lambda a: None if a is None else torch.as_tensor(np.asarray(a), device=device)  # noqa: E731
        return BlockUpdate(block, as_t(index), as_t(values), as_t(intercept), weight, loss_sum)

    # -- state (checkpoints) ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """The servers' rule state (with no update in flight): the current step and the SVRG anchor."""
        state = {"step": self.step, "step_cap": self.step_cap, "delay_unit": self.delay_unit}
        if self._local_vector is not None:
            state["local_vector"] = self._local_vector.clone()
            state["local_first"] = self._local_first
        if self.variance_reduction:
            state["snapshot_D"], state["snapshot_mu"] = self._snap_D.clone(), self._snap_mu.clone()
        return state

    def actor_state_dict(self, role: str) -> dict:
        """`state_dict` as the engine's actors need it (Ray, after each drained point): without the
        coordinator's power-iteration warm start, and for a server ("server") without the per-sample
        anchor D~, which its rule does not read (on news20 the broadcast took 32 ms an epoch)."""
        state = self.state_dict()
        state.pop("local_vector", None)
        state.pop("local_first", None)
        if role == "server":
            state.pop("snapshot_D", None)
        # numpy arrays travel as buffers (Ray's pickle 5, no copy); tensors through torch's reducer
        return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}

    def load_state_dict(self, state: dict, params: torch.Tensor) -> None:
        self.step = float(state["step"])
        self.step_cap = float(state.get("step_cap", self.eta))  # (older checkpoints: the global bound)
        self.delay_unit = float(state.get("delay_unit", self._global_unit))
        if "local_vector" in state:
            self._local_vector = _tensor(state["local_vector"]).clone()
            self._local_first = int(state.get("local_first", stepsize.LOCAL_ITERATIONS))
        if self.variance_reduction:
            if self._snap_D.shape[0]:  # (a server's copy has no samples, and no use for D)
                self._snap_D.copy_(_tensor(state["snapshot_D"]))
            self._snap_mu.copy_(_tensor(state["snapshot_mu"]))
        self._invalidate_support()  # (params restored, the anchor moved)
        if self._lazy_state is not None:  # saved parameters are caught up: every row current at tick 0
            self._lazy_state["ticks"].zero_()
            self._lazy_state["last"].zero_()

    def saved_params(self, params: torch.Tensor) -> torch.Tensor:
        """A copy of the parameters with lazily updated rows caught up (the run itself is not touched,
        so a checkpoint between evaluation points does not change the rounding of the run)."""
        saved = params.detach().clone()
        if self._lazy_state is not None:
            from asyncopt.proxsgd import fast

            st = self._lazy_state
            eta, thr = self._lazy_step()
            fast.lazy_flush(saved.numpy(), st["mu"].numpy(), eta, thr, st["ticks"].numpy().copy(),
                            st["last"].numpy().copy(), st["block_of"].numpy(), self._numpy_views()["rw"])  # fmt: skip
        return saved

    def share_memory(self, pack=None) -> None:
        """What workers read and write to shared memory: the data (the copies made beside the setup,
        LinearData.from_array(shared=True)) and the servers' state. `pack(tensors)` moves a list of
        tensors (the transport's: one block); by default each is shared on its own."""
        # moving a storage frees the old one: numpy views taken before would read freed memory (e.g.
        # the step the plateau schedule halves). Dropped before (they would pin the storages), rebuilt on use.
        self.__dict__.pop("_views", None)
        self.problem.data.share_memory()
        state = (self._eta, self._snap_D, self._snap_mu, self._slot, *(self._lazy_state or {}).values(),
                 *(self._support or {}).values())  # fmt: skip
        tensors = [t for t in state if t is not None]
        if pack is None:
            for t in tensors:
                t.share_memory_()
        else:
            pack(tensors)
        self.__dict__.pop("_views", None)


def _eager_marks(rows: int) -> np.ndarray:
    """The support kernel's flags beside the eager scratch (fast.eager_support_apply), one per thread."""
    marks = getattr(_SCRATCH, "marks", None)
    if marks is None or marks.shape[0] < rows:
        marks = _SCRATCH.marks = np.zeros(max(rows, 1), dtype=np.bool_)
    return marks


def _tensor(value) -> torch.Tensor:
    """A tensor of a saved or broadcast array, to copy from: a read-only array (Ray maps them from
    its object store) is copied first, since torch warns that it cannot wrap one."""
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = value.copy()
    return torch.as_tensor(value)


def _is_tensor(obj, field) -> bool:
    return isinstance(getattr(obj, field.name), torch.Tensor)
