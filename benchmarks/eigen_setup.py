"""EigenPro's setup at large n: the Nystrom eigensolve, exact eigh against the top eigenpairs
(randomized subspace iteration, asyncopt.eigenpro.preconditioner.top_eigenpairs), side by side.

Data: MNIST's 70,000 images (train + test) and, for n = 100,000, 30,000 of them again with
Gaussian noise (sd 0.05) added: a synthetic set of MNIST's dimension and spectrum. The subsample
is the automatic one (12,000 at n >= 100,000); both solvers get the same subsample.

    python benchmarks/eigen_setup.py --out benchmarks/results/eigen_setup.md
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def data(n: int) -> np.ndarray:
    from asyncopt.datasets import load_mnist

    X, _, Xt, _ = load_mnist()
    X = np.concatenate([X, Xt])
    rng = np.random.default_rng(0)
    while len(X) < n:
        extra = X[rng.choice(len(X), size=min(n - len(X), len(X)), replace=False)]
        X = np.concatenate([X, np.clip(extra + rng.normal(0, 0.05, extra.shape).astype(np.float32), 0, 1)])
    return X[:n]


def setup(X: np.ndarray, exact: bool) -> dict:
    import asyncopt.eigenpro.preconditioner as pre
    from asyncopt.kernels import KernelData, make_kernel
    from asyncopt.options import ComputeOptions

    options = ComputeOptions(dtype=torch.float32, memory_bytes=16 * 2**30)
    kernel_data = KernelData.from_array(X, make_kernel("laplacian", 10.0), options)
    s = pre.auto_subsample_size(len(X))
    saved = pre.EXACT_EIGH_MAX
    pre.EXACT_EIGH_MAX = s if exact else min(saved, s - 1)
    try:
        t0 = time.perf_counter()
        p = pre.nystrom_preconditioner(kernel_data, s, "auto", pre.DEFAULT_TARGET_BATCH, np.random.default_rng(0))
        seconds = time.perf_counter() - t0
    finally:
        pre.EXACT_EIGH_MAX = saved
    return {"seconds": seconds, "q": p.n_components, "eigenvalues": p.eigenvalues, "m_star": p.critical_batch_size,
            "s": s, "V": p.V}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    X = data(args.n)
    rows = {}
    for name, exact in (("randomized (top eigenpairs)", False), ("exact eigh", True)):
        rows[name] = setup(X, exact)
        print(name, f"{rows[name]['seconds']:.1f} s q={rows[name]['q']}", flush=True)
    a, b = rows["randomized (top eigenpairs)"], rows["exact eigh"]
    q = min(a["q"], b["q"])
    rel = np.abs(a["eigenvalues"][:q] - b["eigenvalues"][:q]) / b["eigenvalues"][:q]
    top = min(20, q - 1)
    overlap = torch.linalg.svdvals(a["V"][:, :top].double().T @ b["V"][:, :top].double() * a["s"]).min().item()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [
        f"Command: `python benchmarks/eigen_setup.py --n {args.n}` (2 cores, float32 data, Laplacian kernel, "
        f"bandwidth 10)",
        "",
        f"n = {args.n:,} (MNIST's 70,000 images and {max(0, args.n - 70_000):,} noisy copies), s = {a['s']:,}.",
        "",
        "| eigensolve | seconds | q | critical batch m* |",
        "|---|---:|---:|---:|",
        *[f"| {k} | {v['seconds']:.1f} | {v['q']} | {v['m_star']:.0f} |" for k, v in rows.items()],
        "",
        f"Ratio exact / randomized: {b['seconds'] / a['seconds']:.1f}x. Top eigenvalues: max relative difference "
        f"{rel[:top].max():.1e} over the first {top}, {rel.max():.1e} over the first {q}; the first {top} "
        f"eigenvectors' subspaces agree to {1 - overlap:.1e} (1 - the smallest cosine of their principal angles). "
        f"Peak resident memory of the process: {peak:.1f} GiB.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
