"""Seconds to relative suboptimality 1e-2 / 1e-3 against the batch size (ProxSGD with SVRG).

L1 logistic regression on a9a and news20 (two alphas each, F* from results/proxsgd_optima.json),
processes engine, full-vector push over 1 block and AsyB over 4 blocks, batch 4 / 8 / 16 / 32,
up to --max-epochs (a run stops at 1e-3). Shows where the automatic batch (32) stands: with a step
of ~20-100 us, small batches pay on news20 (wide rows, ill-conditioned) and not on a9a.

    python benchmarks/proxsgd_batch_sweep.py --workers 1 --out benchmarks/results/proxsgd_batch_sweep.md
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_a9a, load_news20

TARGETS = (1e-2, 1e-3)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batches", default="4,8,16,32")
    parser.add_argument("--optima", default="benchmarks/results/proxsgd_optima.json")
    parser.add_argument("--out", default=None)
    parser.add_argument("--datasets", default="a9a,news20")
    parser.add_argument("--max-epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optima = json.loads(Path(args.optima).read_text())
    lines = [
        "# ProxSGD + SVRG: seconds to a target against the batch size",
        "",
        f"Command: `python benchmarks/proxsgd_batch_sweep.py --workers {args.workers} --batches {args.batches} "
        f"--datasets {args.datasets} --max-epochs {args.max_epochs}" + (f" --out {args.out}`" if args.out else "`"),
        "",
        f"{args.workers} processes worker(s), 1 torch thread each; seconds exclude worker start and evaluations; "
        f"'-' = not reached in {args.max_epochs} epochs.",
        "",
        "| data | alpha | push | batch | s to 1e-2 | s to 1e-3 | final rel. subopt | epochs | non-zeros |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    loaders = {"a9a": load_a9a, "news20": load_news20}
    for name in args.datasets.split(","):
        X, y, _, _ = loaders[name]()
        for alpha in (1e-4, 1e-5):
            f_star = optima[f"{name}/alpha={alpha:g}"]["objective"]
            for push, blocks in (("full", 1), ("block", 4)):
                for batch in [int(b) for b in args.batches.split(",")]:
                    model = ProxSGDClassifier(
                        penalty="l1",
                        alpha=alpha,
                        fit_intercept=False,
                        backend="processes",
                        n_workers=args.workers,
                        threads_per_worker=1,
                        n_blocks=blocks,
                        push=push,
                        batch_size=batch,
                        variance_reduction="svrg",
                        max_epochs=args.max_epochs,
                        tol=None,
                        evals_per_epoch=4,
                        random_state=0,
                        callback=lambda e, f_star=f_star: e.objective <= f_star * (1 + TARGETS[-1]),
                    ).fit(X, y)
                    startup = model.telemetry_["startup_seconds"]
                    cells = []
                    for target in TARGETS:
                        bound = f_star * (1 + target)
                        hit = [h["seconds"] - startup for h in model.history_ if h["objective"] <= bound]
                        cells.append(f"{hit[0]:.2f}" if hit else "-")
                    last = model.history_[-1]
                    row = (
                        f"| {name} | {alpha:g} | {push} ({blocks}) | {batch} | {cells[0]} | {cells[1]} | "
                        f"{(last['objective'] - f_star) / f_star:.2e} | {last['epoch']:.1f} | {last['nnz']} |"
                    )
                    print(row, flush=True)
                    lines.append(row)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
