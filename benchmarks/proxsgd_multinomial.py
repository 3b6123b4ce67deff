"""The multinomial loss through the compiled kernels against the torch step a batch (its path before
session 33): the whole fit, alternating rounds, the same problem on both paths.

Run:  .venv/bin/python benchmarks/proxsgd_multinomial.py --rounds 3 --out benchmarks/results/proxsgd_multinomial.md

Sets: penbased (KEEL, 10,992 x 16, 10 digits, standardized columns) at alpha_max / 10 and / 100
(every other parameter at its default: the tol rule stops the fit), and MNIST's 10 digits (60,000 x
784, pixels in [0, 1] held dense) at alpha 1e-4 for 5 epochs (tol=None: the same work on both
paths). L1 multinomial logistic regression with intercepts; serial engine (1 worker) and 2 worker
threads. The torch path is the same code with "multinomial" taken out of fast.LOSS_CODES (read
when a fit is set up), so both run in one process. Seconds are whole fits (setup included), the
median of the rounds; F is each path's final objective (the same problem: with one worker the two
paths draw the same batches and should agree to rounding).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ab_fits import ab_row, timed_fit  # noqa: E402


def cases():
    from proxsgd_untuned import alpha_max, load

    from asyncopt.datasets import load_mnist

    X, y = load("penbased")
    top = alpha_max(X, y, "multinomial")
    for fraction in (10, 100):
        yield f"penbased, alpha_max/{fraction}", X, y, dict(alpha=top / fraction)
    X, y = load_mnist()[:2]
    yield "MNIST 10 digits, 5 epochs", np.asarray(X, dtype=np.float64), y, dict(alpha=1e-4, max_epochs=5, tol=None)


def fit(X, y, params, workers, path):
    from asyncopt import ProxSGDClassifier
    from asyncopt.proxsgd import fast

    if path == "compiled":
        fast.LOSS_CODES["multinomial"] = fast.SOFTMAX
    else:
        fast.LOSS_CODES.pop("multinomial", None)
    kw = dict(penalty="l1", multi_class="multinomial", random_state=0, **params)
    if workers > 1:
        kw.update(backend="threads", n_workers=workers, threads_per_worker=1)
    return timed_fit(ProxSGDClassifier(**kw), X, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    from asyncopt.proxsgd import fast

    torch.set_num_threads(1)
    lines = [
        "# The multinomial loss: compiled kernels against the torch step a batch, whole fit",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        f"Median seconds over {args.rounds} alternating rounds (compiled first); ratio = torch / compiled.",
        "",
        "| case | workers | batch | epochs (compiled / torch) | final F (compiled / torch) | compiled s "
        "| torch step s | ratio |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    try:
        for name, X, y, params in cases():
            for workers in (1, 2):
                row = ab_row(
                    (name, workers),
                    lambda path: fit(X, y, params, workers, path),  # noqa: B023 (called at once)
                    ("compiled", "torch"),
                    args.rounds,
                    digits=8,
                )
                print(row, flush=True)
                lines.append(row)
    finally:
        fast.LOSS_CODES["multinomial"] = fast.SOFTMAX
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
