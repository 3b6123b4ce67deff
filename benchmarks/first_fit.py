"""The first processes fit of a session: worker processes spawned as the fit begins (their imports
beside the setup, engines/pool.py `prestart`, forced here: by default it runs only where a core is
free for each worker beside the setup's threads) against spawned when the workers are needed
(after the setup), each fit in a fresh Python process as a user's script runs it.

The time is the whole `fit` call (data already loaded; the interpreter's own imports are not in
it), with the fit's setup and worker start (`telemetry_["startup_seconds"]`: from the engine's
start to every worker ready) beside it. The arms alternate, one fresh process each, `--rounds`
times; medians and ranges, and each round's ratio.

    python benchmarks/first_fit.py --rounds 5 --out benchmarks/results/first_fit.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

CASES = {
    "news20 ProxSGD default, alpha 1e-4, 2 workers": "news20",
    "a9a ProxSGD default, alpha 1e-4, 2 workers": "a9a",
    "MNIST 10k EigenPro, 1 epoch, 2 workers": "mnist",
    "synthetic 2*10^5 x 10^6 ProxSGD, 2 epochs, 2 workers": "synthetic",
}


def child(case: str, prestart: bool) -> dict:
    from asyncopt import EigenProClassifier, ProxSGDClassifier
    from asyncopt.engines import transports

    if prestart:  # (forced: by default only where cores are free beside the setup's threads)
        transports.idle_cores = lambda: 64
    else:  # (the fit's transport spawns the workers after the setup)
        transports.prestart_processes = lambda n_workers: None
    common = dict(backend="processes", n_workers=2, threads_per_worker=1, random_state=0)
    if case == "mnist":
        from asyncopt.datasets import load_mnist

        X, y, _, _ = load_mnist()
        X, y = X[:10_000], y[:10_000]
        model = EigenProClassifier(bandwidth=10.0, epochs=1, **common)
    else:
        if case == "news20":
            from asyncopt.datasets import load_news20

            X, y, _, _ = load_news20()
            extra = {}
        elif case == "a9a":
            from asyncopt.datasets import load_a9a

            X, y, _, _ = load_a9a()
            extra = {}
        else:
            from bench_proxsgd_large import generate

            X, y, _ = generate(200_000, 1_000_000, 50, 1000, seed=0)
            extra = dict(max_epochs=2, tol=None)
        model = ProxSGDClassifier(penalty="l1", alpha=1e-4, fit_intercept=False, **extra, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - t0
    setup = model.telemetry_.get("setup_seconds", getattr(model, "setup_seconds_", float("nan")))
    return {"fit": seconds, "start": model.telemetry_["startup_seconds"], "setup": setup}


def run_child(case: str, prestart: bool) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", case, "--prestart", str(int(prestart))],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES.values()))
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None)
    parser.add_argument("--prestart", type=int, default=1)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, bool(args.prestart))))
        return
    wanted = args.cases.split(",")
    lines = [
        "# The first processes fit of a session: workers spawned as the fit begins, or after the setup",
        "",
        f"Command: `python benchmarks/first_fit.py --rounds {args.rounds} --cases {args.cases}`",
        "",
        "Each fit in a fresh Python process (data loaded before the clock starts); arms alternate. Seconds,",
        "median (range) over the rounds; `start` is the engine's start to every worker ready.",
        "",
        "| case | fit, spawned at the start | fit, spawned after the setup | ratio (median of rounds) "
        "| start: at the start / after | setup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, case in CASES.items():
        if case not in wanted:
            continue
        runs = {True: [], False: []}
        for r in range(args.rounds):
            for prestart in (True, False) if r % 2 == 0 else (False, True):
                runs[prestart].append(run_child(case, prestart))
        on, off = runs[True], runs[False]
        ratios = [b["fit"] / a["fit"] for a, b in zip(on, off, strict=True)]

        def med(rows, key):
            values = [row[key] for row in rows]
            return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

        lines.append(
            f"| {label} | {med(on, 'fit')} | {med(off, 'fit')} | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {statistics.median(r['start'] for r in on):.2f} / "
            f"{statistics.median(r['start'] for r in off):.2f} | {med(on + off, 'setup')} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
