"""Dense data through the compiled task loop as dense rows against the torch step a batch (the path
dense data took before session 32): the whole fit, alternating rounds.

Run:  .venv/bin/python benchmarks/proxsgd_dense_rows.py --rounds 5 --out benchmarks/results/dense_rows.md

Sets: magic (L1 logistic), uci-pol and California standardized (lasso), all at alpha_max / 100, and
MNIST's digit 3 against the rest (L1 logistic, alpha 1e-4, pixels in [0, 1], 81% zeros held as dense,
10 epochs: its default fit runs for minutes); every other parameter at its default (the tol rule stops
the fit), serial engine and 2 worker threads.
ASYNCOPT_DENSE_ROWS=off (read when a fit is set up) gives the old path in the same process. Seconds
are whole fits (setup included), the median of the rounds; F is the final objective of each path (the
same problem: they should agree to the fits' tolerance).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ab_fits import ab_row, timed_fit  # noqa: E402


def cases():
    from proxsgd_untuned import alpha_max, load

    from asyncopt.datasets import load_mnist

    for name, task in (("magic", "binary"), ("uci-pol", "lasso"), ("california", "lasso")):
        X, y = load(name)
        yield name, task, X, y, alpha_max(X, y, task) / 100
    X, y = load_mnist()[:2]
    yield "mnist 3 vs rest", "binary", np.asarray(X, dtype=np.float64), (y == 3).astype(int), 1e-4


def fit(task, X, y, alpha, workers, path):
    from asyncopt import ProxSGDClassifier, ProxSGDRegressor

    os.environ["ASYNCOPT_DENSE_ROWS"] = path
    kw = dict(penalty="l1", alpha=alpha, random_state=0, max_epochs=10 if X.shape[1] > 100 else 100)
    if workers > 1:
        kw.update(backend="threads", n_workers=workers, threads_per_worker=1)
    return timed_fit(ProxSGDRegressor(**kw) if task == "lasso" else ProxSGDClassifier(**kw), X, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lines = [
        "# Dense data: compiled dense rows against the torch step a batch, whole fit",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        f"Median seconds over {args.rounds} alternating rounds (dense rows first); ratio = torch / dense rows.",
        "",
        "| set | n x d | workers | batch | epochs (rows / torch) | final F (rows / torch) | dense rows s "
        "| torch step s | ratio |",
        "|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for name, task, X, y, alpha in cases():
        for workers in (1, 2):
            row = ab_row(
                (name, f"{X.shape[0]:,} x {X.shape[1]}", workers),
                lambda path: fit(task, X, y, alpha, workers, path),  # noqa: B023 (called at once)
                ("on", "off"),
                args.rounds,
            )
            print(row, flush=True)
            lines.append(row)
    os.environ.pop("ASYNCOPT_DENSE_ROWS", None)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
