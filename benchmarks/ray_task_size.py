"""ProxSGD on Ray at its default settings: one batch a task (the default) against tasks of several
batches (`task_samples`), time to 1e-2 and 1e-3 relative suboptimality, next to the serial engine.

Run:  .venv/bin/python benchmarks/ray_task_size.py --out benchmarks/results/ray_task_size.md

L1 logistic regression at alpha 1e-4 without an intercept (F* from results/proxsgd_optima.json), every
other estimator parameter at its default but max_epochs (100) and a callback that stops the fit at
1e-3; Ray: a local Ray, 2 worker actors of 1 thread on 2 cores. Seconds are the history's (the whole
fit as a user waits for it, worker start included, evaluations excluded), one fit each. The question
is the default for small batches: a Ray call costs milliseconds, a batch of 32 microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_proxsgd import LOADERS, first_time  # noqa: E402

CONFIGS = {
    "serial": {},
    "ray, one batch a task (default)": dict(backend="ray", n_workers=2, threads_per_worker=1),
    "ray, task_samples=1024": dict(backend="ray", n_workers=2, threads_per_worker=1, task_samples=1024),
    "ray, task_samples=4096": dict(backend="ray", n_workers=2, threads_per_worker=1, task_samples=4096),
}


def fit(X, y, alpha, f_star, config):
    from asyncopt import ProxSGDClassifier

    def stop(entry):
        return entry["objective"] <= f_star * (1 + 1e-3)

    model = ProxSGDClassifier(
        penalty="l1", alpha=alpha, fit_intercept=False, max_epochs=100, random_state=0, callback=stop, **config
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["a9a", "news20"])
    parser.add_argument("--optima", default="benchmarks/results/proxsgd_optima.json")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # (a local Ray on loopback)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    optima = json.loads(Path(args.optima).read_text())
    alpha = 1e-4
    lines = [
        "# ProxSGD on Ray: one batch a task against tasks of several batches",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "| set | configuration | batch | s to 1e-2 | s to 1e-3 | epochs | final rel. subopt | staleness mean "
        "| worker start s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.sets:
        X, y = LOADERS[name]()[:2]
        f_star = optima[f"{name}/alpha={alpha:g}"]["objective"]
        for label, config in CONFIGS.items():
            model = fit(X, y, alpha, f_star, config)
            curve = [(h["seconds"], h["objective"]) for h in model.history_]
            reached = [first_time(curve, f_star, target) for target in (1e-2, 1e-3)]
            last, t = model.history_[-1], model.telemetry_
            cells = ["-" if s is None else f"{s:.1f}" for s in reached]
            row = (
                f"| {name} | {label} | {model.batch_size_} | {cells[0]} | {cells[1]} | {last['epoch']:g} "
                f"| {(last['objective'] - f_star) / f_star:.1e} | {t['staleness']['mean']:.2f} "
                f"| {t['startup_seconds']:.1f} |"
            )
            print(row, flush=True)
            lines.append(row)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
