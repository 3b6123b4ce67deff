"""ProxSGD's default configuration on the shipped sets: how close it gets to the optimum, and when.

Run:  .venv/bin/python benchmarks/proxsgd_defaults.py [--out benchmarks/results/proxsgd_defaults.md]

L1 logistic regression without intercept, as in bench_proxsgd.py, on a9a and news20 at alpha 1e-4
and 1e-5; F* from results/proxsgd_optima.json (liblinear at tol 1e-8). For each case, side by side
in one run: ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False) with every other
parameter at its default (serial engine), and the same with variance_reduction="none" (plain SGD
with the plateau schedule, the earlier default). Seconds are training seconds up to the first
evaluation (once an epoch) at the target (setup included, evaluations excluded); "-" = not reached
within the default epoch budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning

from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_a9a, load_news20

CASES = [("a9a", 1e-4), ("a9a", 1e-5), ("news20", 1e-4), ("news20", 1e-5)]
CONFIGS = [("default", {}), ("variance_reduction='none'", {"variance_reduction": "none"})]


def first_at(history, f_star, target):
    for h in history:
        if (h["objective"] - f_star) / f_star <= target:
            return h["epoch"], h["seconds"]
    return None


def target_cells(history, f_star, targets=(1e-2, 1e-3)) -> list[str]:
    """Per relative-suboptimality target, "epoch, seconds" of the first evaluation at it, or "-"."""
    hits = [first_at(history, f_star, target) for target in targets]
    return ["-" if hit is None else f"{hit[0]:.0f}, {hit[1]:.2f}" for hit in hits]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optima", default=str(Path(__file__).parent / "results" / "proxsgd_optima.json"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    optima = json.loads(Path(args.optima).read_text())
    lines = [
        "# ProxSGD defaults against the optimum (L1 logistic, no intercept, serial engine)",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "| set | alpha | configuration | batch | final rel. subopt | epochs run | to 1e-2: epoch, s "
        "| to 1e-3: epoch, s | step / eta_0 at the end | non-zeros (optimum) | ConvergenceWarning | wall s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    data = {"a9a": load_a9a()[:2], "news20": load_news20()[:2]}
    for name, alpha in CASES:
        X, y = data[name]
        key = f"{name}/alpha={alpha:g}" if f"{name}/alpha={alpha:g}" in optima else f"{name}/alpha={alpha}"
        f_star, nnz_star = optima[key]["objective"], optima[key]["nnz"]
        for label, params in CONFIGS:
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf = ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, random_state=0, **params)
                clf.fit(X, y)
            wall = time.perf_counter() - t0
            warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
            last = clf.history_[-1]
            cells = target_cells(clf.history_, f_star)
            row = (
                f"| {name} | {alpha:g} | {label} | {clf.batch_size_} | {(last['objective'] - f_star) / f_star:.1e} "
                f"| {last['epoch']:.0f} | {cells[0]} | {cells[1]} | {last['step_size'] / clf.step_size_:.2f} "
                f"| {last['nnz']} ({nnz_star}) | {'yes' if warned else 'no'} | {wall:.1f} |"
            )
            print(row, flush=True)
            lines.append(row)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
