"""The training state as data: everything a run needs to continue exactly, and its file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from asyncopt.persistence import join_arrays, read_file, split_arrays, write_checkpoint


@dataclasses.dataclass
class TrainingState:
    """A run at a drained point (no update in flight).

    params       the parameter store (the servers' blocks are row ranges of it; lazy rows caught up)
    coordinator  the engine's part: batch stream position and generator state, steps, the delay
                 simulator's recent differences
    telemetry    staleness histogram and per-worker counters so far
    algorithm    the servers' rule state (current step, SVRG anchor and mean)
    run          the training loop's state (plateau windows, when the anchor moved, monitor rows)
    history      the evaluation points so far, as dicts
    training_seconds  training time of the run so far (earlier fits of a resumed run included)
    setup        what the estimator started the run with: its class, parameters, data fingerprint,
                 derived settings and read-only setup (e.g. EigenPro's preconditioner)
    """

    params: torch.Tensor
    coordinator: dict
    telemetry: dict
    algorithm: dict
    run: dict
    history: list
    training_seconds: float
    setup: dict = dataclasses.field(default_factory=dict)

    @property
    def samples(self) -> int:
        return int(self.coordinator["stream"]["issued"])

    def engine_part(self) -> dict:
        """What an engine's `run(resume=...)` continues from."""
        return {**self.coordinator, "telemetry": self.telemetry}

    def write(self, folder: str | Path) -> Path:
        """The next numbered checkpoint file in `folder` (atomic; older ones pruned)."""
        tree = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "params"}
        tree["samples"] = self.samples
        payload, arrays = split_arrays(tree)
        arrays["params"] = self.params
        return write_checkpoint(folder, payload, arrays)

    @classmethod
    def read(cls, path: str | Path) -> TrainingState:
        payload, arrays = read_file(path, "checkpoint")
        params = arrays.pop("params")
        tree = join_arrays(payload, arrays)
        tree.pop("samples", None)
        names = {f.name for f in dataclasses.fields(cls)} - {"params"}
        return cls(params=params, **{k: v for k, v in tree.items() if k in names})
