"""What both runs share: continue a monitor's record, and start the engine with checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from asyncopt.engines.base import Monitor, Schedule
from asyncopt.engines.serial import SerialEngine
from asyncopt.engines.telemetry import Telemetry
from asyncopt.training.checkpoints import Checkpointing, RunCheckpointer
from asyncopt.training.state import TrainingState


def continue_monitor(monitor: Monitor, resume: TrainingState | None, entry: type) -> None:
    """A resumed run's history and training seconds carry on from the checkpoint's."""
    if resume is not None:
        monitor.history = [entry(**e) for e in resume.history]
        monitor.earlier_seconds = resume.training_seconds


def launch(
    algo,
    schedule: Schedule,
    rng: np.random.Generator,
    monitor: Monitor,
    *,
    engine,
    time_limit: float | None,
    progress,
    params: torch.Tensor | None,
    resume: TrainingState | None,
    checkpointing: Checkpointing | None,
    run_state: Callable[[], dict],
) -> tuple[torch.Tensor, Telemetry]:
    """Run `engine` (serial by default) from `params` / the `resume` state; with `checkpointing`
    the engine saves a TrainingState (the run's part from `run_state()`) at drained points."""

    def gather(current, coordinator, telemetry) -> TrainingState:
        return TrainingState(
            params=algo.saved_params(current),
            coordinator=coordinator,
            telemetry=telemetry.as_dict(),
            algorithm=algo.state_dict(),
            run=run_state(),
            history=[e.as_dict() for e in monitor.history],
            training_seconds=monitor.training_seconds(),
        )

    engine = SerialEngine() if engine is None else engine
    checkpointer = None
    if checkpointing is not None:
        checkpointer = RunCheckpointer(checkpointing, gather, resume.samples if resume is not None else 0)
    return engine.run(
        algo, schedule, rng, monitor, time_limit, monitor.started, progress,
        params=params, resume=resume.engine_part() if resume is not None else None, checkpointer=checkpointer,
    )  # fmt: skip
