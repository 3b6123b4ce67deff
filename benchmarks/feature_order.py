"""The run's feature order (popular features first, dealt over the blocks: problem.feature_order)
against the user's order, in alternating fits of the default configuration.

ProxSGDClassifier keeps the features most stored entries first on sparse CPU data with 2^15 columns
or more (both cases below), so the coefficients every minibatch reads and writes share cache lines;
ASYNCOPT_FEATURE_ORDER=given|frequency forces the user's order or the run's (this script's A/B
switch). Cases:

- news20, L1 logistic at alpha 1e-4 (and 1e-5 with --alphas), each fit stopped at relative
  suboptimality 1e-2 (F* from results/proxsgd_optima.json): the whole fit as a user waits for it,
  its setup, and the workers' compute (summed over workers, divided by their number);
- --large N: the synthetic wide problem of bench_proxsgd_large.py (N rows, --d columns, 50 entries a
  row, Zipf-like popularity with the popular columns scattered over the column numbers, as hashing
  makes them), 3 epochs a fit (no target: its F* is not computed here), the same parts, and F after
  the fit (computed in the user's order).

Median over --rounds rounds; in each round the orders alternate (which goes first alternates too)
for 1 and for 2 workers, the pool warm (a warm-up fit of each first).

    python benchmarks/feature_order.py --rounds 5 --large 400000 --out benchmarks/results/feature_order.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_proxsgd import LOADERS  # noqa: E402
from bench_proxsgd_large import generate, objective  # noqa: E402

from asyncopt import ProxSGDClassifier  # noqa: E402

ORDERS = ("given", "frequency")


def fit(X, y, alpha, workers, order, f_star=None, epochs=30):
    os.environ["ASYNCOPT_FEATURE_ORDER"] = order
    stop = None if f_star is None else (lambda e: e["objective"] <= f_star * 1.01)
    model = ProxSGDClassifier(
        penalty="l1", alpha=alpha, fit_intercept=False, backend="processes", n_workers=workers,
        threads_per_worker=1, random_state=0, max_epochs=epochs, tol=None if f_star is None else 1e-4, callback=stop,
    ).fit(X, y)  # fmt: skip
    t, last = model.telemetry_, model.history_[-1]
    return {
        "seconds": last["seconds"],
        "setup": t["setup_seconds"],
        "compute": sum(w["compute_seconds"] for w in t["workers"]) / workers,
        "epochs": last["epoch"],
        "reached": f_star is None or last["objective"] <= f_star * 1.01,
        "F": objective(X, y, model.coef_.ravel(), alpha),
    }


def compare(X, y, alpha, rounds, f_star=None, epochs=30):
    runs = {(o, w): [] for o in ORDERS for w in (1, 2)}
    for o in ORDERS:
        for w in (1, 2):
            fit(X, y, alpha, w, o, f_star, epochs)  # warm: the pool, compiled code
    for r in range(rounds):
        for w in (1, 2):
            for o in ORDERS if r % 2 == 0 else ORDERS[::-1]:
                runs[(o, w)].append(fit(X, y, alpha, w, o, f_star, epochs))
                print(r, w, o, {k: round(v, 4) for k, v in runs[(o, w)][-1].items()}, flush=True)
    lines = [
        "| workers | order | whole fit s | setup s | compute s | epochs | F | whole: given / this |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in (1, 2):
        for o in ORDERS:
            rs = runs[(o, w)]
            med = {k: float(np.median([r[k] for r in rs])) for k in ("seconds", "setup", "compute", "epochs", "F")}
            ratios = [g["seconds"] / r["seconds"] for g, r in zip(runs[("given", w)], rs, strict=True)]
            short = sum(not r["reached"] for r in rs)
            lines.append(
                f"| {w} | {o} | {med['seconds']:.3f} | {med['setup']:.3f} | {med['compute']:.3f} | {med['epochs']:.1f} "
                f"| {med['F']:.6f} | {np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                + (f", {short} short of the target" if short else "")
                + " |"
            )
    for o in ORDERS:
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[(o, 1)], runs[(o, 2)], strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        lines.append(f"\n2 workers / 1 worker, {o} order: {np.median(ratios):.2f}x ({spread})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="1e-4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large", type=int, default=0, help="rows of the synthetic wide problem (0: skip it)")
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--optima", default=str(Path(__file__).parent / "results" / "proxsgd_optima.json"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optima = json.loads(Path(args.optima).read_text())
    command = f"python benchmarks/feature_order.py --alphas {args.alphas} --rounds {args.rounds}"
    command += f" --large {args.large} --d {args.d}" if args.large else ""
    lines = [
        "# The run's feature order (popular features first) against the user's",
        "",
        f"Command: `{command}`  ",
        "Default configuration, processes engine, 1 torch thread a worker, 2 cores; medians over "
        f"{args.rounds} rounds of alternating fits (the script's docstring). 'given / this': the whole "
        "fit's ratio, median and range over the rounds.",
        "",
    ]
    X, y = LOADERS["news20"]()[:2]
    for alpha in map(float, args.alphas.split(",")):
        f_star = optima[f"news20/alpha={alpha:g}"]["objective"]
        lines += [f"## news20, alpha {alpha:g}, to 1e-2", "", *compare(X, y, alpha, args.rounds, f_star), ""]
        print("\n".join(lines[-10:]), flush=True)
    if args.large:
        X, y, _ = generate(args.large, args.d, 50, args.d // 100, 0)
        alpha = float(np.abs(X.T @ y).max()) / (2 * args.large) / 3000
        lines += [
            f"## synthetic wide problem, n = {args.large:,}, d = {args.d:,}, alpha_max / 3000, 3 epochs", "",
            *compare(X, y, alpha, args.rounds, None, epochs=3), "",
        ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
