"""ProxSGD's drained passes: torch's products against data.pass_threads, in one process.

At each evaluation point the workers are drained and the coordinator takes their cores for the SVRG
anchor's full pass (X @ W, X^T @ D) and the evaluation. Done with torch's OpenMP threads, those spin
for a few ms after the last parallel operation, on the cores the workers restart on. `pass_threads`
runs torch on one thread and splits the two products over the caller and sleeping helper threads
(compiled row-range products, prefetching the gathered rows when W exceeds the caches).

Two measurements:

1. products: X @ W and X^T @ D (W with 1 and 2 columns, as the full pass with and without the local
   step's probe) with torch on 1 and 2 threads against `pass_threads` with 1 and 2, each after a
   30 ms pause (as after a round of the workers' tasks), median milliseconds;
2. fits: alternating 1- and 2-worker fits (worker threads, the default configuration) to 1e-2
   relative suboptimality with the drained work through torch (`pass_threads` replaced by a no-op)
   and through `pass_threads`, the order swapped every round; the whole fit as a user waits for it
   (history seconds: evaluations of F excluded), and the 2-worker fits' start lag: at each
   evaluation point, how much later the second worker's first task began than the first's (from
   the telemetry's timeline: the difference of the two workers' waits).

    python benchmarks/proxsgd_drained_passes.py --datasets news20 --alpha 1e-5 --rounds 6
    python benchmarks/proxsgd_drained_passes.py --datasets large --skip-fits
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_proxsgd import LOADERS  # noqa: E402

import asyncopt.training.proxsgd as training  # noqa: E402
from asyncopt import ProxSGDClassifier  # noqa: E402
from asyncopt.proxsgd.data import LinearData, column_counts, pass_threads  # noqa: E402
from asyncopt.proxsgd.problem import feature_order  # noqa: E402

LARGE = Path("/tmp/asyncopt-large/large_n2000000_d1000000_k50_p10000_s0.npz")


def load(name: str):
    """(X, y, alpha or None, F* or None): a shipped set, or the large problem's cached matrix
    (bench_proxsgd_large.py makes it) with its reference objective."""
    if name == "large":
        from bench_proxsgd_large import load_problem

        X, y, alpha = load_problem(LARGE)
        reference = json.loads(LARGE.with_name(LARGE.stem + "-reference.json").read_text())
        return X, y, alpha, reference["curve"][-1][1]
    X, y = LOADERS[name]()[:2]
    return X, y, None, None


def products(X, y, rounds: int) -> list[str]:
    counts = column_counts(X)
    data = LinearData.from_array(
        X, (y > 0).astype(float).reshape(-1, 1), column_order=feature_order(counts, 2, None), counts=counts
    )
    if data.transposing is not None:
        data._transposed()
    lines = []
    for k in (1, 2):
        rng = np.random.default_rng(k)
        W = torch.as_tensor(rng.random((data.d, k)) * 0.01)
        D = torch.as_tensor(rng.random((data.n, k)))
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for label, block in (("torch", contextlib.nullcontext), ("pass_threads", pass_threads)):
                    time.sleep(0.03)
                    with block():
                        t = time.perf_counter()
                        data.margins(W)
                        data.transpose_product(D)
                        times.setdefault(f"{label}, {threads} thread{'s' if threads > 1 else ''}", []).append(
                            time.perf_counter() - t
                        )
        torch.set_num_threads(1)
        cells = " | ".join(f"{1e3 * np.median(v):.1f}" for v in times.values())
        if not lines:
            lines += ["| W columns | " + " | ".join(times) + " |", "|---:|" + "---:|" * len(times)]
        lines.append(f"| {k} | {cells} |")
    return lines


def fits(X, y, alpha: float, f_star: float, rounds: int) -> list[str]:
    real = training.pass_threads

    def fit(workers: int, drained: str):
        training.pass_threads = real if drained == "pass_threads" else contextlib.nullcontext
        model = ProxSGDClassifier(
            penalty="l1", alpha=alpha, fit_intercept=False, backend="threads", n_workers=workers,
            threads_per_worker=1, random_state=0, callback=lambda e: e.objective <= f_star * 1.01,
        ).fit(X, y)  # fmt: skip
        lag = 0.0
        if workers == 2:
            a, b = (np.array(line) for line in model.telemetry_["timeline"])
            lag = float(np.abs(a[1:, 2] - b[1:, 2]).sum())
        return model.history_[-1]["seconds"], lag

    fit(2, "torch"), fit(1, "pass_threads")  # (compilations and caches before the clock)
    results: dict[tuple[str, int], list] = {}
    for r in range(rounds):
        for drained in ("torch", "pass_threads") if r % 2 == 0 else ("pass_threads", "torch"):
            for workers in (1, 2):
                results.setdefault((drained, workers), []).append(fit(workers, drained))
    training.pass_threads = real
    lines = [
        "| drained work | 1 worker s | 2 workers s | 2w / 1w (median of rounds) | 2 workers' start lag, ms a fit |",
        "|---|---:|---:|---:|---:|",
    ]
    for drained in ("torch", "pass_threads"):
        one = np.array([s for s, _ in results[(drained, 1)]])
        two = np.array([s for s, _ in results[(drained, 2)]])
        lags = [lag for _, lag in results[(drained, 2)]]
        lines.append(
            f"| {drained} | {np.median(one):.3f} ({one.min():.3f}-{one.max():.3f}) | {np.median(two):.3f} "
            f"({two.min():.3f}-{two.max():.3f}) | {np.median(one / two):.2f}x | {1e3 * np.median(lags):.0f} |"
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="news20")
    parser.add_argument("--alpha", type=float, default=1e-5, help="shipped sets' alpha (the large problem has its own)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--product-rounds", type=int, default=15)
    parser.add_argument("--skip-fits", action="store_true")
    parser.add_argument("--optima", default="benchmarks/results/proxsgd_optima.json")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    lines = [
        "# ProxSGD's drained passes: torch's products against pass_threads",
        "",
        f"Command: `python benchmarks/proxsgd_drained_passes.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    for name in args.datasets.split(","):
        X, y, alpha, f_star = load(name)
        if alpha is None:
            alpha = args.alpha
            f_star = json.loads(Path(args.optima).read_text())[f"{name}/alpha={alpha:g}"]["objective"]
        lines += [f"## {name}" + ("" if name == "large" else f", alpha {alpha:g}"), ""]
        lines += ["X @ W and X^T @ D, ms (median):", ""] + products(X, y, args.product_rounds) + [""]
        if not args.skip_fits:
            lines += [f"Fits to 1e-2, {args.rounds} rounds (median, min-max):", ""]
            lines += fits(X, y, alpha, f_star, args.rounds) + [""]
        print("\n".join(lines), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
