"""The automatic batch's floor: the default configuration at batch 16 against 32, 1 and 2 workers.

The automatic batch is the critical batch beta / lambda_1 (about 2-3 on a9a and news20) raised to a
floor, AUTO_BATCH_MIN, which was set to 32 when an update cost a Python call. Updates are compiled
now (the engine's task loop), so this measures what the floor costs or buys: L1 logistic regression
(no intercept) on a9a and news20 at two alphas, every other parameter at its default, processes
engine with a warm pool, the whole fit timed (setup included, evaluations excluded). Arms alternate
within each round (the machine is shared and noisy); cells are medians over the rounds of the
seconds to relative suboptimality 1e-2 / 1e-3 (F* from results/proxsgd_optima.json).

    python benchmarks/proxsgd_batch_floor.py --rounds 5 --out benchmarks/results/proxsgd_batch_floor.md
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_a9a, load_news20

TARGETS = (1e-2, 1e-3)
LOADERS = {"a9a": load_a9a, "news20": load_news20}


def seconds_to(model, f_star: float, target: float) -> float:
    """Training seconds of the first evaluation within `target` of F*, inf if none."""
    return next((h["seconds"] for h in model.history_ if h["objective"] <= f_star * (1 + target)), float("inf"))


def fit(X, y, alpha, f_star, workers, batch, seed, backend="processes"):
    return ProxSGDClassifier(
        penalty="l1",
        alpha=alpha,
        fit_intercept=False,
        backend=backend,
        n_workers=workers,
        threads_per_worker=1,
        batch_size=batch,
        random_state=seed,
        callback=lambda entry: entry.objective <= f_star * (1 + TARGETS[-1]),
    ).fit(X, y)


def cell(values) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if len(finite) < len(values):
        return f"{np.median(finite):.3f} ({len(values) - len(finite)} missed)" if finite else "-"
    return f"{np.median(values):.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="16,32")
    parser.add_argument("--datasets", default="a9a,news20")
    parser.add_argument("--alphas", default="1e-4,1e-5")
    parser.add_argument("--optima", default="benchmarks/results/proxsgd_optima.json")
    parser.add_argument("--backend", default="processes", choices=["processes", "threads"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optima = json.loads(Path(args.optima).read_text())
    batches = [int(b) for b in args.batches.split(",")]
    arms = [(workers, batch) for batch in batches for workers in (1, 2)]
    lines = [
        "# The automatic batch's floor: default configuration at each batch, 1 and 2 workers",
        "",
        f"Command: `python benchmarks/proxsgd_batch_floor.py --rounds {args.rounds} --batches {args.batches} "
        f"--datasets {args.datasets} --alphas {args.alphas} --backend {args.backend}`  ",
        f"{args.backend} engine ({'pool warm, ' if args.backend == 'processes' else ''}no intercept), "
        "1 torch thread a worker, 2 cores; whole fit timed (setup included, "
        f"evaluations excluded); medians of {args.rounds} rounds, arms alternating in each. "
        "Cells: seconds to relative suboptimality 1e-2 / 1e-3; 2w/1w: the 1-worker fit's time over the 2-worker "
        "fit's at the same batch, to 1e-2.",
        "",
        "| data | alpha | batch | 1 worker | 2 workers | 2w/1w to 1e-2 | epochs to 1e-2 (1w / 2w) |",
        "|---|---|---:|---|---|---:|---|",
    ]
    for name in args.datasets.split(","):
        X, y, _, _ = LOADERS[name]()
        fit(X, y, 1e-4, 1.0, 2, 32, 0, args.backend)  # the pool's processes started and their kernels loaded
        for alpha in map(float, args.alphas.split(",")):
            f_star = optima[f"{name}/alpha={alpha:g}"]["objective"]
            times = {arm: {t: [] for t in TARGETS} for arm in arms}
            epochs = {arm: [] for arm in arms}
            for seed in range(args.rounds):
                for arm in arms:
                    model = fit(X, y, alpha, f_star, *arm, seed, args.backend)
                    for t in TARGETS:
                        times[arm][t].append(seconds_to(model, f_star, t))
                    epochs[arm].append(
                        next((h["epoch"] for h in model.history_ if h["objective"] <= f_star * 1.01), float("inf"))
                    )
            for batch in batches:
                one, two = times[(1, batch)], times[(2, batch)]
                ratio = np.median(one[1e-2]) / np.median(two[1e-2])
                row = (
                    f"| {name} | {alpha:g} | {batch} | {cell(one[1e-2])} / {cell(one[1e-3])} "
                    f"| {cell(two[1e-2])} / {cell(two[1e-3])} | {ratio:.2f}x "
                    f"| {np.median(epochs[(1, batch)]):.0f} / {np.median(epochs[(2, batch)]):.0f} |"
                )
                lines.append(row)
                print(row, flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        path = Path(args.out)
        previous = path.read_text() + "\n" if path.exists() else ""
        path.write_text(previous + text)
    print(text)


if __name__ == "__main__":
    main()
