"""A/B: staleness from the servers' clocks against one shared version word (the default).

The compiled task loop (asyncopt/engines/compiled.py) measures an update's staleness either with
an atomic add on one shared version word per update (a cache line every core writes; the default,
`ASYNCOPT_STALENESS=version`) or as the ticks of the servers' clocks between its read and its push
(`ASYNCOPT_STALENESS=clocks`). The variable is read where a worker runs its task, so each mode
runs in its own child process (its own worker pool), the modes alternating, `--repeats` times each.

Every fit: ProxSGDClassifier, processes backend, 2 workers of 1 thread, `--epochs` epochs with no
early stop (tol=None), L1 logistic regression with an intercept. Reported: training throughput
(samples/s after the serial setup and the worker start-up), the staleness mean, the final
objective; the median over repeats, and clocks / version.

    python benchmarks/bench_clocks.py --out benchmarks/results/clocks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import warnings

CASES = [  # (data set, alpha, push, blocks)
    ("a9a", 1e-4, "auto", "auto"),
    ("a9a", 1e-4, "block", 4),
    ("news20", 1e-4, "auto", "auto"),
    ("news20", 1e-5, "auto", "auto"),
    ("news20", 1e-4, "block", 4),
]


def child(epochs: int) -> None:
    import numpy as np
    import torch

    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a, load_news20

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    data = {"a9a": load_a9a(), "news20": load_news20()}
    for name, alpha, push, blocks in CASES:
        X, y = data[name][:2]
        model = ProxSGDClassifier(
            penalty="l1", alpha=alpha, backend="processes", n_workers=2, threads_per_worker=1, push=push,
            n_blocks=blocks, max_epochs=epochs, tol=None, evals_per_epoch=1, random_state=0,
        ).fit(X, y)  # fmt: skip
        t = model.telemetry_
        last = model.history_[-1]
        train = last["seconds"] - t["startup_seconds"] - t["setup_seconds"]
        print(json.dumps({
            "case": f"{name} alpha={alpha:g} push={model.push_} blocks={model.n_blocks_}",
            "rate": last["samples"] / max(train, 1e-9), "staleness": t["staleness"]["mean"],
            "objective": last["objective"], "nnz": int(np.count_nonzero(model.coef_)),
        }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/clocks.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.epochs)
    runs: dict = {}
    for r in range(args.repeats):
        for mode in ("clocks", "version") if r % 2 == 0 else ("version", "clocks"):
            env = dict(os.environ, ASYNCOPT_STALENESS=mode)
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--epochs", str(args.epochs)],
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            for line in out.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    runs.setdefault(row["case"], {}).setdefault(mode, []).append(row)
                    print(mode, row, flush=True)
    lines = [
        "# Staleness from the servers' clocks against a shared version word",
        "",
        f"Command: `python benchmarks/bench_clocks.py --epochs {args.epochs} --repeats {args.repeats}`  ",
        f"2 workers (processes, 1 thread each), {args.epochs} epochs, tol=None; medians of {args.repeats} "
        "runs per mode, the modes alternating in separate processes. Throughput: samples/s of training "
        "(setup and worker start-up excluded).",
        "",
        "| case | clocks samples/s | version samples/s | clocks / version | staleness mean (clocks / version) "
        "| objective (clocks / version) |",
        "|---|---:|---:|---:|---|---|",
    ]
    for case, modes in runs.items():
        med = {m: {k: statistics.median(r[k] for r in rows) for k in ("rate", "staleness", "objective")}
               for m, rows in modes.items()}  # fmt: skip
        c, v = med["clocks"], med["version"]
        lines.append(
            f"| {case} | {c['rate']:,.0f} | {v['rate']:,.0f} | {c['rate'] / v['rate']:.3f} | "
            f"{c['staleness']:.2f} / {v['staleness']:.2f} | {c['objective']:.6f} / {v['objective']:.6f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
