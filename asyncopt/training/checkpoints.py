"""When to checkpoint, and stopping on SIGINT / SIGTERM with a checkpoint written.

`StopSignals` turns the first SIGINT or SIGTERM during a fit into a request that the engine
honours at its next drained point (it saves, stops the workers, raises TrainingInterrupted); a
second signal stops at once. `RunCheckpointer` is what the engines call (engines.base.Checkpointer):
it decides when a periodic checkpoint is due and writes the state the run assembles.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from asyncopt.training.state import TrainingState


class StopSignals:
    """Context manager: SIGINT / SIGTERM set `signum` instead of killing the fit (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: do not wait for a drained point
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def parse_every(every) -> tuple[float | None, int | None]:
    """(seconds, samples) from `checkpoint_every`: a number of seconds, or a string "N samples"."""
    if every is None:
        return None, None
    if isinstance(every, str):
        words = every.split()
        if len(words) == 2 and words[1] in ("samples", "sample") and words[0].isdigit() and int(words[0]) > 0:
            return None, int(words[0])
        if len(words) == 2 and words[1] in ("s", "seconds", "second"):
            every = words[0]
        try:
            seconds = float(every)
        except ValueError:
            raise ValueError(
                f"checkpoint_every={every!r}: give seconds (a number, e.g. 60) or samples (e.g. '100000 samples')"
            ) from None
    else:
        seconds = float(every)
    if not seconds > 0:
        raise ValueError(f"checkpoint_every={every!r} must be positive")
    return seconds, None


@dataclasses.dataclass
class Checkpointing:
    """What the estimator asks of a run: where to write, how often, and what to record as setup."""

    folder: Path | None  # None: no files, but signals still stop the run at a drained point
    every: float | str | None = 60.0
    setup: dict = dataclasses.field(default_factory=dict)
    signals: StopSignals | None = None
    written: list = dataclasses.field(default_factory=list)  # paths written by this fit


class RunCheckpointer:
    """engines.base.Checkpointer for one run: `gather(params, coordinator, telemetry)` -> TrainingState."""

    def __init__(self, config: Checkpointing, gather: Callable[..., TrainingState], samples: int = 0):
        self.config, self.gather = config, gather
        self.seconds, self.samples_every = parse_every(config.every)
        self._last_time, self._last_samples = time.monotonic(), samples

    def due(self, samples: int) -> bool:
        if self.config.folder is None:
            return False
        if self.samples_every is not None:
            return samples - self._last_samples >= self.samples_every
        return self.seconds is not None and time.monotonic() - self._last_time >= self.seconds

    def samples_until_due(self, samples: int) -> int | None:
        """Samples left until a checkpoint by sample count is due (None: none is set by samples)."""
        if self.config.folder is None or self.samples_every is None:
            return None
        return max(0, self.samples_every - (samples - self._last_samples))

    def stop_requested(self) -> int | None:
        return None if self.config.signals is None else self.config.signals.signum

    def save(self, params, coordinator: dict, telemetry) -> None:
        if self.config.folder is None:
            return
        state = self.gather(params, coordinator, telemetry)
        state.setup = self.config.setup
        self.config.written.append(state.write(self.config.folder))
        self._last_time, self._last_samples = time.monotonic(), state.samples
