"""GPU check: every engine and backend with device="cuda", against the CPU, in one run.

Run it as is on a machine with CUDA (one or more GPUs):

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.md

For each configuration it fits and records the wall time (what a user waits for), the training
seconds, the final train MSE / objective and the test accuracy:
- EigenPro on MNIST 10,000 (needs ../shared/data/mnist, or ASYNCOPT_DATA), at most to 99.9% train
  accuracy: serial, threads, processes, ray, and `devices=[every GPU]` (one worker per GPU, each
  with a replica);
- ProxSGD (L1 logistic) on a9a: serial and threads.
The same fits on the CPU come first. `--device cpu` runs only the CPU rows: a dry run for a machine
without a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def eigenpro_configs(device: str, n_gpus: int) -> list[tuple[str, dict]]:
    two = dict(n_workers=2, threads_per_worker=1)
    configs = [
        ("serial", {}),
        ("threads x2", dict(backend="threads", **two)),
        ("processes x2", dict(backend="processes", **two)),
        ("ray x2", dict(backend="ray", **two)),
    ]
    if device.startswith("cuda"):
        share = min(1.0, n_gpus / 2)  # two workers share the GPUs there are
        configs[3] = ("ray x2", dict(backend="ray", **two, resources_per_worker={"num_cpus": 1, "num_gpus": share}))
        configs.append((f"devices x{n_gpus}", dict(backend="threads", devices=[f"cuda:{i}" for i in range(n_gpus)])))
    return configs


def run_eigenpro(device: str, n_gpus: int, rows: list) -> None:
    from asyncopt import EigenProClassifier
    from asyncopt.datasets import load_mnist

    X, y, Xt, yt = load_mnist()
    X, y = X[:10_000], y[:10_000]
    for name, params in eigenpro_configs(device, n_gpus):
        if "devices" not in params:
            params = dict(params, device=device)
        est = EigenProClassifier(bandwidth=10.0, epochs=4, random_state=0, **params)
        t0 = time.perf_counter()
        est.fit(X, y)
        wall = time.perf_counter() - t0
        last = est.history_[-1]
        rows.append(("EigenPro MNIST 10k", device, name, wall, last["seconds"], last["train_mse"], est.score(Xt, yt)))
        print(rows[-1], flush=True)


def run_proxsgd(device: str, rows: list) -> None:
    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a

    X, y, Xt, yt = load_a9a()
    for name, params in [("serial", {}), ("threads x2", dict(backend="threads", n_workers=2, threads_per_worker=1))]:
        est = ProxSGDClassifier(
            penalty="l1", alpha=1e-4, max_epochs=5, tol=None, random_state=0, device=device, **params
        )
        t0 = time.perf_counter()
        est.fit(X, y)
        wall = time.perf_counter() - t0
        last = est.history_[-1]
        rows.append(("ProxSGD a9a", device, name, wall, last["seconds"], last["objective"], est.score(Xt, yt)))
        print(rows[-1], flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default: the CPU rows, then the GPU ones) or cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    devices = ["cpu"]
    n_gpus = 0
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: torch.cuda.is_available() is False (use --device cpu for a dry run)")
        n_gpus = torch.cuda.device_count()
        devices.append("cuda")
    rows: list = []
    for device in devices:
        run_eigenpro(device, n_gpus, rows)
        run_proxsgd(device, rows)
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(n_gpus)) or "none"
    lines = [
        f"Command: `python benchmarks/gpu_check.py --device {args.device}`; GPUs: {gpus}; torch {torch.__version__}",
        "",
        "| fit | device | engine | wall (s) | training (s) | final train MSE / objective | test accuracy |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.5f} | {r[6]:.4f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
