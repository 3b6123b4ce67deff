"""The default ProxSGD fit (backend="serial") against an earlier commit's, and one worker thread beside it.

    git worktree add /tmp/baseline <commit>
    python benchmarks/serial_engine.py --baseline /tmp/baseline --rounds 3 --out benchmarks/results/serial_engine.md

Since session 24 the serial engine runs an algorithm with compiled tasks (ProxSGD on sparse CPU data)
in the engines' compiled task loop when it simulates nothing (no delay, consistent reads), instead of
calling the algorithm's compute and apply from Python for every batch. This measures what a user of
the defaults waits for: ProxSGDClassifier(penalty="l1", alpha=...) with every other parameter at its
default (the serial backend), fit until the relative suboptimality first reaches 1e-2 (F* from
results/proxsgd_optima.json), on a9a and news20 at alpha 1e-4 and 1e-5. Arms:

- baseline: the serial backend in the baseline tree;
- serial: the serial backend in this tree;
- threads 1: backend="threads", n_workers=1 in this tree (the compiled loop on one worker thread).

Each arm runs in a fresh subprocess with PYTHONPATH set to its tree, a warm-up fit first (compiled
code loaded), the arms alternating and their order reversed every other round. Times: the history's
training seconds (the whole fit as a user waits for it, evaluations of F excluded) and the wall time
of the fit call; medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

FIT = """
import json, sys, time, warnings
sys.path.insert(0, {benchmarks!r})
warnings.filterwarnings("ignore")
from bench_proxsgd import LOADERS
from asyncopt import ProxSGDClassifier
optima = json.load(open({optima!r}))
X, y = LOADERS[{data!r}]()[:2]
out = {{}}
for alpha in {alphas!r}:
    f_star = optima[f"{data}/alpha={{alpha:g}}"]["objective"]
    def fit():
        t = time.perf_counter()
        m = ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, random_state=0,
                              callback=lambda e: e["objective"] <= f_star * 1.01, **{kwargs!r}).fit(X, y)
        h = m.history_[-1]
        return {{"wall": time.perf_counter() - t, "seconds": h["seconds"], "epoch": h["epoch"],
                "rel": (h["objective"] - f_star) / f_star, "nnz": int((m.coef_ != 0).sum())}}
    fit()  # (warm-up: compiled code loaded)
    out[str(alpha)] = fit()
print("RESULT" + json.dumps(out))
"""

ARMS = {"baseline": {}, "serial": {}, "threads 1": {"backend": "threads", "n_workers": 1}}


def run(tree: Path, data: str, alphas: list[float], kwargs: dict, optima: str) -> dict:
    code = FIT.format(benchmarks=str(HERE / "benchmarks"), optima=optima, data=data, alphas=alphas, kwargs=kwargs)
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    if done.returncode or not lines:
        raise RuntimeError(f"{tree} {data}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT") :])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path, help="a worktree of the earlier commit")
    parser.add_argument("--datasets", default="a9a,news20")
    parser.add_argument("--alphas", default="1e-4,1e-5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    optima = str(HERE / "benchmarks/results/proxsgd_optima.json")
    alphas = [float(a) for a in args.alphas.split(",")]
    trees = {"baseline": args.baseline.resolve(), "serial": HERE, "threads 1": HERE}
    lines = [
        "# The default ProxSGD fit (serial backend): this tree against a baseline, and one worker thread",
        "",
        f"Command: `python benchmarks/serial_engine.py --baseline {args.baseline} --datasets {args.datasets} "
        f"--alphas {args.alphas} --rounds {args.rounds}`  ",
        "Each fit stops at relative suboptimality 1e-2; medians over the rounds of fresh subprocesses "
        "(the script's docstring). Training seconds exclude evaluations of F; wall: the fit call.",
        "",
        "| data | alpha | arm | training s | wall s | epochs | rel. subopt | non-zeros | baseline / this (training) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for data in args.datasets.split(","):
        runs = {arm: [] for arm in ARMS}
        for r in range(args.rounds):
            for arm in list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]:
                runs[arm].append(run(trees[arm], data, alphas, ARMS[arm], optima))
        for alpha in alphas:
            key = str(alpha)
            base = [x[key]["seconds"] for x in runs["baseline"]]
            for arm, results in runs.items():
                got = {k: float(np.median([x[key][k] for x in results])) for k in ("seconds", "wall", "epoch", "rel")}
                ratios = [b / x[key]["seconds"] for b, x in zip(base, results, strict=True)]
                lines.append(
                    f"| {data} | {alpha:g} | {arm} | {got['seconds']:.3f} | {got['wall']:.3f} | {got['epoch']:.1f} | "
                    f"{got['rel']:.2e} | {results[-1][key]['nnz']} | {np.median(ratios):.2f} "
                    f"({min(ratios):.2f}-{max(ratios):.2f}) |"
                )
        print("\n".join(lines[-3 * len(alphas) :]), flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
