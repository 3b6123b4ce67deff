"""EigenProClassifier at n = 10^5 and 10^6: setup seconds (bandwidth, subsample, eigensolve) against
the seconds of an epoch, and peak memory against memory_gb. Each n runs in its own process (its
peak resident memory is its own).

Data: MNIST's 70,000 images (train + test, their labels) and noisy copies of them (Gaussian noise,
sd 0.05, clipped to [0, 1]) up to n: synthetic, of MNIST's dimension (784) and spectrum. An epoch
at 10^6 is hours on 2 cores, so the fit runs for `--seconds` of training and the epoch's seconds
are extrapolated from the samples it processed (the cost of a batch does not change within an
epoch: every batch multiplies against all n rows).

    python benchmarks/eigen_large_n.py --out benchmarks/results/eigen_large_n.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_data(n: int):
    from asyncopt.datasets import load_mnist

    X, y, Xt, yt = load_mnist()
    X, y = np.concatenate([X, Xt]), np.concatenate([y, yt])
    rng = np.random.default_rng(0)
    parts, labels, have = [X], [y], len(X)
    while have < n:
        pick = rng.choice(len(X), size=min(n - have, len(X)), replace=False)
        noisy = X[pick] + rng.normal(0, 0.05, (len(pick), X.shape[1])).astype(np.float32)
        parts.append(np.clip(noisy, 0, 1, out=noisy))
        labels.append(y[pick])
        have += len(pick)
    return np.concatenate(parts)[:n], np.concatenate(labels)[:n]


def one(n: int, seconds: float, memory_gb: float) -> dict:
    from asyncopt import EigenProClassifier

    X, y = make_data(n)
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    est = EigenProClassifier(bandwidth=10.0, epochs=1, time_limit=seconds, memory_gb=memory_gb, random_state=0)
    t0 = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - t0
    last = est.history_[-1]
    training = last["seconds"] - est.setup_seconds_
    return {
        "n": n, "s": est.subsample_size_, "q": est.n_components_, "batch": est.batch_size_,
        "setup_seconds": est.setup_seconds_, "training_seconds": training, "samples": last["samples"],
        "epoch_seconds": training * n / max(1, last["samples"]), "wall": wall,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "data_gib": data_rss,
        "memory_gb": memory_gb, "data_bytes_gib": X.nbytes / 2**30,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--seconds", type=float, default=60.0, help="training seconds per fit")
    parser.add_argument("--memory-gb", type=float, default=12.0)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.seconds, args.memory_gb)))
        return
    rows = []
    for n in [int(v) for v in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(n), "--seconds", str(args.seconds),
               "--memory-gb", str(args.memory_gb)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        f"Command: `python benchmarks/eigen_large_n.py --sizes {args.sizes} --seconds {args.seconds:g} "
        f"--memory-gb {args.memory_gb:g}` (2 cores, float32, Laplacian kernel, bandwidth 10, serial engine)",
        "",
        "| n | s | q | batch | setup (s) | epoch (s, extrapolated) | setup / epoch | samples trained | "
        "peak memory (GiB) | of which the data set (GiB) | memory_gb |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['s']:,} | {r['q']} | {r['batch']} | {r['setup_seconds']:.1f} | "
            f"{r['epoch_seconds']:,.0f} | {r['setup_seconds'] / r['epoch_seconds']:.2%} | {r['samples']:,} | "
            f"{r['peak_gib']:.2f} | {r['data_bytes_gib']:.2f} | {r['memory_gb']:g} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
