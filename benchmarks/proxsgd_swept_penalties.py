"""Box bounds, group L1 and the smooth nonconvex regularizer in the compiled task loop (block_prox.py,
since session 35) against the torch step a batch they took before: the whole fit, alternating rounds.

Run:  .venv/bin/python benchmarks/proxsgd_swept_penalties.py --rounds 3 \
          --out benchmarks/results/proxsgd_swept_penalties.md

Cases (every other parameter at its default, the tol rule stops the fit; max_epochs 30):
- a9a (32,561 x 123, sparse), L1 logistic: group L1 (alpha 1e-3) over groups of 4 consecutive
  columns (a stand-in: a9a's columns are one-hot codes of 14 attributes, whose boundaries the file
  does not give), box [-0.5, 0.5], L1 (alpha 1e-4) with nonconvex_strength 1e-3;
- California housing standardized (20,640 x 8, dense), lasso: group L1 (alpha 1e-2, groups of 2),
  box [-0.5, 0.5], L1 (alpha 1e-2) with nonconvex_strength 1e-2;
- news20 (15,996 x 130,108, sparse; max_epochs 10): box [-1, 1] and L1 (alpha 1e-4) with
  nonconvex_strength 1e-4, where the compiled rule sweeps all 130k rows of a block each update.
Serial engine and 2 worker threads (1 torch / numba thread each). ASYNCOPT_COMPILED_PROX=off (read
when a fit is set up) gives the torch step in the same process. Seconds are whole fits, the median of
the rounds; F is each path's final objective (the same problem and, serially, the same updates).
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
    from proxsgd_untuned import load

    from asyncopt.datasets import load_a9a, load_news20

    X, y = load_a9a()[:2]
    yield (
        "a9a",
        "binary",
        X,
        y,
        [
            ("group L1", dict(penalty="group_l1", alpha=1e-3, groups=np.arange(X.shape[1]) // 4)),
            ("box", dict(penalty="box", bounds=(-0.5, 0.5))),
            ("L1 + smooth", dict(penalty="l1", alpha=1e-4, nonconvex_strength=1e-3)),
        ],
    )
    X, y = load("california")
    yield (
        "california",
        "lasso",
        X,
        y,
        [
            ("group L1", dict(penalty="group_l1", alpha=1e-2, groups=np.arange(X.shape[1]) // 2)),
            ("box", dict(penalty="box", bounds=(-0.5, 0.5))),
            ("L1 + smooth", dict(penalty="l1", alpha=1e-2, nonconvex_strength=1e-2)),
        ],
    )
    X, y = load_news20()[:2]
    yield (
        "news20",
        "binary",
        X,
        y,
        [
            ("box", dict(penalty="box", bounds=(-1.0, 1.0), max_epochs=10)),
            ("L1 + smooth", dict(penalty="l1", alpha=1e-4, nonconvex_strength=1e-4, max_epochs=10)),
        ],
    )


def fit(task, X, y, rule, workers, path):
    from asyncopt import ProxSGDClassifier, ProxSGDRegressor

    os.environ["ASYNCOPT_COMPILED_PROX"] = path
    kw = dict(random_state=0, max_epochs=30) | rule
    if workers > 1:
        kw.update(backend="threads", n_workers=workers, threads_per_worker=1)
    return timed_fit(ProxSGDRegressor(**kw) if task == "lasso" else ProxSGDClassifier(**kw), X, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lines = [
        "# Box, group L1 and the smooth regularizer: the compiled task loop against the torch step a batch",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        f"Median seconds of whole fits over {args.rounds} alternating rounds (compiled first); ratio = torch / "
        "compiled.",
        "",
        "| set | penalty | workers | batch | epochs (compiled / torch) | final F (compiled / torch) | compiled s "
        "| torch step s | ratio |",
        "|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for name, task, X, y, rules in cases():
        for label, rule in rules:
            for workers in (1, 2):
                row = ab_row(
                    (name, label, workers),
                    lambda path: fit(task, X, y, rule, workers, path),  # noqa: B023 (called at once)
                    ("on", "off"),
                    args.rounds,
                )
                print(row, flush=True)
                lines.append(row)
    os.environ.pop("ASYNCOPT_COMPILED_PROX", None)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
