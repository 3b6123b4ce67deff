"""Does the eager prox sweep lose its 2-process scaling by writing every coordinate of a shared x?

Two processes run the package's eager pass (`proxsgd.fast.soft_step_shifted`) over the same
130,108-entry shared array (news20's width) at once, against one alone, and the same with a variant
that writes a 16-entry chunk only when a value in it changed (near an L1 optimum, 95-99.7% of
news20's coordinates are zero with |mu_j| <= alpha: the sweep leaves them at 0). Each sweep follows
a batch's 4,800 random reads of x (the pull) and 4,800 random gradient entries, as a batch of 32
news20 rows would: a read of a line the other process just wrote is a transfer between cores. Scaling: 2 x T(1) / T(2).

    python benchmarks/eager_sweep_sharing.py --rounds 2 --out benchmarks/results/eager_sweep_sharing.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

from asyncopt.proxsgd.fast import soft, soft_step_shifted

sys.path.insert(0, str(Path(__file__).parent))

from parallel_timing import report, slowest_of, table  # noqa: E402

D, TOUCHED, ALPHA, ETA = 130_108, 4_800, 1e-4, 0.5


@njit(cache=True, nogil=True)
def soft_step_shifted_if_changed(v, a, mu, eta, t, positive):
    """soft_step_shifted, writing a 16-entry chunk only when one of its values changed."""
    flat, g, m = v.reshape(-1), a.reshape(-1), mu.reshape(-1)
    n = flat.shape[0]
    buf = np.empty(16)
    for s in range(0, n, 16):
        e = min(s + 16, n)
        changed = False
        for q in range(s, e):
            x = soft(flat[q] - eta * (g[q] + m[q]), t, positive)
            buf[q - s] = x
            changed |= x != flat[q]
        if changed:
            for q in range(s, e):
                flat[q] = buf[q - s]


@njit(cache=True, nogil=True)
def _pull(x, cols):
    s = 0.0
    for c in cols:
        s += x[c, 0]
    return s


def _sweeps(kind: str, path: str, reps: int, out) -> None:
    x = np.memmap(path, dtype=np.float64, mode="r+", shape=(D, 1))
    rng = np.random.default_rng(os.getpid())
    mu = rng.normal(0, 3e-5, (D, 1))
    mu[:300] = 5e-4  # (a few coordinates the anchor's gradient pushes off zero)
    g = np.zeros((D, 1))
    sweep = soft_step_shifted if kind == "every entry" else soft_step_shifted_if_changed
    sweep(x, g, mu, ETA, ETA * ALPHA, False)  # (compiled or loaded before the clock)
    batches = [rng.integers(0, D, TOUCHED) for _ in range(16)]
    t0 = time.perf_counter()
    for r in range(reps):
        rows = batches[r % 16]
        _pull(x, batches[(r + 7) % 16])  # (a worker's pull: the batch's columns of x, read at random)
        g[rows, 0] = 1e-3
        sweep(x, g, mu, ETA, ETA * ALPHA, False)
        g[rows, 0] = 0.0
    out.put(time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.NamedTemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as f:
        np.memmap(f.name, dtype=np.float64, mode="w+", shape=(D, 1))[:] = 0.0
        for _ in range(args.rounds):
            for kind in ("every entry", "changed chunks only"):
                took = {p: slowest_of(_sweeps, (kind, f.name, args.reps), p) for p in (1, 2)}
                us = [1e6 * took[p] / args.reps for p in (1, 2)]
                rows.append(f"| {kind} | {us[0]:.0f} | {us[1]:.0f} | {2 * took[1] / took[2]:.2f}x |")
                print(rows[-1], flush=True)
    text = table(
        "The eager sweep's 2-process scaling on a shared x (news20's width)",
        f"python benchmarks/eager_sweep_sharing.py --rounds {args.rounds}",
        ["writes", "1 process, us a sweep", "2 processes, us a sweep", "scaling"],
        rows,
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
