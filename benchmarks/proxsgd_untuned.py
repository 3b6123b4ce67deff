"""ProxSGD's defaults on data they were not tuned on: how close to the optimum, and do they warn.

Run:  .venv/bin/python benchmarks/proxsgd_untuned.py [--out benchmarks/results/proxsgd_untuned.md]

The defaults (batch, SVRG, step and delay bounds, epoch budget, tol) were chosen on a9a and news20
(proxsgd_defaults.md). Here the estimators run with every parameter at its default except the
penalty and its strength, on the shipped sets that played no part in that choice:

- magic (KEEL, 19,020 x 10, gamma vs hadron): logistic regression, with intercept;
- penbased (KEEL, 10,992 x 16, 10 digits): multinomial logistic regression, with intercepts (L1 only);
- uci-elevators (16,599 x 18), uci-pol (15,000 x 26), california housing (20,640 x 8): squared
  loss, with intercept; california also on its raw columns (scales 1 to 35,682), the others on
  standardized columns (y as given).

Penalties (--penalties): L1 (the default), elastic net at l1_ratio 0.5, L2. alpha is alpha_max / 10
and alpha_max / 100, alpha_max the L1 penalty's (the smallest alpha with all coefficients 0). The
reference optimum: scikit-learn at a tight tolerance (Lasso's and ElasticNet's coordinate descent at
tol 1e-12, Ridge's Cholesky solve at n alpha, LogisticRegression(solver="saga") at tol 1e-10 with
C = 1 / (alpha n)), the same objective evaluated for both models by this script: mean loss + the
penalty, intercepts unpenalized. Both run on the whole set (training objective). Seconds are the
whole fit as a user waits for it (serial engine, setup included).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression, Ridge

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.datasets import load_california_housing, load_keel, load_uci


def _standardized(X):
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def load(name: str):
    if name == "magic":
        X, y = load_keel("magic")
        return _standardized(X), y
    if name == "penbased":
        X, y = load_keel("penbased")
        return _standardized(X), y
    if name == "california (raw)":
        return load_california_housing()
    if name == "california":
        X, y = load_california_housing()
        return _standardized(X), y
    X, y = load_uci(name, split=None)  # (the whole set: training objectives)
    return _standardized(X), y


CASES = [  # (set, task)
    ("magic", "binary"),
    ("penbased", "multinomial"),
    ("uci-elevators", "lasso"),
    ("uci-pol", "lasso"),
    ("california", "lasso"),
    ("california (raw)", "lasso"),
]


def alpha_max(X, y, task) -> float:
    n = X.shape[0]
    if task == "lasso":
        return float(np.abs(X.T @ (y - y.mean())).max() / n)
    classes = np.unique(y)
    if task == "binary":
        t = (y == classes[1]).astype(float)
        return float(np.abs(X.T @ (t.mean() - t)).max() / n)
    T = (y[:, None] == classes[None, :]).astype(float)
    return float(np.abs(X.T @ (T.mean(axis=0) - T)).max() / n)


L1_RATIO = 0.5  # (elasticnet)


def penalty_value(W, penalty, alpha) -> float:
    """The estimators' penalties: alpha ||W||_1, (alpha / 2) ||W||^2, or their mix at L1_RATIO."""
    l1, l2 = float(np.abs(W).sum()), float((W * W).sum())
    if penalty == "l1":
        return alpha * l1
    if penalty == "l2":
        return 0.5 * alpha * l2
    return alpha * (L1_RATIO * l1 + 0.5 * (1 - L1_RATIO) * l2)


def objective(model, X, y, task, alpha, penalty="l1") -> float:
    """mean loss + the penalty, from the model's coefficients and intercepts."""
    W, b = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    penalty = penalty_value(W, penalty, alpha)
    if task == "lasso":
        z = X @ W.ravel() + float(np.ravel(b)[0])
        return float(0.5 * np.mean((z - y) ** 2) + penalty)
    Z = X @ W.T + b
    classes = model.classes_
    if task == "binary":
        s = np.where(y == classes[1], 1.0, -1.0)
        return float(np.mean(np.logaddexp(0.0, -s * Z.ravel())) + penalty)
    index = np.searchsorted(classes, y)
    return float(np.mean(logsumexp(Z, axis=1) - Z[np.arange(len(y)), index]) + penalty)


