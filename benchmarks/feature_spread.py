"""Is false sharing of the popular coefficients what two ProxSGD workers pay on news20? The run's feature
order (problem.feature_order: most stored entries first, packed 8 float64 coefficients a cache line)
against layouts that give the popular features a cache line each, in alternating fits.

Two workers pay 1.2-1.4x a lone worker's update on news20 (proxsgd_sharing_cost.md). With the popular
features packed, a write to one of them takes the line away from the other worker's reads of its 7
neighbours too (false sharing); a layout with one popular feature a line keeps only the true sharing
(both workers touching the same feature). Layouts, within each block of the run's order:

- packed: the run's order as it is (the default);
- spread: every line's first slot holds the block's hottest features, the second slot the next tier,
  and so on (position p holds rank (p % 8) * lines + p // 8): no two of the hottest eighth share a line;
- hotH: the H hottest features one a line (slot 0 of lines 0..H-1), those lines' other slots filled
  with the block's coldest features (rarely touched), then the rest packed in order.

Default configuration, worker threads, news20 L1 logistic, each fit stopped at relative suboptimality
1e-2 (F* from results/proxsgd_optima.json); medians over --rounds rounds, the arms alternating (and
their order reversed every other round) after a warm-up fit of each. The layout is swapped in through
the estimator's module (`asyncopt.estimators.proxsgd.feature_order`): coefficients come back in the
user's order whichever layout ran.

    python benchmarks/feature_spread.py --layouts packed spread --rounds 5
    python benchmarks/feature_spread.py --layouts packed hot512 hot2048 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_proxsgd import LOADERS  # noqa: E402

import asyncopt.estimators.proxsgd as estimator_module  # noqa: E402
from asyncopt import ProxSGDClassifier  # noqa: E402
from asyncopt.proxsgd.problem import block_bounds, feature_order  # noqa: E402

PER_LINE = 8  # float64 coefficients (one class) in a 64-byte cache line


def _per_block(relayout):
    """A feature_order that rearranges each block of the run's order (hottest first) by `relayout`."""

    def order(counts, n_blocks, group_of_row=None):
        base = feature_order(counts, n_blocks, group_of_row)
        if group_of_row is not None:
            return base
        cuts = block_bounds(counts.shape[0], n_blocks)
        out = base.copy()
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            out[lo:hi] = relayout(base[lo:hi])
        return out

    return order


def spread(ranked: np.ndarray) -> np.ndarray:
    p = np.arange(ranked.size)
    out = np.empty_like(ranked)
    out[np.lexsort((p // PER_LINE, p % PER_LINE))] = ranked  # ranks fill slot 0 of every line, then slot 1, ...
    return out


def hot(h_max: int):
    def relayout(ranked: np.ndarray) -> np.ndarray:
        m = ranked.size
        h = min(h_max, m // PER_LINE)
        lines = np.arange(h) * PER_LINE
        out = np.empty_like(ranked)
        out[lines] = ranked[:h]
        out[(lines[:, None] + np.arange(1, PER_LINE)[None, :]).ravel()] = ranked[m - (PER_LINE - 1) * h :]
        out[PER_LINE * h :] = ranked[h : m - (PER_LINE - 1) * h]
        return out

    return relayout


def layout(name: str):
    if name == "packed":
        return feature_order
    if name == "spread":
        return _per_block(spread)
    if name.startswith("hot"):
        return _per_block(hot(int(name[3:])))
    raise ValueError(f"unknown layout {name!r}: packed, spread or hotH (e.g. hot512)")


def fit(X, y, alpha, f_star, name, workers):
    """(whole fit s, the workers' compute s per worker, epochs)."""
    estimator_module.feature_order = layout(name)
    model = ProxSGDClassifier(
        penalty="l1", alpha=alpha, fit_intercept=False, backend="threads", n_workers=workers,
        threads_per_worker=1, random_state=0, callback=lambda e: e["objective"] <= f_star * 1.01,
    ).fit(X, y)  # fmt: skip
    compute = sum(w["compute_seconds"] for w in model.telemetry_["workers"]) / workers
    return model.history_[-1]["seconds"], compute, model.history_[-1]["epoch"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", default=["packed", "spread"])
    parser.add_argument("--alphas", default="1e-4,1e-5")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--optima", default="benchmarks/results/proxsgd_optima.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in args.layouts:
        layout(name)  # (a wrong name fails before any fit)
    optima = json.loads(Path(args.optima).read_text())
    X, y = LOADERS["news20"]()[:2]
    lines = [f"Command: `python benchmarks/feature_spread.py --layouts {' '.join(args.layouts)} "
             f"--alphas {args.alphas} --rounds {args.rounds}`", ""]  # fmt: skip
    arms = [(name, workers) for name in args.layouts for workers in (1, 2)]
    for alpha in map(float, args.alphas.split(",")):
        f_star = optima[f"news20/alpha={alpha:g}"]["objective"]
        for arm in arms:  # warm: compiled code
            fit(X, y, alpha, f_star, *arm)
        runs = {arm: [] for arm in arms}
        for r in range(args.rounds):
            for arm in arms if r % 2 == 0 else arms[::-1]:
                runs[arm].append(fit(X, y, alpha, f_star, *arm))
        med = {arm: np.median(np.array(v), axis=0) for arm, v in runs.items()}
        lines += [f"## news20, alpha {alpha:g}", "",
                  "| layout | workers | whole fit s | compute s | epochs |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {n} | {w} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.1f} |" for (n, w), m in med.items()]
        lines.append("")
        first = args.layouts[0]
        for name in args.layouts:
            pairs = [a[0] / b[0] for a, b in zip(runs[(name, 1)], runs[(name, 2)], strict=True)]
            compute = med[(name, 1)][1] / med[(name, 2)][1]
            lines.append(f"- {name}: 2 workers / 1 to 1e-2, median of the rounds {np.median(pairs):.2f}x "
                         f"({min(pairs):.2f}-{max(pairs):.2f}); compute {compute:.2f}x")  # fmt: skip
        for name in args.layouts[1:]:
            for workers in (1, 2):
                r = [a[0] / b[0] for a, b in zip(runs[(first, workers)], runs[(name, workers)], strict=True)]
                lines.append(f"- {workers} worker(s), whole fit {first} / {name}: {np.median(r):.2f} "
                             f"({min(r):.2f}-{max(r):.2f}; above 1: {name} faster)")  # fmt: skip
        lines.append("")
        print("\n".join(lines), flush=True)
        lines = []


if __name__ == "__main__":
    main()
