"""news20: 2 worker threads against 1, the whole fit to 1e-2, in alternating pairs (issue 15's 1.7x).

    python benchmarks/news20_pairs.py --pairs 5 --out benchmarks/results/news20_pairs.md
    python benchmarks/news20_pairs.py --pairs 3 --blocks auto,1,4 --out benchmarks/results/news20_blocks.md

L1 logistic regression without intercept at alpha 1e-4 and 1e-5 on bench_proxsgd.py's news20 split,
every other parameter at its default, backend="threads", 1 torch thread a worker. Each fit stops once
F is within 1e-2 of F* (results/proxsgd_optima.json) by a callback; the time is the whole fit
(setup included). One warm-up fit of each first. The machine's gauge (2 processes of a compiled
loop, 2.00: two full cores) before and after. --blocks: the 2-worker fits' n_blocks (parameter servers),
each run in every pair after the 1-worker fit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

OPTIMA = Path(__file__).parent / "results" / "proxsgd_optima.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--blocks", default="auto", help="comma-separated n_blocks of the 2-worker fits")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    from bench_proxsgd import LOADERS
    from proxsgd_speedup_breakdown import machine_parallelism

    from asyncopt import ProxSGDClassifier

    X, y = LOADERS["news20"]()[:2]
    optima = json.loads(OPTIMA.read_text())
    lines = ["# news20: 2 worker threads against 1, whole fit to 1e-2", "",
             f"Command: `python benchmarks/news20_pairs.py {' '.join(sys.argv[1:])}`", "",
             f"Machine gauge before: {machine_parallelism():.2f}", "",
             "| alpha | pair | 2-worker n_blocks | 1 worker s | 2 workers s | ratio |",
             "|---|---:|---|---:|---:|---:|"]  # fmt: skip
    blocks = [b if b == "auto" else int(b) for b in args.blocks.split(",")]
    summary = []
    for alpha in (1e-4, 1e-5):
        f_star = optima[f"news20/alpha={alpha:g}"]["objective"]

        def fit(workers, n_blocks="auto", alpha=alpha, f_star=f_star):
            t = time.perf_counter()
            ProxSGDClassifier(penalty="l1", alpha=alpha, fit_intercept=False, backend="threads", n_workers=workers,
                              n_blocks=n_blocks, threads_per_worker=1, random_state=0,
                              callback=lambda e: e.objective <= f_star * 1.01).fit(X, y)  # fmt: skip
            return time.perf_counter() - t

        fit(1), *(fit(2, b) for b in blocks)
        ratios = {b: [] for b in blocks}
        for p in range(args.pairs):
            one = fit(1)
            for b in blocks:
                two = fit(2, b)
                ratios[b].append(one / two)
                lines.append(f"| {alpha:g} | {p + 1} | {b} | {one:.2f} | {two:.2f} | {one / two:.2f} |")
                print(lines[-1], flush=True)
        for b in blocks:
            summary.append(f"- alpha {alpha:g}, n_blocks {b}: median {statistics.median(ratios[b]):.2f}x "
                           f"({min(ratios[b]):.2f}-{max(ratios[b]):.2f})")  # fmt: skip
    lines += ["", f"Machine gauge after: {machine_parallelism():.2f}", "", *summary, ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
