"""A/B of ProxSGD's compiled task loop in one process: this tree's kernels (asyncopt/proxsgd/fast.py)
against a baseline commit's, on the large problem's kind of data (bench_proxsgd_large.py: Zipf-like
hashed features, ~50 a row, lazy updates with the block push, as the default configuration runs it).

The algorithm is the default configuration's, captured from a 2-epoch threads fit of n rows of the
problem, its SVRG anchor at that fit's model. Each round runs one task of --batches batches through
both loops from the same parameters and lazy counts (baseline and current in alternating order), one
thread, and records thread CPU nanoseconds per stored entry of the batches. Both loops must leave
the same parameters (checked: a kernel change that moves the arithmetic shows here). Numba compiles
both into a temporary cache (NUMBA_CACHE_DIR), so nothing is left in the package's folders.

    python benchmarks/task_loop_ab.py --baseline HEAD~1 --blocks 1 2 --out benchmarks/results/task_loop_ab.md

The data: the cached full-size problem's first --n rows when bench_proxsgd_large.py has made it
(--cache-dir), else a problem of --n rows and --d columns generated the same way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRATCH = tempfile.mkdtemp(prefix="asyncopt-task-loop-ab-")
os.environ["NUMBA_CACHE_DIR"] = SCRATCH  # (before numba loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_proxsgd_large import generate, load_problem  # noqa: E402
from parallel_timing import report, table  # noqa: E402

import asyncopt.estimators.proxsgd as estimator_module  # noqa: E402
from asyncopt import ProxSGDClassifier  # noqa: E402
from asyncopt.engines import atomics, compiled  # noqa: E402
from asyncopt.engines.base import Task, TaskKernels  # noqa: E402
from asyncopt.proxsgd import fast  # noqa: E402


def baseline_kernels(commit: str):
    """The baseline commit's fast.py, imported as a module of its own (its task kernels)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:asyncopt/proxsgd/fast.py"], cwd=HERE, check=True, capture_output=True, text=True
    ).stdout
    folder = Path(SCRATCH) / "baseline"
    folder.mkdir(exist_ok=True)
    (folder / "fast_baseline.py").write_text(source)
    sys.path.insert(0, str(folder))
    import fast_baseline

    return TaskKernels(fast_baseline.task_worker_step, fast_baseline.task_route, fast_baseline.task_server_apply)


def problem(args):
    full = Path(args.cache_dir) / "large_n2000000_d1000000_k50_p10000_s0.npz"
    if full.exists():
        X, y, alpha = load_problem(full)
        return X[: args.n], y[: args.n], alpha, f"the cached 2*10^6 x 10^6 problem's first {args.n:,} rows"
    X, y, _ = generate(args.n, args.d, 50, max(1, args.d // 100), 0)
    alpha = float(np.abs(X.T @ y).max()) / (2 * args.n) / 3000
    return X, y, alpha, f"a generated {args.n:,} x {args.d:,} problem (bench_proxsgd_large.generate, seed 0)"


def captured_algorithm(X, y, alpha, blocks):
    """The algorithm a 1-worker threads fit with `blocks` blocks builds, after 2 epochs, and its model."""
    got, run = [], estimator_module.run_proxsgd

    def keep(algo, *a, **k):
        got.append(algo)
        return run(algo, *a, **k)

    estimator_module.run_proxsgd = keep
    try:
        model = ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, backend="threads", n_workers=1,
                                  threads_per_worker=1, n_blocks=blocks, max_epochs=2, tol=None,
                                  random_state=0).fit(X, y)  # fmt: skip
    finally:
        estimator_module.run_proxsgd = run
    return got[0], model


def compare(X, y, alpha, blocks, loops, rounds, batches):
    algo, model = captured_algorithm(X, y, alpha, blocks)
    if algo._lazy_state is None:
        raise SystemExit(f"this problem's updates are not lazy with {blocks} blocks: nothing of the lazy path to time")
    params = algo.init_params()
    params[:-1, 0] = torch.as_tensor(model.coef_.ravel())
    algo.refresh_snapshot(params)
    algo.flush(params)
    start, sync, B = params.clone(), atomics.new_sync(algo.n_locks).numpy(), algo.batch_size

    def run(loop, seed, count):
        algo.flush(params)  # (resets the lazy counts) then the same start for every run
        params.copy_(start)
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, X.shape[0], count * B)
        task = Task(rows, np.full(count, B), rng.integers(0, 2**62, count), B)
        worker, server = algo.task_args(params, task)
        stalenesses = np.full(count, -1, dtype=np.int64)
        t = time.thread_time()
        status = loop(sync, task.rows, task.sizes, task.keys, False, stalenesses, compiled.LOCK_SPINS, algo.n_locks,
                      0, worker, server)  # fmt: skip
        seconds = time.thread_time() - t
        if status[0] != compiled.TASK_DONE:
            raise RuntimeError(f"the task loop stopped with status {status}")
        return 1e9 * seconds / int(np.diff(X.indptr)[rows].sum()), params.clone()

    for loop in loops.values():  # (compiled, and the first touches, before the clock)
        run(loop, 0, 50)
    got, same = {name: [] for name in loops}, True
    for r in range(rounds):
        ends = {}
        for name in list(loops) if r % 2 == 0 else list(loops)[::-1]:
            ns, ends[name] = run(loops[name], r + 1, batches)
            got[name].append(ns)
        same = same and torch.equal(*ends.values())
    return got, same, algo.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="the commit whose fast.py is the baseline")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--cache-dir", default="/tmp/asyncopt-large")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # (2 epochs: the ConvergenceWarning is expected)
    torch.set_num_threads(1)
    X, y, alpha, source = problem(args)
    loops = {
        f"baseline ({args.baseline})": compiled._runner(baseline_kernels(args.baseline)),
        "current": compiled._runner(TaskKernels(fast.task_worker_step, fast.task_route, fast.task_server_apply)),
    }
    rows = []
    for blocks in args.blocks:
        got, same, batch = compare(X, y, alpha, blocks, loops, args.rounds, args.batches)
        base, current = got.values()
        ratios = [c / b for b, c in zip(base, current, strict=True)]
        rows.append(
            f"| {blocks} | {batch} | {statistics.median(base):.1f} | {statistics.median(current):.1f} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {'yes' if same else 'NO'} |"
        )
        print(rows[-1], flush=True)
    command = f"python benchmarks/task_loop_ab.py --baseline {args.baseline} --blocks {' '.join(map(str, args.blocks))}"
    text = table(
        f"The compiled task loop, baseline against current: ns of thread CPU per stored entry ({source}, "
        f"1 thread, {args.rounds} alternating rounds of {args.batches} batches)",
        command + ("" if args.n == 300_000 else f" --n {args.n}"),
        ["blocks", "batch", "baseline", "current", "current / baseline, median (min-max)", "same parameters"],
        rows,
    )
    report(text, args.out)


if __name__ == "__main__":
    main()
