"""Microseconds per AsyB-ProxSGD update (a worker's compute + its server's apply), no engine.

Times, in one thread, for a few batch sizes on a9a and news20 (L1 logistic, 4 blocks, with and
without SVRG): `algo.compute` + `algo.apply` on the torch reference path and on the compiled one,
and `algo.run_task` (the fused path the worker engines use: one compiled call per task), so
the per-update overhead that limits small batches is visible as ratios in one run.

    python benchmarks/proxsgd_step_cost.py --out benchmarks/results/proxsgd_step_cost.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from asyncopt.datasets import load_a9a, load_news20
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm
from asyncopt.proxsgd.data import LinearData
from asyncopt.proxsgd.losses import NonconvexRegularizer, get_loss
from asyncopt.proxsgd.problem import LinearProblem, block_bounds
from asyncopt.proxsgd.prox import make_penalty


def make_algo(X, y, batch, compiled, svrg, blocks=4, lazy="off"):
    data = LinearData.from_array(X, y.reshape(-1, 1).astype(np.float64))
    problem = LinearProblem(
        data,
        get_loss("logistic"),
        make_penalty("l1", 1e-4),
        NonconvexRegularizer(0.0),
        False,
        block_bounds(data.d, blocks),
    )
    algo = ProxSGDAlgorithm(problem, batch, 0.1, use_compiled=compiled, variance_reduction=svrg, lazy=lazy)
    algo.prepare()
    if svrg:
        algo.refresh_snapshot(algo.init_params())
    return algo


def time_updates(algo, n, seconds=1.5):
    params = algo.init_params()
    rng = np.random.default_rng(0)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(50):
            batch = torch.from_numpy(rng.integers(0, n, algo.batch_size))
            algo.apply(params, algo.compute(params, batch, 1.0, count), 0)
            count += 1
    return (time.perf_counter() - t0) / count * 1e6


def time_task(algo, n, count=4000):
    """Microseconds per update of `run_task` (the processes engine's path) over one task."""
    from asyncopt.engines import atomics
    from asyncopt.engines.base import Task

    try:  # the engine's compiled task loop; before it, the algorithm's own (regression_check's baseline)
        from asyncopt.engines.compiled import run_task
    except ImportError:
        run_task = type(algo).run_task
    rng = np.random.default_rng(0)
    B = algo.batch_size
    task = Task(rng.integers(0, n, count * B), np.full(count, B), rng.integers(0, 2**62, count), B)
    sync = atomics.new_sync(algo.n_locks).numpy()
    params = algo.init_params()
    t0 = time.perf_counter()
    run_task(algo, params, task, sync)
    algo.flush(params)  # lazy updates: the catch-up of every row, done once per evaluation segment
    return (time.perf_counter() - t0) / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--batches", default="1,4,32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Microseconds per AsyB-ProxSGD update (compute + apply, one thread, no engine)",
        "",
        "Command: `python benchmarks/proxsgd_step_cost.py" + (f" --out {args.out}`" if args.out else "`"),
        "",
        "L1 logistic, alpha 1e-4, 4 blocks, no intercept. torch and compiled: `compute` + `apply`; "
        "fused: `run_task` over 4,000 batches, eager prox or lazy (just-in-time, flush included). "
        "Ratio: torch / fused eager.",
        "",
        "| data | batch | SVRG | torch (us) | compiled (us) | fused task (us) | fused lazy (us) | ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, loader in (("a9a", load_a9a), ("news20", load_news20)):
        X, y, _, _ = loader()
        for batch in [int(b) for b in args.batches.split(",")]:
            for svrg in (False, True):
                slow = time_updates(make_algo(X, y, batch, False, svrg), X.shape[0])
                quick = time_updates(make_algo(X, y, batch, True, svrg), X.shape[0])
                fused = time_task(make_algo(X, y, batch, True, svrg), X.shape[0])
                lazy = time_task(make_algo(X, y, batch, True, svrg, lazy="on"), X.shape[0])
                vr = "yes" if svrg else "no"
                row = (
                    f"| {name} | {batch} | {vr} | {slow:,.0f} | {quick:,.1f} | {fused:,.1f} | {lazy:,.1f} "
                    f"| {slow / fused:.0f}x |"
                )
                print(row, flush=True)
                lines.append(row)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
