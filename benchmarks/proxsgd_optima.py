"""Reference optima for the AsyB-ProxSGD benchmarks: L1 logistic regression solved by liblinear.

F(w) = (1/n) sum_i log(1 + exp(-y_i a_i.w)) + alpha ||w||_1, no intercept. liblinear minimises
||w||_1 + C sum_i log(...), the same problem with C = 1 / (alpha n). Writes a JSON file the
benchmark reads (F*, non-zeros, seconds); run it once, it takes ~10 min for news20 at alpha 1e-5.

    python benchmarks/proxsgd_optima.py --out benchmarks/results/proxsgd_optima.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from asyncopt.datasets import load_a9a, load_news20

PROBLEMS = {"a9a": (load_a9a, [1e-4, 1e-5]), "news20": (load_news20, [1e-4, 1e-5])}


def l1_logistic_objective(X, y, w, alpha):
    z = y * (X @ w)
    return float(np.mean(np.logaddexp(0.0, -z)) + alpha * np.abs(w).sum())


def solve(X, y, alpha, tol):
    C = 1.0 / (alpha * X.shape[0])
    model = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=C, tol=tol, max_iter=100_000, fit_intercept=False)
    start = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - start
    w = model.coef_.ravel()
    return w, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/proxsgd_optima.json")
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--only", default=None, help="one dataset name")
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name, (loader, alphas) in PROBLEMS.items():
        if args.only and name != args.only:
            continue
        X, y, _, _ = loader()
        for alpha in alphas:
            w, seconds = solve(X, y, alpha, args.tol)
            key = f"{name}/alpha={alpha:g}"
            results[key] = {
                "objective": l1_logistic_objective(X, y, w, alpha),
                "nnz": int(np.count_nonzero(w)),
                "seconds": round(seconds, 2),
                "solver": f"liblinear tol={args.tol:g}",
            }
            print(key, results[key], flush=True)
            out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
