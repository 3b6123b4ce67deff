"""backend="ray" against backend="processes", side by side in one run, same worker count.

For each data set and batch size: the fit's wall time (what a user waits for: Ray actors' start
included), the training throughput (samples / training seconds, evaluations excluded), the final
objective (ProxSGD) or test accuracy (EigenPro), and, for Ray, the share of the workers' time spent
waiting on messages (pulls and pushes) rather than computing (telemetry_). A Ray task is one batch,
so the batch size sets how much compute each round trip carries.

    python benchmarks/ray_vs_processes.py --out benchmarks/results/ray_vs_processes.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def wait_share(telemetry) -> float:
    """The share of the workers' busy time spent on messages (Ray's pulls and pushes)."""
    workers = telemetry["workers"]
    compute = sum(w["compute_seconds"] for w in workers)
    messages = sum(w["message_seconds"] for w in workers)
    return messages / max(compute + messages, 1e-12)


def fit_row(data: str, backend: str, est, X, y, X_test, y_test, metric: str) -> dict:
    """Fit `est`, timed as a user waits for it, and its row of the table."""
    t0 = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - t0
    last = est.history_[-1]
    row = {
        "data": data, "batch": est.batch_size_, "backend": backend, "wall": wall,
        "throughput": last["samples"] / last["seconds"], "metric": last[metric], "test": est.score(X_test, y_test),
        "train_throughput": last["samples"] / training_seconds(last, est.telemetry_),
        "wait": wait_share(est.telemetry_), "staleness": est.telemetry_["staleness"]["mean"],
        "message_ms": message_ms(est.telemetry_),
    }  # fmt: skip
    print(row, flush=True)
    return row


def training_seconds(last: dict, telemetry: dict) -> float:
    """The history's seconds (from the start of fit, evaluations excluded) less setup and the workers' start."""
    return last["seconds"] - telemetry["setup_seconds"] - telemetry["startup_seconds"]


def message_ms(telemetry) -> float:
    """Milliseconds of pulls and pushes per task (Ray)."""
    workers = telemetry["workers"]
    return 1e3 * sum(w["message_seconds"] for w in workers) / max(1, sum(w["steps"] for w in workers))


def proxsgd_rows(name, loader, batches, epochs, workers):
    from asyncopt import ProxSGDClassifier

    X, y, X_test, y_test = loader()
    rows = []
    for batch in batches:
        for backend in ("processes", "ray"):
            est = ProxSGDClassifier(
                penalty="l1", alpha=1e-4, batch_size=batch, max_epochs=epochs, tol=None, random_state=0,
                backend=backend, n_workers=workers, threads_per_worker=1,
            )  # fmt: skip
            rows.append(fit_row(name, backend, est, X, y, X_test, y_test, "objective"))
    return rows


def eigenpro_rows(batches, workers):
    from asyncopt import EigenProClassifier
    from asyncopt.datasets import load_mnist

    X, y, Xt, yt = load_mnist()
    rows = []
    for batch in batches:
        for backend in ("processes", "ray"):
            est = EigenProClassifier(
                bandwidth=10.0, epochs=1, batch_size=batch, random_state=0, backend=backend, n_workers=workers,
                threads_per_worker=1,
            )  # fmt: skip
            rows.append(fit_row("MNIST", backend, est, X, y, Xt, yt, "train_mse"))
    return rows


def table(rows) -> str:
    lines = [
        "| data | batch | backend | fit wall (s) | samples/s, whole fit | samples/s, training | ray / processes, "
        "training | final objective or train MSE "
        "| test accuracy | workers' time on messages | messages per task (ms) | mean staleness |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {}
    for r in rows:
        key = (r["data"], r["batch"])
        if r["backend"] == "processes":
            base[key] = r["train_throughput"]
        ratio = f"{r['train_throughput'] / base[key]:.2f}" if r["backend"] == "ray" and key in base else ""
        ray = r["backend"] == "ray"
        wait, ms = (f"{100 * r['wait']:.0f}%", f"{r['message_ms']:.2f}") if ray else ("", "")
        lines.append(
            f"| {r['data']} | {r['batch']} | {r['backend']} | {r['wall']:.1f} | {r['throughput']:,.0f} "
            f"| {r['train_throughput']:,.0f} | {ratio} "
            f"| {r['metric']:.5f} | {r['test']:.4f} | {wait} | {ms} | {r['staleness']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parts", default="a9a,news20,mnist")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    from asyncopt.datasets import load_a9a, load_news20

    parts = args.parts.split(",")
    rows = []
    if "a9a" in parts:
        rows += proxsgd_rows("a9a", load_a9a, [32, 256, 2048], 5, args.workers)
    if "news20" in parts:
        rows += proxsgd_rows("news20", load_news20, [32, 256, 2048], 5, args.workers)
    if "mnist" in parts:
        rows += eigenpro_rows([250, 1000], args.workers)
    text = (
        f"Command: `python benchmarks/ray_vs_processes.py --workers {args.workers} --parts {args.parts}`\n\n"
        f"{args.workers} workers x 1 thread on {os.cpu_count()} cores; ProxSGD: L1 logistic, alpha 1e-4, 5 epochs; "
        "EigenPro: full MNIST, 1 epoch.\n\n" + table(rows) + "\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
