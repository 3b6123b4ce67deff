"""The machine's own ceiling for 2 parallel workers: the same CPU-bound work (a numba loop of
random reads and writes over a 130k-coefficient vector, like a sparse ProxSGD update) run in 1
process, then in 2 processes at once. Throughput ratio 2/1 = what any 2-worker engine could get.

    python benchmarks/machine_scaling.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).parent))

from parallel_timing import reported_by  # noqa: E402


@njit(cache=True)
def _work(w, idx, reps):
    s = 0.0
    for _ in range(reps):
        for i in idx:
            w[i] = 0.999 * w[i] + 1e-3
            s += w[(i * 7) % w.shape[0]]
    return s


def _run(seconds, out):
    rng = np.random.default_rng(0)
    w = rng.normal(size=130_108)
    idx = rng.integers(0, w.shape[0], size=5_000)
    _work(w, idx, 1)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _work(w, idx, 20)
        done += 20
    out.put(done / (time.perf_counter() - t0))


def rate(processes: int, seconds: float = 5.0) -> float:
    return sum(reported_by(_run, (seconds,), processes))


def main():
    rows = []
    for trial in range(3):
        one, two = rate(1), rate(2)
        rows.append((one, two))
        print(f"trial {trial}: 1 process {one:,.0f} passes/s, 2 processes {two:,.0f} passes/s, ratio {two / one:.2f}x")
    ratios = [b / a for a, b in rows]
    print(
        f"2-process / 1-process throughput: median {np.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
