"""Delay study of EigenPro with the serial engine's exact delay simulator (MNIST, real data).

Run:  .venv/bin/python benchmarks/delay_study.py [--n-train 10000] [--target 0.94]

For max_delay tau in 0, 1, 3, 7, 15, 31 the serial engine reads the weights tau updates late
(fixed delay), with consistent reads or with inconsistent ones (16 row blocks, each read at its
own age drawn uniformly in 0..tau), and those either under the engines' rule (every update read
whole or not at all, engines/snapshots.py: the read is the version of its oldest block) or torn
(the blocks as they were, parts of updates included: the lock-free read without the rule).
Two batch rules:
- "fixed batch": the delay-0 automatic batch m = m*/4 and its step size for every tau
  (what happens if nothing adapts to the delay);
- "in-flight rule": m = (m*/4) / (tau + 1), the estimator's automatic choice, so that about the
  same number of samples is in flight (docs/algorithms.md 1.3).
Reported: epochs until the test accuracy (on the first 2,000 MNIST test images) reaches the
target, measured 10 times an epoch; "diverged" or "> E" when it does not.
"""

from __future__ import annotations

import argparse
import time

import torch

from asyncopt import EigenProClassifier, TrainingDiverged
from asyncopt.datasets import load_mnist

DELAYS = (0, 1, 3, 7, 15, 31)
READS = {False: "consistent", True: "inconsistent, whole updates (the engines' rule)", "torn": "inconsistent, torn"}


def epochs_to_target(X, y, Xv, yv, target, max_epochs, **params):
    clf = EigenProClassifier(
        bandwidth=10.0,
        epochs=max_epochs,
        evals_per_epoch=10,
        random_state=0,
        callback=lambda entry: entry.val_metric >= target,
        **params,
    )
    try:
        clf.fit(X, y, X_val=Xv, y_val=yv)
    except TrainingDiverged:
        return None, "diverged"
    last = clf.history_[-1]
    if last["val_metric"] >= target:
        return last["epoch"], f"{last['epoch']:.1f}"
    return None, f"> {max_epochs}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--target", type=float, default=0.94)
    parser.add_argument("--max-epochs", type=float, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/delay_study")
    parser.add_argument("--rules", default="fixed batch,in-flight rule", help="comma-separated batch rules to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y, Xt, yt = load_mnist()
    X, y, Xv, yv = X[: args.n_train], y[: args.n_train], Xt[:2000], yt[:2000]
    base = EigenProClassifier(bandwidth=10.0, epochs=0.01, random_state=0).fit(X, y)
    m0 = base.batch_size_

    results = {}
    t0 = time.perf_counter()
    rules = [r for r in ("fixed batch", "in-flight rule") if r in args.rules.split(",")]
    for rule in rules:
        for inconsistent in READS:
            for tau in DELAYS:
                params = dict(max_delay=tau, inconsistent_reads=inconsistent)
                if rule == "fixed batch":
                    params.update(batch_size=m0, step_size=base.step_size_)
                results[(rule, inconsistent, tau)] = epochs_to_target(
                    X, y, Xv, yv, args.target, args.max_epochs, **params
                )
                print(
                    rule,
                    READS[inconsistent],
                    tau,
                    results[(rule, inconsistent, tau)][1],
                    flush=True,
                )
    lines = [
        f"# Delay study: epochs to {args.target:.1%} test accuracy, MNIST {args.n_train} training points",
        "",
        f"Command: `python benchmarks/delay_study.py --n-train {args.n_train} --target {args.target} "
        f"--max-epochs {args.max_epochs:g} --rules '{args.rules}' --out {args.out}`",
        f"(serial engine, Laplacian h=10, delay-0 automatic batch m={m0}, eta={base.step_size_:.1f}, "
        f"m*={base.critical_batch_size_:.0f}; {time.perf_counter() - t0:.0f} s in all)",
        "",
        "| batch rule | reads | " + " | ".join(f"tau={t}" for t in DELAYS) + " | tau=15 / tau=0 |",
        "|---|---|" + "---:|" * (len(DELAYS) + 1),
    ]
    for rule in rules:
        for inconsistent in READS:
            row = [results[(rule, inconsistent, t)] for t in DELAYS]
            e0, e15 = row[0][0], row[DELAYS.index(15)][0]
            ratio = f"{e15 / e0:.2f}" if e0 and e15 else "n/a"
            batches = (
                ""
                if rule == "fixed batch"
                else " (m = "
                + ", ".join(str(max(1, round(base.critical_batch_size_ / 4 / (t + 1)))) for t in DELAYS)
                + ")"
            )
            lines.append(
                f"| {rule}{batches} | {READS[inconsistent]} | " + " | ".join(r[1] for r in row) + f" | {ratio} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for rule, style in [(r, s) for r, s in (("fixed batch", "-"), ("in-flight rule", "--")) if r in rules]:
        for inconsistent, marker in ((False, "o"), (True, "s"), ("torn", "x")):
            pts = [(t + 1, results[(rule, inconsistent, t)][0]) for t in DELAYS]
            xs = [p[0] for p in pts if p[1] is not None]
            ys = [p[1] for p in pts if p[1] is not None]
            ax.plot(xs, ys, style, marker=marker, label=f"{rule}, {READS[inconsistent]}")
    ax.set_xscale("log", base=2)
    ax.set_xticks([t + 1 for t in DELAYS], [str(t) for t in DELAYS])
    ax.set(
        xlabel="max_delay tau",
        ylabel=f"epochs to {args.target:.0%} test accuracy",
        title=f"EigenPro delay study (MNIST {args.n_train})",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)


if __name__ == "__main__":
    main()
