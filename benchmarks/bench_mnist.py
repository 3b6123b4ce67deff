"""EigenPro on full MNIST against the exact solver, with kernel throughput against matmul.

Run:  .venv/bin/python benchmarks/bench_mnist.py [--threads 2] [--out benchmarks/results/mnist.md]

Everything is measured in this one run, side by side:
1. asyncopt EigenProClassifier (Laplacian, bandwidth 10, automatic settings) for 5 epochs, test
   accuracy 10 times during epoch 1 and after each epoch; time to 97.7 / 98.0 / 98.3% with setup.
2. the same solver with the public EigenPro 2 step rule (step_size="eigenpro2": batch m*, eta = m/beta)
   until it reaches 98.0%, isolating the effect of asyncopt's step rule from the implementation.
3. the exact interpolant, scipy.linalg.solve (Cholesky) in float64 and float32 on 10,000 and 20,000
   points, kernel matrix construction included.
4. GFLOP/s of asyncopt's chunked kernel product K(X_B, X) @ alpha for the batch it chose, next to
   plain torch matmuls X_B @ X.T of the same shapes: one call, and chunked like asyncopt
   (bench_kernel.throughput: interleaved rounds).
Timings exclude test-accuracy evaluation (asyncopt's history seconds do). Seconds are wall time on
a shared machine: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import scipy.linalg
import torch
from bench_kernel import throughput  # benchmarks/ is the script's directory, so on sys.path

from asyncopt import EigenProClassifier
from asyncopt.datasets import load_mnist
from asyncopt.kernels import KernelData, make_kernel
from asyncopt.options import ComputeOptions

BANDWIDTH = 10.0
TARGETS = (0.977, 0.980, 0.983)


def time_to(history, target):
    for h in history:
        if h["val_metric"] is not None and h["val_metric"] >= target:
            return h["seconds"], h["epoch"]
    return None, None


def asyncopt_run(X, y, Xt, yt, step_size, epochs, stop_at=None):
    history = []

    def per_epoch_evals(entry):
        history.append(entry)
        return stop_at is not None and entry.val_metric >= stop_at

    clf = EigenProClassifier(
        bandwidth=BANDWIDTH,
        epochs=epochs,
        evals_per_epoch=10,
        step_size=step_size,
        random_state=0,
        callback=per_epoch_evals,
    )
    clf.fit(X, y, X_val=Xt, y_val=yt)
    return clf


def exact_solve(X, y, Xt, yt, dtype):
    t0 = time.perf_counter()
    Xd = torch.as_tensor(X, dtype=dtype)
    K = torch.cdist(Xd, Xd).div_(-BANDWIDTH).exp_()
    Y = torch.nn.functional.one_hot(torch.as_tensor(y), 10).to(dtype)
    if len(X) <= 10_000:
        alpha = torch.as_tensor(scipy.linalg.solve(K.numpy(), Y.numpy(), assume_a="pos", check_finite=False))
    else:
        # scipy.linalg.solve (its OpenBLAS) segfaulted here in float64 at n = 20,000: use torch's LAPACK
        L = torch.linalg.cholesky(K)
        del K
        alpha = torch.cholesky_solve(Y, L)
    seconds = time.perf_counter() - t0
    Kt = torch.cdist(torch.as_tensor(Xt, dtype=dtype), Xd).div_(-BANDWIDTH).exp_()
    acc = float(np.mean((Kt @ alpha).argmax(1).numpy() == yt))
    return seconds, acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y, Xt, yt = load_mnist()
    lines = [
        f"# MNIST benchmark ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads)",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
    ]

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    clf = asyncopt_run(X, y, Xt, yt, "auto", args.epochs)
    emit(f"## asyncopt EigenPro, full MNIST (60,000 x 784), Laplacian h={BANDWIDTH}")
    emit(
        f"automatic settings: s={clf.subsample_size_}, q={clf.n_components_}, m*={clf.critical_batch_size_:.0f}, "
        f"batch m={clf.batch_size_}, eta={clf.step_size_:.1f}; setup {clf.setup_seconds_:.2f} s "
        f"(included in every time below); features kept after dropping constant ones: {clf._data.X.shape[1]}"
    )
    emit("")
    emit("| epoch | seconds | test accuracy | train MSE (1,000-point subsample) |")
    emit("|---:|---:|---:|---:|")
    for h in clf.history_:
        if h["epoch"] <= 1 or abs(h["epoch"] - round(h["epoch"])) < 1e-9:
            emit(f"| {h['epoch']:.1f} | {h['seconds']:.1f} | {h['val_metric']:.4f} | {h['train_mse']:.4f} |")
    ep2 = asyncopt_run(X, y, Xt, yt, "eigenpro2", 2, stop_at=0.98)
    emit("")
    emit("## time to test accuracy (setup included)")
    emit("| target | asyncopt (auto step) | same code, EigenPro 2 step rule | public EigenPro 2 (issue reference) |")
    emit("|---:|---:|---:|---:|")
    for target in TARGETS:
        a, ae = time_to(clf.history_, target)
        b, be = time_to(ep2.history_, target)
        cell_a = f"{a:.1f} s ({ae:.1f} ep)" if a else "not reached"
        cell_b = f"{b:.1f} s ({be:.1f} ep)" if b else ("not reached" if target <= 0.98 else "not run")
        ref = {0.980: "about 49 s (1 epoch, 98.1%)"}.get(target, "")
        emit(f"| {target:.1%} | {cell_a} | {cell_b} | {ref} |")
    a98, _ = time_to(clf.history_, 0.98)
    if a98:
        emit("")
        emit(
            f"asyncopt time to 98.0% / public EigenPro 2's (49 s + 0.45 s setup, measured by the issue's author "
            f"on this kind of machine, not in this run): {a98 / 49.45:.2f}x (goal <= 0.8x)"
        )
    emit(f"EigenPro 2 step rule settings: batch m={ep2.batch_size_}, eta={ep2.step_size_:.1f}")
    emit("")
    emit("## exact interpolant against asyncopt on the same points (kernel matrix included)")
    emit("Exact: Cholesky solve of K alpha = Y (scipy.linalg.solve at 10,000, torch.linalg.cholesky at 20,000).")
    emit("asyncopt: the same n points, 5 epochs, test accuracy 4 times an epoch; and full MNIST from above.")
    emit("")
    emit(
        "| n | exact float64 | exact float32 | asyncopt on n points: time to float32's accuracy "
        "| asyncopt on n points, 5 epochs | full-MNIST asyncopt: time to float32's accuracy |"
    )
    emit("|---:|---:|---:|---:|---:|---:|")
    for n in (10_000, 20_000):
        s64, a64 = exact_solve(X[:n], y[:n], Xt, yt, torch.float64)
        s32, a32 = exact_solve(X[:n], y[:n], Xt, yt, torch.float32)
        sub = EigenProClassifier(bandwidth=BANDWIDTH, epochs=5, evals_per_epoch=4, random_state=0)
        sub.fit(X[:n], y[:n], X_val=Xt, y_val=yt)
        t_sub, e_sub = time_to(sub.history_, a32)
        t_full, e_full = time_to(clf.history_, a32)
        last = sub.history_[-1]
        emit(
            f"| {n} | {s64:.1f} s, {a64:.4f} | {s32:.1f} s, {a32:.4f} | "
            + (f"{t_sub:.1f} s ({e_sub:.2f} ep), {s32 / t_sub:.1f}x faster" if t_sub else "not reached")
            + f" | {last['seconds']:.1f} s, {last['val_metric']:.4f} | "
            + (f"{t_full:.1f} s ({e_full:.1f} ep)" if t_full else "not reached")
            + " |"
        )
    emit("")
    data = KernelData.from_array(X, make_kernel("laplacian", BANDWIDTH), ComputeOptions())
    d = data.X.shape[1]
    res = throughput(data, clf.batch_size_, rounds=10)
    emit(f"## kernel throughput, batch m={clf.batch_size_} x n=60,000 x d={d} (2 m n d flops)")
    emit("10 interleaved rounds, best of each (benchmarks/bench_kernel.py has the profile)")
    emit("")
    emit("| computation | GFLOP/s |")
    emit("|---|---:|")
    emit(
        f"| asyncopt kernel_product K(X_B, X) @ alpha (Laplacian, chunks of {res['width']} columns) "
        f"| {res['kernel_gflops']:.0f} |"
    )
    emit(f"| torch.mm(X_B, X.T), one call | {res['mm_one_call_gflops']:.0f} |")
    emit(f"| torch.mm(X_B, X[chunk].T), same chunks | {res['mm_chunks_gflops']:.0f} |")
    emit("")
    emit(
        f"kernel / one-call matmul: {res['kernel/mm_one_call_best']:.2f}; kernel / chunked matmul: "
        f"{res['kernel/mm_chunks_best']:.2f} (median of the rounds' ratios {res['kernel/mm_chunks_median']:.2f}; "
        "goal >= 0.90)"
    )
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
