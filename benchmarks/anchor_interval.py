"""How often the SVRG anchor should move: time and epochs to 1e-2 / 1e-3 against `anchor_epochs`.

    python benchmarks/anchor_interval.py --rounds 3 --out benchmarks/results/anchor_interval.md

L1 logistic regression (no intercept), every other parameter at its default, `anchor_epochs` swept
over fixed intervals (1, 1/2, 1/4, 1/8 epochs) and "auto". Problems:

- a9a and news20 at alpha 1e-4 and 1e-5 (F* from results/proxsgd_optima.json);
- the same sets with their rows replicated 16 times (`a9a x16`: 520,976 rows, `news20 x16`: 301,536):
  F is a mean over the rows, so replication keeps F and its optimum, and gives real data of large n;
- the 2*10^6 x 10^6 synthetic problem of bench_proxsgd_large.py (its cached file and reference F*).

Each fit stops once F is within 1e-3 of F* (a callback) or at the tol rule or max_epochs. Times are the
history's training seconds (setup included, evaluations of F excluded: what a user waits for, less the
history's bookkeeping). The intervals alternate within a round and their order is reversed every other
round; medians over the rounds. One process: a warm-up fit first (compiled code loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_proxsgd import LOADERS  # noqa: E402
from bench_proxsgd_large import load_problem  # noqa: E402

from asyncopt import ProxSGDClassifier  # noqa: E402
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm  # noqa: E402

OPTIMA = Path(__file__).parent / "results" / "proxsgd_optima.json"
LARGE = Path("/tmp/asyncopt-large/large_n2000000_d1000000_k50_p10000_s0.npz")
TARGETS = (1e-2, 1e-3)


def problems(names, large_path: Path):
    """(label, X, y, alpha, F*, max_epochs) for each requested problem."""
    optima = json.loads(OPTIMA.read_text())
    for name in names:
        if name == "large":
            reference = large_path.with_name(large_path.stem + "-reference.json")
            if not large_path.exists() or not reference.exists():
                raise SystemExit(f"{large_path} or its reference: run bench_proxsgd_large.py first (it caches both)")
            X, y, alpha = load_problem(large_path)
            yield "large 2e6 x 1e6", X, y, alpha, json.loads(reference.read_text())["curve"][-1][1], 15
            continue
        base, _, times = name.partition(" x")
        X, y = LOADERS[base]()[:2]
        if times:
            X, y = sp.vstack([X] * int(times)).tocsr(), np.concatenate([y] * int(times))
        for alpha in (1e-4, 1e-5):
            yield f"{name}, alpha {alpha:g}", X, y, alpha, optima[f"{base}/alpha={alpha:g}"]["objective"], 100


def fit(X, y, alpha, f_star, anchor, workers, max_epochs):
    moves = []
    original = ProxSGDAlgorithm.refresh_snapshot

    def counted(self, params):
        moves.append(1)
        return original(self, params)

    ProxSGDAlgorithm.refresh_snapshot = counted
    try:
        backend = {"serial": {}, "threads": {"backend": "threads", "n_workers": workers, "threads_per_worker": 1}}
        t0 = time.perf_counter()
        model = ProxSGDClassifier(
            penalty="l1", alpha=alpha, fit_intercept=False, anchor_epochs=anchor, max_epochs=max_epochs,
            random_state=0, callback=lambda e: e.objective <= f_star * (1 + TARGETS[-1]),
            **backend["serial" if workers == 0 else "threads"],
        ).fit(X, y)  # fmt: skip
        wall = time.perf_counter() - t0
    finally:
        ProxSGDAlgorithm.refresh_snapshot = original
    history = model.history_

    def first(key, target):
        return next((h[key] for h in history if (h["objective"] - f_star) / f_star <= target), None)

    return {
        "seconds": [first("seconds", t) for t in TARGETS],
        "epochs": [first("epoch", t) for t in TARGETS],
        "wall": wall,
        "anchors": len(moves),
        "interval": model.anchor_epochs_,
        "last": (history[-1]["objective"] - f_star) / f_star,
        "setup": model.telemetry_["setup_seconds"],
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cell(values, digits=2):
    """Median (min-max) of the rounds; '-' for a round that did not reach the target."""
    reached = [v for v in values if v is not None]
    if not reached:
        return "-"
    text = f"{statistics.median(reached):.{digits}f}"
    if len(reached) > 1:
        text += f" ({min(reached):.{digits}f}-{max(reached):.{digits}f})"
    return text + ("" if len(reached) == len(values) else f" [{len(values) - len(reached)} missed]")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="*", default=["a9a", "news20", "a9a x16", "news20 x16", "large"])
    p.add_argument("--intervals", nargs="*", default=["1", "0.5", "0.25", "0.125", "auto"])
    p.add_argument("--workers", type=int, default=1, help="worker threads (0: the default serial backend)")
    p.add_argument("--large-workers", type=int, default=2, help="worker threads on the large problem")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--large", type=Path, default=LARGE)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    intervals = [a if a == "auto" else float(a) for a in args.intervals]
    Xw, yw = LOADERS["a9a"]()[:2]  # (warm-up: compiled code loaded)
    ProxSGDClassifier(penalty="l1", alpha=1e-4, max_epochs=1, backend="threads", n_workers=1).fit(Xw, yw)

    rows = []
    for label, X, y, alpha, f_star, max_epochs in problems(args.problems, args.large):
        workers = args.large_workers if label.startswith("large") else args.workers
        runs = {a: [] for a in intervals}
        for r in range(args.rounds):
            for a in intervals if r % 2 == 0 else intervals[::-1]:
                result = fit(X, y, alpha, f_star, a, workers, max_epochs)
                runs[a].append(result)
                print(label, a, json.dumps(result), flush=True)
        base = median([run["seconds"][0] for run in runs[intervals[0]]])
        for a in intervals:
            done = runs[a]
            to_1e2 = median([run["seconds"][0] for run in done])
            rows.append(
                f"| {label} | {workers or 'serial'} | {a if a == 'auto' else f'{a:g}'} "
                f"({done[0]['interval'] or 1:.3g}) | {cell([run['seconds'][0] for run in done], 3)} | "
                f"{cell([run['seconds'][1] for run in done], 3)} | {cell([run['epochs'][0] for run in done], 3)} | "
                f"{cell([run['epochs'][1] for run in done], 3)} | {median([run['anchors'] for run in done]):g} | "
                f"{median([run['setup'] for run in done]):.2f} | "
                f"{'' if base is None or to_1e2 is None else f'{base / to_1e2:.2f}x'} |"
            )
        del X, y

    header = (
        f"Command: `python benchmarks/anchor_interval.py {' '.join(sys.argv[1:])}`\n\n"
        "Medians (min-max) over the rounds; seconds are training seconds to the relative suboptimality, setup "
        "included; anchors: moves of the anchor in the fit, the one at the start included; "
        "speed-up: the first interval's median time to 1e-2 over this one's.\n\n"
        "| problem | workers | anchor_epochs (used) | s to 1e-2 | s to 1e-3 | epochs to 1e-2 | epochs to 1e-3 | "
        "anchors | setup s | speed-up to 1e-2 |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    text = header + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
