"""The EigenPro Ray chaos test's fit, run many times: how often a run with killed actors ends as an
undisturbed one does, and what the others look like (for rare outcomes a single test run cannot show).

The fit and the killer are tests/test_ray_chaos.py's: EigenProClassifier on MNIST's first 10,000
training images (bandwidth 10, 4 epochs, 2 Ray servers, 2 workers of 1 thread), a killer thread that
polls the servers' clocks and kills actors by name. Plans (--plans, each run in turn):

- both: server 1 killed at clock 20, then a worker at clock 60 (the test's plan);
- late: server 1 killed at clock 28 of an epoch's 29 updates (the kill often lands at the drained
  point, where before session 29 the whole epoch's updates were lost);
- none: nothing killed (the undisturbed reference).

One Ray session for all runs, on loopback. A row per run: seconds, train MSE after each epoch, the
failures (updates run again), lost updates, torn reads, each server's updates.

    python benchmarks/ray_chaos_runs.py --rounds 6 --plans both,late,none --out benchmarks/results/ray_chaos_runs.md
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_ray_chaos import _kill_after_updates  # noqa: E402 - the test's killer, not a copy

from asyncopt import ActorFailureWarning, EigenProClassifier  # noqa: E402
from asyncopt.datasets import load_mnist  # noqa: E402

PLANS = {
    "both": [(20, "-server-1-"), (60, "-worker-")],
    "late": [(28, "-server-1-")],
    "none": [],
}


def one_run(ray, X, y, plan: list) -> dict:
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_after_updates, args=(ray, stop, plan, killed))
    killer.start()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ActorFailureWarning)  # (the records are in the telemetry)
            clf = EigenProClassifier(
                bandwidth=10.0, epochs=4, random_state=0, n_servers=2, backend="ray", n_workers=2, threads_per_worker=1
            ).fit(X, y)
    finally:
        stop.set()
        killer.join()
    t = clf.telemetry_
    return {
        "seconds": time.perf_counter() - t0,
        "mse": [h["train_mse"] for h in clf.history_],
        "failures": [
            f"{f['actor']} {f['index']} at {f['samples']:,}"
            + (f", {f['redone_updates']} redone" if "redone_updates" in f else "")
            for f in t["failures"]
        ],
        "lost": t["lost_updates"],
        "torn": t["reads_torn"],
        "server_updates": t["server_updates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plans", default="both,late,none")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import ray

    ray.init(include_dashboard=False, num_cpus=4)
    X, y = load_mnist()[:2]
    X, y = X[:10_000], y[:10_000]
    rows = []
    for r in range(args.rounds):
        for name in args.plans.split(","):
            res = one_run(ray, X, y, PLANS[name])
            mse = ", ".join(f"{m:.4g}" for m in res["mse"])
            rows.append(
                f"| {name} | {r + 1} | {res['seconds']:.1f} | {mse} | {'; '.join(res['failures']) or '-'} "
                f"| {res['lost']} | {res['torn']} | {res['server_updates']} |"
            )
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# The EigenPro Ray chaos test's fit, run many times",
            "",
            f"Command: `python benchmarks/ray_chaos_runs.py --rounds {args.rounds} --plans {args.plans}`",
            "",
            "| plan | round | s | train MSE by epoch | failures | lost | torn reads | server updates |",
            "|---|---:|---:|---|---|---|---:|---|",
            *rows,
            "",
        ]
    )
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
