"""Where a processes fit's worker start-up goes (news20, L1 logistic, warm worker pool).

Each fit's `telemetry_["startup_seconds"]` is split by wrapping the transport's steps:
- share: read-only data, parameters and the servers' words moved to shared memory (copies);
- start: the jobs put on the pool's queues;
- ready: each worker's "ready" wait (unpickling the algorithm: every shared storage is one round
  trip to the parent's resource sharer, and the workers queue behind each other).

Fits of 1 and 2 workers alternate (the machine is shared and noisy); one warm-up fit each first.

    python benchmarks/proxsgd_startup_parts.py --rounds 4 --out benchmarks/results/proxsgd_startup_parts.md
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from parallel_timing import report

from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_news20
from asyncopt.engines import transports


class StepClock:
    """Seconds of each call of the wrapped ProcessTransport methods, per fit."""

    def __init__(self, names=("share", "start", "next_result")):
        self.calls: dict[str, list[float]] = {}
        for name in names:
            self._wrap(name)

    def _wrap(self, name: str) -> None:
        method = getattr(transports.ProcessTransport, name)

        def timed(transport, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(transport, *args, **kwargs)
            finally:
                self.calls.setdefault(name, []).append(time.perf_counter() - t0)

        setattr(transports.ProcessTransport, name, timed)


def fit(X, y, workers: int):
    return ProxSGDClassifier(
        penalty="l1", alpha=1e-4, fit_intercept=False, backend="processes", n_workers=workers,
        threads_per_worker=1, max_epochs=1, tol=None, random_state=0,
    ).fit(X, y)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # (one epoch: the ConvergenceWarning is expected)
    X, y = load_news20()[:2]
    clock = StepClock()
    for workers in (1, 2):
        fit(X, y, workers)
    rows = {1: [], 2: []}
    for _ in range(args.rounds):
        for workers in (1, 2):
            clock.calls.clear()
            model = fit(X, y, workers)
            ready = clock.calls["next_result"][:workers]
            rows[workers].append(
                (model.telemetry_["startup_seconds"], clock.calls["share"][0], clock.calls["start"][0], sum(ready))
            )
    lines = [
        "# Worker start-up of a processes fit, news20 (L1 logistic, alpha 1e-4, warm pool)",
        "",
        f"Command: `python benchmarks/proxsgd_startup_parts.py --rounds {args.rounds}`",
        "",
        "Milliseconds, median (min-max) over the rounds (1 and 2 workers alternating); ready: the waits for the",
        "workers' ready messages, summed.",
        "",
        "| workers | startup | share | start | ready |",
        "|---:|---:|---:|---:|---:|",
    ]
    for workers, got in rows.items():
        cells = [f"{1e3 * np.median(c):.1f} ({1e3 * min(c):.1f}-{1e3 * max(c):.1f})" for c in zip(*got, strict=True)]
        lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