def reference(X, y, task, alpha, penalty="l1"):
    """scikit-learn's solution of the same problem (Ridge: ||y - Xw||^2 + n alpha ||w||^2, halved over n)."""
    n = X.shape[0]
    if task == "lasso":
        if penalty == "l2":
            return Ridge(alpha=n * alpha, tol=1e-12, solver="cholesky").fit(X, y)
        if penalty == "elasticnet":
            return ElasticNet(alpha=alpha, l1_ratio=L1_RATIO, tol=1e-12, max_iter=200_000).fit(X, y)
        return Lasso(alpha=alpha, tol=1e-12, max_iter=200_000).fit(X, y)
    ratio = {"l1": 1.0, "l2": 0.0, "elasticnet": L1_RATIO}[penalty]
    return LogisticRegression(l1_ratio=ratio, solver="saga", C=1.0 / (alpha * n), tol=1e-10, max_iter=100_000).fit(X, y)


def ours(task, alpha, penalty="l1", row_splitting="auto"):
    kw = dict(penalty=penalty, alpha=alpha, l1_ratio=L1_RATIO, random_state=0, row_splitting=row_splitting)
    if task == "lasso":
        return ProxSGDRegressor(**kw)
    return ProxSGDClassifier(multi_class="multinomial" if task == "multinomial" else "ovr", **kw)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=[name for name, _ in CASES])
    parser.add_argument("--fractions", default="10,100", help="alpha = alpha_max / each of these")
    parser.add_argument("--penalties", default="l1", help="comma-separated: l1, elasticnet, l2")
    parser.add_argument("--row-splitting", default="auto", help="comma-separated: auto, none (each fit with each)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lines = [
        "# ProxSGD's defaults on sets they were not tuned on",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "Every parameter at its default but `penalty`, `alpha` and `l1_ratio` (multinomial: `multi_class`); "
        f"serial engine; elasticnet at l1_ratio {L1_RATIO}; alpha_max is the L1 penalty's; the optimum F* from "
        "scikit-learn at a tight tolerance (the script's docstring).",
        "",
        "Epochs are passes over the run's draws (with row_splitting, heavy rows count as often as drawn: "
        "the extra draws an epoch in the row_splitting column).",
        "",
        "| set | task | penalty | alpha | row_splitting | F* | rel. subopt at the end | epochs | to 1e-2: epoch "
        "| to 1e-3: epoch | ConvergenceWarning | non-zeros (reference) | batch | fit s | reference s |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, task in CASES:
        if name not in args.sets:
            continue
        X, y = load(name)
        top = alpha_max(X, y, task)
        strengths = [(p, float(f)) for p in args.penalties.split(",") for f in args.fractions.split(",")]
        for penalty, fraction in strengths:
            if penalty != "l1" and task == "multinomial":
                continue  # (no scikit-learn reference run here)
            alpha = top / fraction
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                ref = reference(X, y, task, alpha, penalty)
            ref_s = time.perf_counter() - t0
            f_star = objective(ref, X, y, task, alpha, penalty)
            for splitting in args.row_splitting.split(","):
                lines.append(_our_row(name, task, penalty, fraction, alpha, splitting, X, y, f_star, ref, ref_s))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def _our_row(name, task, penalty, fraction, alpha, splitting, X, y, f_star, ref, ref_s) -> str:
    model = ours(task, alpha, penalty, splitting)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y)
    fit_s = time.perf_counter() - t0
    warned = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    gap = (objective(model, X, y, task, alpha, penalty) - f_star) / abs(f_star)
    hits = []
    for target in (1e-2, 1e-3):
        at = next((h["epoch"] for h in model.history_ if h["objective"] - f_star <= target * abs(f_star)), None)
        hits.append("-" if at is None else f"{at:g}")
    nnz, nnz_ref = int(np.count_nonzero(model.coef_)), int(np.count_nonzero(ref.coef_))
    extra = model.draws_per_epoch_ - X.shape[0]
    row = (
        f"| {name} | {task} | {penalty} | alpha_max/{fraction:g} = {alpha:.3g} "
        f"| {splitting}{f' (+{extra})' if extra else ''} | {f_star:.6g} | {gap:.1e} "
        f"| {model.history_[-1]['epoch']:g} | {hits[0]} | {hits[1]} | {'yes' if warned else 'no'} "
        f"| {nnz} ({nnz_ref}) | {model.batch_size_} | {fit_s:.2f} | {ref_s:.2f} |"
    )
    print(row, flush=True)
    own = model.history_[-1]["objective"]  # (the run's own F: the same objective, as a check)
    mine = objective(model, X, y, task, alpha, penalty)
    print(f"    F at the end: this script {mine:.10g}, the run's {own:.10g}")
    for message in warned:
        print(f"    warning: {message}", flush=True)
    return row


if __name__ == "__main__":
    main()
