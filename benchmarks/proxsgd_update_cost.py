"""What one update costs a worker, 1 worker against 2, and 2 workers over 1, 2 or 4 servers' blocks.

news20, L1 logistic at alpha 1e-4, the default configuration (processes, 1 torch thread a worker),
6 epochs; microseconds an update = the workers' compute seconds (telemetry) over their updates.
Configurations alternate round by round (the machine is shared and noisy), after one warm-up each.
If 2 workers each cost as much an update as 1 worker, their compute scales 2x; the gap is what the
second worker costs the first (locks, shared lines, caches).

    python benchmarks/proxsgd_update_cost.py --rounds 4 --out benchmarks/results/proxsgd_update_cost.md
"""

from __future__ import annotations

import argparse
import statistics
import warnings

from parallel_timing import report, table

from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_news20

CONFIGS = [(1, "auto"), (2, "auto"), (2, 1), (2, 4)]  # (workers, n_blocks; "auto": one per worker)


def update_cost(X, y, workers, blocks) -> tuple[float, float]:
    model = ProxSGDClassifier(
        penalty="l1", alpha=1e-4, fit_intercept=False, backend="processes", n_workers=workers, n_blocks=blocks,
        threads_per_worker=1, max_epochs=6, tol=None, random_state=0,
    ).fit(X, y)  # fmt: skip
    ws = model.telemetry_["workers"]
    return 1e6 * sum(w["compute_seconds"] for w in ws) / sum(w["steps"] for w in ws), model.history_[-1]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # (6 epochs: the ConvergenceWarning is expected)
    X, y = load_news20()[:2]
    for config in CONFIGS:
        update_cost(X, y, *config)
    got = {config: [] for config in CONFIGS}
    for _ in range(args.rounds):
        for config in CONFIGS:
            got[config].append(update_cost(X, y, *config))
    rows = []
    for (workers, blocks), v in got.items():
        cost, fit = [u for u, _ in v], [s for _, s in v]
        spread = f"{statistics.median(cost):.0f} ({min(cost):.0f}-{max(cost):.0f})"
        rows.append(f"| {workers} | {blocks} | {spread} | {statistics.median(fit):.3f} |")
    report(
        table(
            "A worker's update on news20, 1 against 2 workers (alpha 1e-4, 6 epochs)",
            f"python benchmarks/proxsgd_update_cost.py --rounds {args.rounds}",
            ["workers", "blocks", "us an update, median (min-max)", "whole fit s, median"],
            rows,
        ),
        args.out,
    )


if __name__ == "__main__":
    main()
