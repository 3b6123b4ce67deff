"""ProxSGD on Ray: tasks of one batch against tasks of several batches (`task_samples`), time to
1e-2 and 1e-3 relative suboptimality, next to the serial engine.

Run:  .venv/bin/python benchmarks/ray_task_size.py --out benchmarks/results/ray_task_size.md

Cases: a9a and news20, L1 logistic regression at alpha 1e-4 without an intercept (F* from
results/proxsgd_optima.json); California housing (standardized, dense), the lasso at alpha_max / 100,
and penbased (standardized, dense, 10 classes), the L1 multinomial at alpha_max / 100, both with
intercepts (F* from scikit-learn's Lasso and saga, as proxsgd_untuned.py computes them). Every other
estimator parameter at its default but max_epochs (100) and a callback that stops the fit at 1e-3;
Ray: a local Ray, 2 worker actors of 1 thread on 2 cores. Seconds are the history's (the whole fit as
a user waits for it, worker start included, evaluations excluded), one fit each; a task is never
more than a quarter of an evaluation segment's samples with 2 workers (RayEngine._size_tasks), so
16,384 is that cap. The question is the default for small batches: a Ray task costs milliseconds
(a call, a pull, a push), a batch of 32 microseconds. Run it twice in a fresh environment: the first
Ray fit of each set compiles the workers' kernels inside its worker start.
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

RAY = dict(backend="ray", n_workers=2, threads_per_worker=1)
CONFIGS = {
    "serial": {},
    "ray, task_samples=None (one batch)": dict(RAY, task_samples=None),
    "ray, task_samples=256": dict(RAY, task_samples=256),
    "ray, task_samples=1024": dict(RAY, task_samples=1024),
    "ray, task_samples='auto' (default: 4096)": dict(RAY),
    "ray, task_samples=16384": dict(RAY, task_samples=16384),
}


def sparse_case(name, optima):
    X, y = LOADERS[name]()[:2]
    alpha = 1e-4
    return X, y, dict(penalty="l1", alpha=alpha, fit_intercept=False), optima[f"{name}/alpha={alpha:g}"]["objective"]


def dense_case(name, task):
    from proxsgd_untuned import alpha_max, load, objective, reference

    X, y = load(name)
    alpha = alpha_max(X, y, task) / 100
    f_star = objective(reference(X, y, task, alpha), X, y, task, alpha)
    params = dict(penalty="l1", alpha=alpha)
    if task == "multinomial":
        params["multi_class"] = "multinomial"
    return X, y, params, f_star


def case(name, optima):
    if name in LOADERS:
        return "classifier", *sparse_case(name, optima)
    task = {"california": "lasso", "penbased": "multinomial"}[name]
    return ("regressor" if task == "lasso" else "classifier"), *dense_case(name, task)


def fit(kind, X, y, params, f_star, config):
    from asyncopt import ProxSGDClassifier, ProxSGDRegressor

    def stop(entry):
        return entry["objective"] <= f_star * (1 + 1e-3)

    estimator = ProxSGDRegressor if kind == "regressor" else ProxSGDClassifier
    model = estimator(max_epochs=100, random_state=0, callback=stop, **params, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["a9a", "news20", "california", "penbased"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="labels of CONFIGS to run")
    parser.add_argument("--optima", default="benchmarks/results/proxsgd_optima.json")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # (a local Ray on loopback)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    optima = json.loads(Path(args.optima).read_text())
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
        kind, X, y, params, f_star = case(name, optima)
        for label in args.configs:
            model = fit(kind, X, y, params, f_star, CONFIGS[label])
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
