"""Speedup of asynchronous EigenPro workers on full MNIST, side by side in one run.

Run:  .venv/bin/python benchmarks/bench_workers.py [--target 0.98] [--out benchmarks/results/workers.md]

Time to the target test accuracy (setup and worker start-up included, evaluations excluded;
test accuracy measured 10 times an epoch on the 10,000 MNIST test images) for:
1 worker of 1 thread (serial engine), 1 worker of 2 threads (serial engine), 1 and 2 workers of
1 thread with the processes engine (first fits, which spawn the workers, and a next fit, which
reuses them from the pool), 2 workers of 1 thread with the threads engine, and the
synchronous data-parallel baseline (2 workers of 1 thread, a barrier every step, the same total
batch). Automatic settings everywhere: P asynchronous workers take batches of m/P (in-flight rule).
"""

from __future__ import annotations

import argparse
import time

import torch

import asyncopt
from asyncopt import EigenProClassifier
from asyncopt.datasets import load_mnist

CONFIGS = [
    ("1 worker x 1 thread (serial)", dict(backend="serial"), 1),
    ("1 worker x 2 threads (serial)", dict(backend="serial"), 2),
    (
        "1 worker x 1 thread (processes, first fit: spawns)",
        dict(backend="processes", n_workers=1, threads_per_worker=1, _cold=True),
        2,
    ),
    (
        "2 workers x 1 thread (processes, first fit: spawns)",
        dict(backend="processes", n_workers=2, threads_per_worker=1, _cold=True),
        2,
    ),
    (
        "2 workers x 1 thread (processes, next fit: pool reused)",
        dict(backend="processes", n_workers=2, threads_per_worker=1),
        2,
    ),
    (
        "2 workers x 1 thread (processes, pool reused, coordinator applies: before session 7)",
        dict(backend="processes", n_workers=2, threads_per_worker=1, _workers_apply=False),
        2,
    ),
    ("2 workers x 1 thread (threads)", dict(backend="threads", n_workers=2, threads_per_worker=1), 2),
    (
        "2 workers x 1 thread, synchronous baseline (threads)",
        dict(backend="threads", n_workers=2, threads_per_worker=1, synchronous=True),
        2,
    ),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--max-epochs", type=float, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", default=None, help="comma-separated configuration names (default: all)")
    args = parser.parse_args(argv)
    X, y, Xt, yt = load_mnist()
    rows = []
    chosen = [c for c in CONFIGS if args.only is None or c[0] in args.only.split(",")]
    for name, params, main_threads in chosen:
        torch.set_num_threads(main_threads)
        params = dict(params)
        workers_apply = params.pop("_workers_apply", True)
        if params.pop("_cold", False):  # a first fit: no worker processes kept from an earlier one
            asyncopt.shutdown_worker_pool()
        clf = EigenProClassifier(
            bandwidth=10.0,
            epochs=args.max_epochs,
            evals_per_epoch=10,
            random_state=0,
            callback=lambda e: e.val_metric >= args.target,
            **params,
        )
        clf._workers_apply = workers_apply  # (an instance attribute: the engine comparison only)
        t0 = time.perf_counter()
        clf.fit(X, y, X_val=Xt, y_val=yt)
        wall = time.perf_counter() - t0
        last = clf.history_[-1]
        reached = last["val_metric"] >= args.target
        tel = clf.telemetry_
        rows.append(
            (
                name,
                last["seconds"] if reached else None,
                last["epoch"],
                last["val_metric"],
                clf.batch_size_,
                tel["staleness"]["mean"],
                tel["staleness"]["max"],
                sum(w["wait_seconds"] for w in tel["workers"]),
                wall,
                tel["startup_seconds"],
            )
        )
        print(rows[-1], flush=True)
    base = rows[0][1]
    lines = [
        f"# Workers benchmark: time to {args.target:.1%} test accuracy, full MNIST (60,000), Laplacian h=10",
        "",
        "Command: `python benchmarks/bench_workers.py"
        + (f" --only '{args.only}'" if args.only else "")
        + (f" --out {args.out}`" if args.out else "`"),
        "",
        "| configuration | seconds to target | speedup vs first row | epochs | test acc | batch per worker "
        "| staleness mean / max | worker wait s | wall s (with evals) | worker start-up s (in seconds to target) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, secs, ep, acc, m, smean, smax, wait, wall, startup in rows:
        speed = f"{base / secs:.2f}x" if secs and base else "n/a"
        lines.append(
            f"| {name} | {f'{secs:.1f}' if secs else 'not reached'} | {speed} | {ep:.1f} | {acc:.4f} | {m} "
            f"| {smean:.2f} / {smax} | {wait:.1f} | {wall:.0f} | {startup:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
