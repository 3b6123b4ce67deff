"""EigenPro's defaults on data they were not tuned on, against the exact interpolant.

Run:  .venv/bin/python benchmarks/eigenpro_untuned.py [--out benchmarks/results/eigenpro_untuned.md]

The defaults (Laplacian kernel, the median-distance bandwidth, the automatic subsample, q, batch
and step, 10 epochs) were set on MNIST and scikit-learn's digits. Here EigenProClassifier /
EigenProRegressor run with every parameter at its default on the shipped sets that played no part
in that choice, their columns standardized (a kernel's distances need comparable scales):

- magic (KEEL, gamma vs hadron) and penbased (KEEL, 10 digits): classification, a seeded 80/20 split;
- uci-elevators, uci-pol, uci-bike (the first of their 10 fixed splits) and California housing (a
  seeded 80/20 split): regression, targets as given.

The reference is what EigenPro converges to: the kernel interpolant alpha = K^-1 Y with the same
kernel and bandwidth, solved directly in float64 (Cholesky; n up to ~16,600 here). Train error is
relative (the MSE over the targets' variance; for classes, the one-hot rows' squared error); the test
metric is accuracy or RMSE. Seconds: the whole fit, setup included, serial engine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from asyncopt import EigenProClassifier, EigenProRegressor
from asyncopt.datasets import load_california_housing, load_keel, load_uci
from asyncopt.kernels.functions import make_kernel, roundoff_floor


def _standardized(X_train, X_test):
    mean, sd = X_train.mean(axis=0), X_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (X_train - mean) / sd, (X_test - mean) / sd


def _split(X, y, seed=0, test=0.2):
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test)))
    return X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]


def load(name):
    if name in ("magic", "penbased"):
        parts = _split(*load_keel(name))
    elif name == "california":
        parts = _split(*load_california_housing())
    else:
        parts = load_uci(name)
    X_train, y_train, X_test, y_test = parts
    X_train, X_test = _standardized(X_train, X_test)
    return X_train, y_train, X_test, y_test


SETS = [("magic", "classification"), ("penbased", "classification"), ("uci-elevators", "regression"),
        ("uci-pol", "regression"), ("uci-bike", "regression"), ("california", "regression")]  # fmt: skip


def targets(y, classes):
    return (y[:, None] == classes[None, :]).astype(np.float64) if classes is not None else y.reshape(-1, 1)


def interpolant(X_train, Y, X_test, bandwidth):
    """Predictions on X_test of alpha = K^-1 Y (float64, Cholesky; a tiny jitter if K is singular)."""
    kernel = make_kernel("laplacian", bandwidth)
    A, B = torch.as_tensor(X_train, dtype=torch.float64), torch.as_tensor(X_test, dtype=torch.float64)
    floor = roundoff_floor(float(torch.cat([A, B]).pow(2).sum(1).max()), torch.float64)
    K = kernel.block(A, A, zero_below=floor)
    jitter = 0.0
    while True:
        L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(len(K), dtype=K.dtype))
        if int(info) == 0:
            break
        jitter = max(1e-12, 10 * jitter)
    alpha = torch.cholesky_solve(torch.as_tensor(Y, dtype=torch.float64), L)
    del K, L
    return (kernel.block(B, A, zero_below=floor) @ alpha).numpy(), jitter


def metric(task, scores, y, classes):
    if task == "classification":
        return float(np.mean(classes[np.argmax(scores, axis=1)] == y))
    return float(np.sqrt(np.mean((scores.ravel() - y) ** 2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=[name for name, _ in SETS])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lines = [
        "# EigenPro's defaults on sets they were not tuned on, against the exact interpolant",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        "| set | n train / test | d | bandwidth | relative train MSE by epoch (1, 2, 5, 10) | test: EigenPro "
        "| test: interpolant | fit s | interpolant s |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, task in SETS:
        if name not in args.sets:
            continue
        X_train, y_train, X_test, y_test = load(name)
        classes = np.unique(y_train) if task == "classification" else None
        Y = targets(y_train, classes)
        # (history's train_mse sums the squared errors of a row's k targets: one-hot rows sum to 1)
        scale = float(np.mean((Y - Y.mean(axis=0)) ** 2)) if classes is None else 1.0
        model = (EigenProClassifier if task == "classification" else EigenProRegressor)(random_state=0)
        t0 = time.perf_counter()
        model.fit(X_train, y_train)
        fit_s = time.perf_counter() - t0
        by_epoch = {round(h["epoch"]): h["train_mse"] / scale for h in model.history_}
        train = ", ".join(f"{by_epoch[e]:.2e}" for e in (1, 2, 5, 10) if e in by_epoch)
        ours = model.score(X_test, y_test) if task == "classification" else None
        if ours is None:
            ours = metric(task, model.predict(X_test), y_test, classes)
        t0 = time.perf_counter()
        exact, jitter = interpolant(X_train, Y, X_test, model.bandwidth_)
        exact_s = time.perf_counter() - t0
        reference = metric(task, exact, y_test, classes)
        what = "accuracy" if task == "classification" else "RMSE"
        row = (
            f"| {name} | {len(y_train):,} / {len(y_test):,} | {X_train.shape[1]} | {model.bandwidth_:.3g} | {train} "
            f"| {what} {ours:.4g} | {what} {reference:.4g}{f' (jitter {jitter:g})' if jitter else ''} "
            f"| {fit_s:.1f} | {exact_s:.1f} |"
        )
        print(row, flush=True)
        lines.append(row)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
