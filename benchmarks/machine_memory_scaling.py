"""What the machine gives 2 processes for a ProxSGD worker's memory traffic, beside pure compute.

Each process reads random rows of its own news20-sized CSR matrix (15,076 rows, ~152 entries a
row: 27.6 MB of indices and values, beyond the cache) and dots them with a 130,108-entry vector,
as a worker's pull does, alone and then 2 at once; beside it the same for a loop that touches no
memory (proxsgd_speedup_breakdown.machine_parallelism). Scaling: 2 x T(1) / T(2) for the same work.

    python benchmarks/machine_memory_scaling.py --rounds 3 --out benchmarks/results/machine_memory_scaling.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).parent))

from parallel_timing import report, slowest_of, table  # noqa: E402
from proxsgd_speedup_breakdown import machine_parallelism  # noqa: E402

N, D, PER_ROW = 15_076, 130_108, 152


@njit(cache=True, nogil=True)
def _pulls(indptr, indices, values, x, rows):
    s = 0.0
    for r in rows:
        for p in range(indptr[r], indptr[r + 1]):
            s += values[p] * x[indices[p]]
    return s


def _run(batches: int, out) -> None:
    rng = np.random.default_rng()
    indptr = np.arange(N + 1, dtype=np.int64) * PER_ROW
    indices = rng.integers(0, D, N * PER_ROW).astype(np.int32)
    values = rng.random(N * PER_ROW)
    x = rng.random(D)
    rows = rng.integers(0, N, (batches, 32))
    _pulls(indptr, indices, values, x, rows[0])
    t0 = time.perf_counter()
    for b in range(batches):
        _pulls(indptr, indices, values, x, rows[b])
    out.put(time.perf_counter() - t0)


def memory_parallelism(batches: int = 40_000) -> float:
    one, two = (slowest_of(_run, (batches,), p) for p in (1, 2))
    return 2 * one / two


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for r in range(args.rounds):
        compute, memory = machine_parallelism(repeats=1), memory_parallelism()
        rows.append(f"| {r + 1} | {compute:.2f}x | {memory:.2f}x |")
        print(rows[-1], flush=True)
    text = table(
        "What the machine gives 2 processes: pure compute against a worker's row reads",
        f"python benchmarks/machine_memory_scaling.py --rounds {args.rounds}",
        ["round", "compute loop, 2 processes / 1", "random CSR row reads (news20-sized), 2 processes / 1"],
        rows,
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
