"""The serial engine: one process, deterministic from the seed, with a simulated delay.

With ``max_delay = tau > 0`` every step reads the parameters as they were some updates ago:
``tau`` exactly (``delay="fixed"``) or uniformly 0..tau (``delay="random"``). With
``inconsistent_reads`` the parameter rows are split into blocks and each block is read at its
own, independently drawn age, as when a worker's read overlaps other workers' writes. For an
algorithm with `snapshot_reads` (EigenPro) the real engines then make the read whole
(engines/snapshots.py), and so does the simulator: an update some block missed is missed by all,
the read is the version of its oldest block (the conservative end: the threads / processes repair
reaches the newest). ``inconsistent_reads="torn"`` keeps the parts of updates a read mixed (the
read without the rule, for the delay study).
Delays are simulated exactly: the engine keeps the last tau parameter differences and
subtracts the newest ones from the current parameters.

With nothing to simulate (no delay, consistent reads) an algorithm with compiled tasks (ProxSGD on
CPU data) runs its batches in the engines' compiled task loop (engines/compiled.py) on this thread,
a task of whole batches (up to TASK_SAMPLES samples, at least one batch) at a time, as one worker of
the threads engine would: the same batches and updates as batch by batch, without ~25 Python calls
a batch (a9a: a fit 5x faster).
"""

from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np
import torch

from asyncopt.engines.base import AsyncAlgorithm, Checkpointer, Monitor, Schedule, TrainingInterrupted, begin_run
from asyncopt.engines.telemetry import Telemetry

TASK_SAMPLES = 4096  # compiled tasks: samples a call (checkpoints, time limits and progress between calls)


@dataclasses.dataclass
class SerialEngine:
    max_delay: int = 0
    delay: str = "fixed"  # "fixed" or "random"
    inconsistent_reads: bool | str = False  # True, or "torn": without the whole-update rule
    read_blocks: int = 16

    def __post_init__(self):
        if self.delay not in ("fixed", "random"):
            raise ValueError(f"delay={self.delay!r} must be 'fixed' or 'random'")
        if self.inconsistent_reads not in (False, True, "torn"):
            raise ValueError(f"inconsistent_reads={self.inconsistent_reads!r} must be a bool or 'torn'")
        if self.max_delay < 0:
            raise ValueError(f"max_delay={self.max_delay} must be >= 0")

    def _read(self, params, diffs, rng, whole: bool = False):
        """Parameters as a worker would have read them, and the read's staleness; `whole`: every
        update seen whole or not at all (the blocks' ages drawn, then the oldest for all)."""
        tau = min(self.max_delay, len(diffs))
        if tau == 0:
            return params, 0
        n_blocks = self.read_blocks if self.inconsistent_reads else 1
        if self.delay == "fixed" and not self.inconsistent_reads:
            ages = np.full(n_blocks, tau)
        else:
            ages = rng.integers(0, tau + 1, size=n_blocks)
        if ages.max() == 0:
            return params, 0
        if whole:
            ages = np.full(n_blocks, ages.max())
        seen = params.clone()
        bounds = np.linspace(0, params.shape[0], n_blocks + 1).astype(int)
        for b, age in enumerate(ages):
            lo, hi = bounds[b], bounds[b + 1]
            for k in range(1, int(age) + 1):  # undo the `age` newest updates in this block
                seen[lo:hi] -= diffs[-k][lo:hi]
        return seen, int(ages.max())

    def run(
        self,
        algo: AsyncAlgorithm,
        schedule: Schedule,
        rng: np.random.Generator,
        monitor: Monitor,
        time_limit: float | None = None,
        started: float | None = None,
        progress=None,
        *,
        params: torch.Tensor | None = None,
        resume: dict | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> tuple[torch.Tensor, Telemetry]:
        """Train from `params` (default `algo.init_params()`); `resume` is the coordinator state a
        checkpointer saved (stream position, steps, recent differences of the delay simulator) and
        `telemetry` of the run so far. The checkpointer is asked after every step (a serial run is
        always drained) and saves once more when the run ends."""
        params, stream, steps, telemetry = begin_run(algo, schedule, rng, monitor, 1, params, resume)
        diffs: collections.deque = collections.deque(maxlen=max(self.max_delay, 1))
        if resume is not None:
            diffs.extend(torch.as_tensor(d) for d in resume.get("delay_diffs", []))
        whole = self.inconsistent_reads is True and getattr(algo, "snapshot_reads", False)
        # nothing simulated: whole tasks in the compiled loop, its locks and clocks private to this run
        sync = None
        if not self.max_delay and not self.inconsistent_reads and getattr(algo, "compiled_tasks", False):
            from asyncopt.engines import atomics, compiled  # (numba: loaded only by algorithms that compile)

            compiled.warm(algo)  # (loaded or compiled before the clock, as a worker does)
            sync = atomics.new_sync(algo.n_locks).numpy()
        elif hasattr(algo, "prepare"):  # the per-batch steps' kernels
            algo.prepare()
        eval_at = schedule.evaluation_points()
        next_eval = int(np.searchsorted(eval_at, stream.issued, side="right"))
        now = time.perf_counter()
        telemetry.setup_seconds = now - started if started is not None else 0.0
        started = now if started is None else started

        def state() -> dict:
            return {"stream": stream.state_dict(), "steps": steps, "delay_diffs": [d.clone() for d in diffs]}

        while next_eval < len(eval_at) and stream.issued < eval_at[-1]:
            t0 = time.perf_counter()
            if sync is not None:
                # (whole batches: a task cut at TASK_SAMPLES samples would end in a short batch where the
                # batch-by-batch path has none, and the two paths would draw different batches)
                per_task = max(1, TASK_SAMPLES // schedule.batch_size)
                until = checkpointer.samples_until_due(stream.issued) if checkpointer is not None else None
                if until is not None:  # (a checkpoint by samples: due after the batch that reaches it)
                    per_task = min(per_task, max(1, -(-until // schedule.batch_size)))
                task = stream.next_task(eval_at[next_eval] - stream.issued, per_task)
                stalenesses, samples = compiled.run_task(algo, params, task, sync)
                steps += len(stalenesses)
                telemetry.record_many(0, stalenesses, samples, time.perf_counter() - t0, 0.0)
            else:
                batch, key = stream.next(eval_at[next_eval] - stream.issued)
                seen, staleness = self._read(params, diffs, rng, whole)
                update = algo.compute(seen, torch.as_tensor(batch), len(batch) / schedule.batch_size, key)
                algo.check(update, steps, stream.issued)
                if self.max_delay:
                    before = params.clone()
                    algo.apply(params, update, staleness)
                    diffs.append(params - before)
                else:
                    algo.apply(params, update)
                steps += 1
                samples = len(batch)
                telemetry.record(0, staleness, samples, time.perf_counter() - t0, 0.0)
            if progress is not None:
                progress.update(samples)
            over_time = time_limit is not None and monitor.session_seconds() >= time_limit
            if stream.issued == eval_at[next_eval] or over_time:
                if stream.issued == eval_at[next_eval]:
                    next_eval += 1
                if monitor(params, stream.issued, steps) or over_time:
                    break
            if checkpointer is not None:
                signum = checkpointer.stop_requested()
                if signum is not None:
                    checkpointer.save(params, state(), telemetry)
                    raise TrainingInterrupted(signum)
                if checkpointer.due(stream.issued):
                    checkpointer.save(params, state(), telemetry)
        if checkpointer is not None:
            checkpointer.save(params, state(), telemetry)
        return params, telemetry
