"""Kernel product throughput against matmul, with a profile of where the rest of the time goes.

Run:  .venv/bin/python benchmarks/bench_kernel.py [--rounds 10] [--fused] [--out benchmarks/results/kernel.md]

On full MNIST (60,000 x 717 kept features, Laplacian h = 10), for the batch EigenPro picks (699 rows)
and two others, side by side in one run:
1. asyncopt's chunked K(X_B, X) @ alpha against torch.mm(X_B, X[chunk].T) over the same chunks
   (fresh outputs, and into one reused buffer), and against one torch.mm(X_B, X.T). The rounds
   interleave the three, so drift on a shared machine hits all; the table gives the best round of
   each and the median of the per-round ratios.
2. A profile of one product at the automatic batch: the seconds of each pass over the chunks (the
   distance matmul, the elementwise passes of the Laplacian, the product with alpha), timed pass by
   pass with the chunks kept in cache as the real product has them.
3. With --fused: the elementwise passes fused into one by torch.compile (inductor, C++), timed the
   same way, with its compile time: what a fused pass would buy, and what it costs to start.
GFLOP/s count 2 m n d flops for every computation (the matmul's work), so they compare directly.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np
import torch

from asyncopt.datasets import load_mnist
from asyncopt.kernels import KernelData, kernel_product, make_kernel
from asyncopt.kernels.blocks import PREFERRED_CHUNK_ELEMENTS
from asyncopt.kernels.functions import roundoff_floor
from asyncopt.options import ComputeOptions

BANDWIDTH = 10.0


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(data: KernelData, m: int, rounds: int = 10, seed: int = 0) -> dict:
    """GFLOP/s of kernel_product for m rows against matmuls of the same shapes, interleaved rounds."""
    n, d = data.X.shape
    flops = 2.0 * m * n * d
    rng = np.random.default_rng(seed)
    alpha = torch.randn(n, 10)
    rows = torch.as_tensor(np.sort(rng.choice(n, m, replace=False)))
    A = data.X[rows]
    width = max(128, PREFERRED_CHUNK_ELEMENTS // m)
    buffer = torch.empty(m * width)

    def kernel():
        kernel_product(data, alpha, rows=rows, budget_bytes=2**32)

    def matmul_chunked():
        for j in range(0, n, width):
            torch.mm(A, data.X[j : j + width].T)

    def matmul_chunked_buffer():
        for j in range(0, n, width):
            k = min(width, n - j)
            torch.mm(A, data.X[j : j + k].T, out=buffer[: m * k].view(m, k))

    def matmul_one_call():
        torch.mm(A, data.X.T)

    fns = {
        "kernel": kernel,
        "mm_chunks": matmul_chunked,
        "mm_chunks_buffer": matmul_chunked_buffer,
        "mm_one_call": matmul_one_call,
    }
    for fn in fns.values():
        fn()  # warm up
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
    out = {"m": m, "width": width, "flops": flops}
    for name, ts in times.items():
        out[f"{name}_gflops"] = flops / min(ts) / 1e9
    for ref in ("mm_chunks", "mm_chunks_buffer", "mm_one_call"):
        out[f"kernel/{ref}_best"] = min(times[ref]) / min(times["kernel"])
        out[f"kernel/{ref}_median"] = statistics.median(r / k for r, k in zip(times[ref], times["kernel"], strict=True))
    return out


def profile(data: KernelData, m: int, rounds: int = 5, seed: int = 0, fused=None) -> dict:
    """Seconds per pass of one product K(X_B, X) @ alpha (Laplacian), chunk by chunk, best of rounds.

    Each pass is timed over all chunks with the chunk it works on freshly computed by the previous
    passes (so in cache, as in the real product); `fused(d2, a_sq, floor, scale)` replaces the four
    elementwise passes when given."""
    n, _ = data.X.shape
    rng = np.random.default_rng(seed)
    rows = torch.as_tensor(np.sort(rng.choice(n, m, replace=False)))
    A, a_sq = data.X[rows], data.sqnorm[rows]
    W = torch.randn(n, 16)
    width = max(128, PREFERRED_CHUNK_ELEMENTS // m)
    floor = roundoff_floor(data.max_sqnorm, data.options.dtype)
    buffer = torch.empty(m * width)
    scale = -1.0 / BANDWIDTH
    names = ["norms (broadcast add)", "distance matmul", "threshold", "sqrt", "scale", "exp", "product with alpha"]
    if fused is not None:
        names = ["distance matmul (bias-initialised addmm)", "fused elementwise (compiled)", "product with alpha"]
    out = torch.zeros(m, 16)
    # each step takes the chunk (d2 buffer, columns B, their norms, rows of alpha)
    plain_steps = [
        lambda d2, B, b_sq, Wc: torch.add(a_sq.unsqueeze(1), b_sq.unsqueeze(0), out=d2),
        lambda d2, B, b_sq, Wc: d2.addmm_(A, B.T, alpha=-2.0),
        lambda d2, B, b_sq, Wc: torch.threshold_(d2, floor, 0.0),
        lambda d2, B, b_sq, Wc: d2.sqrt_(),
        lambda d2, B, b_sq, Wc: d2.mul_(scale),
        lambda d2, B, b_sq, Wc: d2.exp_(),
        lambda d2, B, b_sq, Wc: out.addmm_(d2, Wc),
    ]
    fused_result = {}
    fused_steps = [
        lambda d2, B, b_sq, Wc: torch.addmm(b_sq.unsqueeze(0), A, B.T, alpha=-2.0, out=d2),
        lambda d2, B, b_sq, Wc: fused_result.__setitem__("K", fused(d2, a_sq, floor, scale)),
        lambda d2, B, b_sq, Wc: out.addmm_(fused_result["K"], Wc),
    ]
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for start in range(0, n, width):
            stop = min(start + width, n)
            d2 = buffer[: m * (stop - start)].view(m, stop - start)
            B, b_sq = data.X[start:stop], data.sqnorm[start:stop]
            chunk = (d2, B, b_sq, W[start:stop])
            steps = plain_steps if fused is None else fused_steps
            for name, step in zip(names, steps, strict=True):
                t0 = time.perf_counter()
                step(*chunk)
                spent[name] += time.perf_counter() - t0
        for name in names:
            best[name] = min(best[name], spent[name])
    return best


def compiled_elementwise():
    """The Laplacian's elementwise passes as one torch.compile'd function, and its compile seconds."""

    def laplacian_tail(d2, a_sq, floor: float, scale: float):
        d2 = d2 + a_sq.unsqueeze(1)
        d2 = torch.where(d2 > floor, d2, 0.0)
        return torch.exp(torch.sqrt(d2) * scale)

    fused = torch.compile(laplacian_tail, dynamic=True, fullgraph=True)
    t0 = time.perf_counter()
    fused(torch.rand(64, 48), torch.rand(64), 1e-4, -0.1)
    return fused, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batches", default="350,699,1400", help="query rows m, comma separated")
    parser.add_argument("--fused", action="store_true", help="also time a torch.compile'd elementwise pass")
    parser.add_argument("--out", default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X = load_mnist()[0]
    data = KernelData.from_array(X, make_kernel("laplacian", BANDWIDTH), ComputeOptions())
    n, d = data.X.shape
    lines = []

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    emit(
        f"# Kernel throughput ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads)"
    )
    emit("")
    emit(f"Command: `{' '.join(['python', *sys.argv])}`")
    emit("")
    emit(
        f"Full MNIST, n = {n:,}, d = {d} (constant features dropped), Laplacian h = {BANDWIDTH:g}, float32; "
        f"{args.rounds} interleaved rounds; GFLOP/s = 2 m n d / best round."
    )
    emit("")
    emit(
        "| m | chunk columns | kernel GFLOP/s | mm chunks | mm chunks, reused buffer | mm one call | "
        "kernel / mm chunks (best; median of rounds) | kernel / mm one call (best; median) |"
    )
    emit("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in [int(b) for b in args.batches.split(",")]:
        r = throughput(data, m, args.rounds)
        emit(
            f"| {m} | {r['width']} | {r['kernel_gflops']:.0f} | {r['mm_chunks_gflops']:.0f} | "
            f"{r['mm_chunks_buffer_gflops']:.0f} | {r['mm_one_call_gflops']:.0f} | "
            f"{r['kernel/mm_chunks_best']:.3f}; {r['kernel/mm_chunks_median']:.3f} | "
            f"{r['kernel/mm_one_call_best']:.3f}; {r['kernel/mm_one_call_median']:.3f} |"
        )
    emit("")
    m = 699
    parts = profile(data, m)
    total = sum(parts.values())
    emit(f"## Profile of one product, m = {m} (seconds over all chunks, best of 5; pass by pass)")
    emit("")
    emit("| pass | seconds | share |")
    emit("|---|---:|---:|")
    for name, sec in parts.items():
        emit(f"| {name} | {sec:.4f} | {sec / total:.1%} |")
    matmul = parts["distance matmul"] + parts["norms (broadcast add)"]
    emit(f"| total | {total:.4f} | |")
    emit("")
    emit(
        f"Distance matmul (with its norms) / total: {matmul / total:.3f}: the ratio the product "
        "would reach against the chunked matmul if nothing else were timed."
    )
    if args.fused:
        fused, compile_seconds = compiled_elementwise()
        fparts = profile(data, m, fused=fused)
        ftotal = sum(fparts.values())
        emit("")
        emit(f"## Elementwise passes fused by torch.compile (compile: {compile_seconds:.1f} s in this process)")
        emit("")
        emit("| pass | seconds | share |")
        emit("|---|---:|---:|")
        for name, sec in fparts.items():
            emit(f"| {name} | {sec:.4f} | {sec / ftotal:.1%} |")
        emit(f"| total | {ftotal:.4f} | |")
        emit("")
        first = list(fparts)[0]
        emit(
            f"Distance matmul / total with the fused pass: {fparts[first] / ftotal:.3f}; "
            f"saving per product {total - ftotal:+.4f} s."
        )
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
