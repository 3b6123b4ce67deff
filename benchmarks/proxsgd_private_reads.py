"""Where two workers' shared-coefficient cost lies: in the reads of the minibatch's margins, or in the
servers' writes? Two threads run the compiled task loop on news20 as in proxsgd_sharing_cost.py, but
each worker kernel reads its own private copy of the parameters (fixed at a point one task away from
the SVRG anchor, so the variance-reduced gradients are not zero), while the servers' writes go to
the shared parameters. Timing only: the private copies are never refreshed, so the updates are not
the algorithm's (a worker that pulls a copy every k updates would pay the copies on top).

Microseconds of thread CPU time per update (batch 32, alpha 1e-4, the default configuration's
algorithm captured from a threads fit); configurations alternate within each round:
- alone / shared: one thread, two threads on the same parameters and servers (fresh reads);
- alone, private reads / shared writes, private reads: the same, each worker reading its own copy.

    python benchmarks/proxsgd_private_reads.py --rounds 8 --out benchmarks/results/proxsgd_private_reads.md
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
from proxsgd_sharing_cost import BATCHES, captured_algorithms

from asyncopt.datasets import load_news20
from asyncopt.engines import atomics, compiled
from asyncopt.engines.base import Task, TaskKernels

PARAMS_ARG = 4  # the parameters' place among the worker kernel's arguments (ProxSGDAlgorithm._task_args)


def per_update(workers, rng, n, start) -> float:
    """Thread CPU microseconds per update, the mean of `workers` (algo, params, reads, sync) run at once."""
    tasks = [Task(rng.integers(0, n, BATCHES * 32), np.full(BATCHES, 32), rng.integers(0, 2**62, BATCHES), 32)
             for _ in workers]  # fmt: skip
    for algo, params, _, _ in workers:
        params.copy_(start)
        algo.flush(params)
    out, barrier = [0.0] * len(workers), threading.Barrier(len(workers))

    def work(i):
        algo, params, reads, sync = workers[i]
        worker, server = algo.task_args(params, tasks[i])
        if not np.shares_memory(worker[PARAMS_ARG], params.numpy()):
            raise RuntimeError("the worker kernel's arguments changed: PARAMS_ARG no longer points at the parameters")
        worker = (*worker[:PARAMS_ARG], reads.numpy(), *worker[PARAMS_ARG + 1 :])
        loop = compiled._runner(TaskKernels(*algo.task_kernels()))
        stalenesses = np.full(BATCHES, -1, dtype=np.int64)
        barrier.wait()
        t = time.thread_time()
        task = tasks[i]
        loop(sync, task.rows, task.sizes, task.keys, False, stalenesses, compiled.LOCK_SPINS, algo.n_locks, 0,
             worker, server)  # fmt: skip
        out[i] = 1e6 * (time.thread_time() - t) / BATCHES

    in_threads(work, len(workers))
    return statistics.mean(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # (3 epochs: the ConvergenceWarning is expected)
    X, y = load_news20()[:2]
    (algo, _), model = captured_algorithms(X, y, 2)
    start = algo.init_params()
    start[:-1, 0] = torch.as_tensor(model.coef_.ravel())
    algo.refresh_snapshot(start)
    algo.flush(start)
    shared, sync = start.clone(), atomics.new_sync(algo.n_locks).numpy()
    rng = np.random.default_rng(0)
    per_update([(algo, shared, shared, sync)], rng, X.shape[0], start)  # one task from the anchor
    moved = shared.clone()
    copies = moved.clone(), moved.clone()
    configs = {
        "alone": [(algo, shared, shared, sync)],
        "shared": [(algo, shared, shared, sync)] * 2,
        "alone, private reads": [(algo, shared, copies[0], sync)],
        "shared writes, private reads": [(algo, shared, copies[0], sync), (algo, shared, copies[1], sync)],
    }
    for workers in configs.values():  # warm-up
        per_update(workers, rng, X.shape[0], start)
    got = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, workers in configs.items():
            got[name].append(per_update(workers, rng, X.shape[0], start))
    med = {name: statistics.median(v) for name, v in got.items()}
    base = {name: "alone, private reads" if "private" in name else "alone" for name in got}
    rows = [
        f"| {name} | {med[name]:.0f} ({min(v):.0f}-{max(v):.0f}) | {med[name] / med[base[name]]:.2f} |"
        for name, v in got.items()
    ]
    report(
        table(
            "Two workers' sharing cost: fresh reads against private copies (news20, alpha 1e-4, batch 32)",
            f"python benchmarks/proxsgd_private_reads.py --rounds {args.rounds}",
            ["configuration", "us an update, median (min-max)", "/ one thread of the same reads"],
            rows,
        ),
        args.out,
    )


if __name__ == "__main__":
    main()
