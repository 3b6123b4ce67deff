"""What an update costs a worker of the compiled task loop: alone, beside a second worker on its own
copy of everything, and beside one sharing the parameters and the servers (a real 2-worker run).
Also: eager updates that visit each block's support against the sweep of the whole block.

news20, L1 logistic at alpha 1e-4, the default configuration's algorithm (captured from a 3-epoch
threads fit, batch 32, full push, SVRG anchored at that fit's model); tasks of 400 batches run by
threads that call the engine's compiled loop (`compiled.run_task`, no Python per batch), each run
from the anchor's parameters.
Microseconds of thread CPU time per update, so a thread waiting on a lock counts (it spins), and
time the machine gives to other work does not. Configurations alternate within each round:

- alone: one thread;
- private: two threads, each with its own parameters, servers' state and spinlocks (two copies of
  the problem): nothing written is shared;
- parameters shared: two threads on the same parameters, each with its own servers' state and
  spinlocks (racy, for timing only): the cache lines of the coefficients both write;
- shared: two threads on the same parameters, servers and spinlocks (what 2 workers run);
- sweep / listed: every block in the sweep mode (fast.SUPPORT_DENSE: the whole block each update,
  as before session 19) or visiting its support (the default; listed again before each run: each
  block's first update sweeps and lists it). The configurations without "sweep" are listed.

    python benchmarks/proxsgd_sharing_cost.py --rounds 4 --out benchmarks/results/proxsgd_sharing_cost.md
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import warnings

import numpy as np
import torch
from parallel_timing import in_threads, report, table

import asyncopt.estimators.proxsgd as estimator_module
from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_news20
from asyncopt.engines import atomics, compiled
from asyncopt.engines.base import Task
from asyncopt.proxsgd import fast

BATCHES = 400


def captured_algorithms(X, y, count):
    """`count` algorithms as the estimator builds them for 2 threads workers, and the last fit's model."""
    got, run = [], estimator_module.run_proxsgd

    def keep(algo, *args, **kwargs):
        got.append(algo)
        return run(algo, *args, **kwargs)

    estimator_module.run_proxsgd = keep
    try:
        for _ in range(count):
            model = ProxSGDClassifier(penalty="l1", alpha=1e-4, fit_intercept=False, backend="threads", n_workers=2,
                                      max_epochs=3, tol=None, random_state=0).fit(X, y)  # fmt: skip
    finally:
        estimator_module.run_proxsgd = run
    return got, model


def per_update(workers, rng, n, start, mode=fast.SUPPORT_SPARSE):
    """Thread CPU microseconds per update of each (algo, params, sync) in `workers`, run at once from
    the parameters `start` (the anchor: each run starts where a drained point would leave it)."""
    tasks = [Task(rng.integers(0, n, BATCHES * 32), np.full(BATCHES, 32), rng.integers(0, 2**62, BATCHES), 32)
             for _ in workers]  # fmt: skip
    for algo, params, _ in workers:
        params.copy_(start)
        if mode == fast.SUPPORT_DENSE:
            algo._support["state"][:, 1] = mode
        else:  # listed: each block sweeps once and lists its support (a support left by sweeps is stale)
            algo.flush(params)
    out, start = [0.0] * len(workers), threading.Barrier(len(workers))

    def work(i):
        algo, params, sync = workers[i]
        start.wait()
        t = time.thread_time()
        compiled.run_task(algo, params, tasks[i], sync)
        out[i] = 1e6 * (time.thread_time() - t) / BATCHES

    in_threads(work, len(workers))
    return statistics.mean(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # (3 epochs: the ConvergenceWarning is expected)
    X, y = load_news20()[:2]
    (a1, a2), model = captured_algorithms(X, y, 2)
    start = a1.init_params()
    start[:-1, 0] = torch.as_tensor(model.coef_.ravel())
    for algo in (a1, a2):
        algo.refresh_snapshot(start)
        algo.flush(start)
    p1, p2 = start.clone(), start.clone()
    s1, s2 = atomics.new_sync(a1.n_locks).numpy(), atomics.new_sync(a2.n_locks).numpy()
    configs = {
        "alone": ([(a1, p1, s1)], fast.SUPPORT_SPARSE),
        "private": ([(a1, p1, s1), (a2, p2, s2)], fast.SUPPORT_SPARSE),
        "parameters shared": ([(a1, p1, s1), (a2, p1, s2)], fast.SUPPORT_SPARSE),
        "shared, listed": ([(a1, p1, s1), (a1, p1, s1)], fast.SUPPORT_SPARSE),
        "shared, sweep": ([(a1, p1, s1), (a1, p1, s1)], fast.SUPPORT_DENSE),
        "alone, sweep": ([(a1, p1, s1)], fast.SUPPORT_DENSE),
    }
    rng = np.random.default_rng(0)
    for workers, mode in configs.values():  # warm-up
        per_update(workers, rng, X.shape[0], start, mode)
    got = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (workers, mode) in configs.items():
            got[name].append(per_update(workers, rng, X.shape[0], start, mode))
    alone = statistics.median(got["alone"])
    rows = [
        f"| {name} | {statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f}) | {statistics.median(v) / alone:.2f} |"
        for name, v in got.items()
    ]
    per_update(configs["alone"][0], rng, X.shape[0], start)  # (the supports' sizes, listed again)
    listed = a1._support["state"][:, 0].tolist()
    report(
        table(
            "A compiled update on news20: alone, beside a private worker, and sharing (alpha 1e-4, batch 32)",
            f"python benchmarks/proxsgd_sharing_cost.py --rounds {args.rounds}",
            ["configuration", "us an update, median (min-max)", "/ alone"],
            rows,
        )
        + f"\nRows listed in the blocks' supports at the end: {listed} of {X.shape[1]:,} columns; "
        f"non-zeros of the model: {int(np.count_nonzero(p1.numpy()))}.\n",
        args.out,
    )


if __name__ == "__main__":
    main()
