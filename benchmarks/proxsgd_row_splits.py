"""Heavy rows drawn more often (row_splitting="auto") against each row drawn once ("none"): the whole
fit's time to 1e-2 and 1e-3 of the optimum, in alternating pairs.

Run:  .venv/bin/python benchmarks/proxsgd_row_splits.py --pairs 5 --updates 64,512 \
          --out benchmarks/results/proxsgd_row_split_times.md

The sets of proxsgd_untuned.py where some rows are far heavier than the mean (magic, uci-elevators,
uci-pol, California standardized), L1 at alpha_max / 10 and / 100, every other parameter at its
default, serial engine. Each fit stops by a callback once F is within the target of F* (scikit-learn's
optimum, proxsgd_untuned.reference); the time is the whole fit as a user waits for it (setup
included). "-": the target was not reached before the fit's own stop (its tol rule or max_epochs).
The ratio is none's time over auto's (above 1: drawing heavy rows more often is faster).
--updates: auto with each MIN_UPDATES (proxsgd/row_splits.py: the fewest updates an epoch the automatic
batch may leave; set in this process for the A/B).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

SETS = [("magic", "binary"), ("uci-elevators", "lasso"), ("uci-pol", "lasso"), ("california", "lasso")]


def timed_fit(task, alpha, config, X, y, f_star, target):
    from proxsgd_untuned import ours

    from asyncopt.proxsgd import row_splits

    splitting, _, updates = config.partition("@")
    if updates:
        row_splits.MIN_UPDATES = int(updates)
    model = ours(task, alpha, "l1", splitting)
    model.set_params(callback=lambda e: e.objective - f_star <= target * abs(f_star))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    seconds = time.perf_counter() - t
    reached = model.history_[-1]["objective"] - f_star <= target * abs(f_star)
    return (seconds if reached else None), model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--fractions", default="10,100")
    parser.add_argument("--updates", default="64", help="comma-separated MIN_UPDATES of the auto fits")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from proxsgd_untuned import alpha_max, load, objective, reference

    lines = [
        "# Heavy rows drawn more often: whole fit to a target, row_splitting auto against none",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "L1, serial engine, 1 torch thread, every other parameter at its default; median seconds over "
        f"{args.pairs} alternating rounds (the auto fits first in each); ratio = none / auto of the medians.",
        "",
        "| set | alpha | MIN_UPDATES | extra draws an epoch | batch auto / none | target | auto s | none s | ratio |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    configs = [f"auto@{u}" for u in args.updates.split(",")] + ["none"]
    for name, task in SETS:
        X, y = load(name)
        for fraction in (float(f) for f in args.fractions.split(",")):
            alpha = alpha_max(X, y, task) / fraction
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f_star = objective(reference(X, y, task, alpha), X, y, task, alpha)
            for target in (1e-2, 1e-3):
                times = {c: [] for c in configs}
                models = {}
                timed_fit(task, alpha, configs[0], X, y, f_star, target)  # (warm-up: compiled kernels loaded)
                for _ in range(args.pairs):
                    for config in configs:
                        seconds, models[config] = timed_fit(task, alpha, config, X, y, f_star, target)
                        times[config].append(seconds)
                medians = {c: None if None in v else statistics.median(v) for c, v in times.items()}
                shown = {c: "-" if m is None else f"{m:.3f}" for c, m in medians.items()}
                for config in configs[:-1]:
                    both = (medians[config], medians["none"])
                    ratio = "-" if None in both else f"{both[1] / both[0]:.2f}"
                    extra = models[config].draws_per_epoch_ - X.shape[0]
                    row = (
                        f"| {name} | alpha_max/{fraction:g} | {config.partition('@')[2]} | {extra} "
                        f"| {models[config].batch_size_} / {models['none'].batch_size_} | {target:g} "
                        f"| {shown[config]} | {shown['none']} | {ratio} |"
                    )
                    print(row, flush=True)
                    lines.append(row)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
