"""Sparse data with raw numeric columns: ProxSGD with column_scaling="auto" against "none".

Run:  .venv/bin/python benchmarks/proxsgd_sparse_scales.py [--out benchmarks/results/proxsgd_sparse_scales.md]

A sparse design often mixes indicator or text columns with raw numeric ones (a OneHotEncoder or a
TfidfVectorizer beside passthrough columns). One step serves every coefficient and the numeric
columns' scale sets it. The sets, each the shipped one with numeric columns appended (seeded):

- a9a + income + age: income log-normal (median e^8 ~ 3,000) in 10% of the rows, 1.5x higher in the
  positive class; age uniform on 17..89 in every row;
- news20 + length: the row's number of stored entries (the document's distinct words, 1 to ~5,000).

L1 logistic regression without intercept at alpha 1e-4 and 1e-5, every other parameter at its
default (serial engine); F* from liblinear (tol 1e-8) on the same columns, F evaluated by this script
for both. The shipped sets themselves are listed too: column_scaling="auto" leaves their columns as
given (no column is far above the typical entry), so their fits are the defaults' of
proxsgd_defaults.md. Seconds: the whole fit as a user waits for it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from proxsgd_defaults import target_cells  # (benchmarks/ is the script's directory: on sys.path)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_a9a, load_news20
from asyncopt.proxsgd.column_scales import sparse_scales


def with_numeric_columns(name: str):
    rng = np.random.default_rng(0)
    if name == "a9a":
        X, y = load_a9a()[:2]
        X = sp.csr_matrix(X, dtype=np.float64)
        n = X.shape[0]
        positive = y == y.max()
        income = np.where(rng.random(n) < 0.1, rng.lognormal(8.0, 1.0, n), 0.0) * np.where(positive, 1.5, 1.0)
        age = rng.integers(17, 90, n).astype(np.float64)
        return sp.hstack([X, sp.csr_matrix(np.c_[income, age])]).tocsr(), y
    X, y = load_news20()[:2]
    X = sp.csr_matrix(X, dtype=np.float64)
    length = np.diff(X.indptr).astype(np.float64)
    return sp.hstack([X, sp.csr_matrix(length[:, None])]).tocsr(), y


def objective(X, y, coef, alpha):
    signs = np.where(y == y.max(), 1.0, -1.0)
    return float(np.mean(np.logaddexp(0.0, -signs * (X @ coef))) + alpha * np.abs(coef).sum())


def optimum(X, y, alpha):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (scikit-learn's penalty= deprecation)
        ref = LogisticRegression(penalty="l1", C=1.0 / (alpha * X.shape[0]), solver="liblinear", fit_intercept=False,
                                 tol=1e-8, max_iter=100_000).fit(X, y)  # fmt: skip
    return objective(X, y, ref.coef_.ravel(), alpha)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lines = [
        "# Sparse data with raw numeric columns: column_scaling='auto' against 'none' (L1 logistic, serial)",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "| set | scaled columns (auto) | alpha | column_scaling | final rel. subopt | epochs | to 1e-2: epoch, s "
        "| to 1e-3: epoch, s | ConvergenceWarning | whole fit s |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    notes = []
    for name in ("a9a", "news20"):
        shipped = (load_a9a if name == "a9a" else load_news20)()[0]
        note = f"{name} as shipped: sparse_scales -> {'none' if sparse_scales(shipped) is None else 'some'}"
        print(note, flush=True)
        notes.append(f"- {note}")
        X, y = with_numeric_columns(name)
        scale = sparse_scales(X)
        divisors = ", ".join(f"/{s:.3g}" for s in ([] if scale is None else scale[scale != 1]))
        scaled = "none" if scale is None else f"{int((scale != 1).sum())} ({divisors})"
        for alpha in (1e-4, 1e-5):
            f_star = optimum(X, y, alpha)
            for scaling in ("auto", "none"):
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    clf = ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, column_scaling=scaling,
                                            random_state=0).fit(X, y)  # fmt: skip
                wall = time.perf_counter() - t0
                warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
                final = (objective(X, y, clf.coef_.ravel(), alpha) - f_star) / f_star
                cells = target_cells(clf.history_, f_star)
                row = (
                    f"| {name} + numeric | {scaled} | {alpha:g} | {scaling} | {final:.1e} | {clf.n_iter_:.0f} "
                    f"| {cells[0]} | {cells[1]} | {'yes' if warned else 'no'} | {wall:.1f} |"
                )
                print(row, flush=True)
                lines.append(row)
    text = "\n".join(lines[:4] + notes + [""] + lines[4:]) + "\n"
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
