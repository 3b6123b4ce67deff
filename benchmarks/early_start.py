"""Worker processes started before the data is read, as a user's script or the command line runs.

Two flows, each run in a fresh Python process (the pool empty, as at a script's start), the arms
alternating `--rounds` times:

- script: a main block that loads a data set and fits ProxSGD with 2 processes workers, with or
  without `asyncopt.start_worker_pool(2)` as its first line. Timed: the whole block (imports,
  loading, fit) and the fit alone.
- cli: `asyncopt fit ... --backend processes --n-workers 2` (the CLI's main, called in the fresh
  process) on a data file, as shipped (ProxSGD: the pool started before the file is read) or with
  that start patched out. For EigenPro the command line does not start early; its arm "early"
  forces it, to show why. Timed: the command.

    python benchmarks/early_start.py --rounds 3 --out benchmarks/results/early_start.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("ASYNCOPT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCRIPTS = {"news20 ProxSGD (script)": "news20", "a9a ProxSGD (script)": "a9a"}
CLI = {
    "a9a ProxSGD (command line)": ["--model", "proxsgd", "--data", str(DATA / "a9a" / "a9a.gz"), "--penalty", "l1",
                                   "--alpha", "1e-4"],
    "news20 ProxSGD (command line)": ["--model", "proxsgd", "--data",
                                      str(DATA / "news20" / "news20_bydate_all_comp_vs_rest.svm.bz2"), "--penalty",
                                      "l1", "--alpha", "1e-4"],
    "MNIST 10k EigenPro, 1 epoch (command line)": ["--model", "eigenpro", "--data",
                                                   str(DATA / "mnist" / "t10k-images.idx3-ubyte.gz"), "--labels",
                                                   str(DATA / "mnist" / "t10k-labels.idx1-ubyte.gz"), "--epochs", "1"],
}  # fmt: skip


def script_child(case: str, early: bool) -> dict:
    """A user's script, as its main block would run."""
    import warnings

    t0 = time.perf_counter()
    if early:
        import asyncopt

        asyncopt.start_worker_pool(2)
    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a, load_news20

    X, y = (load_news20 if case == "news20" else load_a9a)()[:2]
    t1 = time.perf_counter()
    warnings.simplefilter("ignore")
    ProxSGDClassifier(penalty="l1", alpha=1e-4, backend="processes", n_workers=2, max_epochs=5, tol=None).fit(X, y)
    t2 = time.perf_counter()
    return {"total": t2 - t0, "fit": t2 - t1}


def cli_child(argv: list[str], early: bool) -> dict:
    """`asyncopt fit`, its early start as shipped (ProxSGD), forced (EigenPro) or patched out."""
    import asyncopt.cli.fit as fit
    from asyncopt.cli import main

    if early and "eigenpro" in argv:
        from asyncopt.engines.transports import start_worker_pool

        fit._start_workers = lambda model, given: start_worker_pool(given["n_workers"])
    elif not early:
        fit._start_workers = lambda model, given: None
    t0 = time.perf_counter()
    assert main(["fit", *argv, "--backend", "processes", "--n-workers", "2", "--quiet"]) == 0
    return {"total": time.perf_counter() - t0}


def run_child(kind: str, case: str, early: bool, out: str) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps([kind, case, early, out])]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--cases", default=None, help="comma-separated words a case's name must contain one of")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        kind, case, early, out = json.loads(args.child)
        if kind == "script":
            result = script_child(case, early)
        else:
            result = cli_child([*CLI[case], "--output", out], early)
        print(json.dumps(result))
        return
    model_file = str(Path("/tmp") / f"early_start_{os.getpid()}.model")
    cases = [("script", name) for name in SCRIPTS] + [("cli", name) for name in CLI]
    if args.cases:
        cases = [(kind, name) for kind, name in cases if any(word in name for word in args.cases.split(","))]
    lines = [
        "# Worker processes started before the data is read",
        "",
        f"Command: `python benchmarks/early_start.py --rounds {args.rounds}"
        + (f" --cases {shlex.quote(args.cases)}`  " if args.cases else "`  "),
        "Each run a fresh Python process (empty pool), 2 processes workers, 2 cores; arms alternating; "
        "medians (min-max) of seconds. early: `asyncopt.start_worker_pool(2)` first (script), or the command "
        "line as shipped for ProxSGD / forced for EigenPro; late: workers spawned by the fit.",
        "",
        "| case | late: total | early: total | late / early | late: fit | early: fit |",
        "|---|---|---|---:|---|---|",
    ]
    for kind, name in cases:
        case = SCRIPTS.get(name, name)
        runs = {False: [], True: []}
        for _ in range(args.rounds):
            for early in (False, True):
                runs[early].append(run_child(kind, case, early, model_file))

        def cell(rows, key):
            if key not in rows[0]:
                return ""
            values = [r[key] for r in rows]
            return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

        ratio = statistics.median(r["total"] for r in runs[False]) / statistics.median(r["total"] for r in runs[True])
        row = (
            f"| {name} | {cell(runs[False], 'total')} | {cell(runs[True], 'total')} | {ratio:.2f}x "
            f"| {cell(runs[False], 'fit')} | {cell(runs[True], 'fit')} |"
        )
        lines.append(row)
        print(row, flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        path = Path(args.out)
        path.write_text((path.read_text() + "\n" if path.exists() else "") + text)
    print(text)


if __name__ == "__main__":
    main()
