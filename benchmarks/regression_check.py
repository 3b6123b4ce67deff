"""No-regression check of a change against an earlier commit, side by side in one run.

    git worktree add /tmp/baseline <commit>
    python benchmarks/regression_check.py --baseline /tmp/baseline --out benchmarks/results/regression.md

Each measurement runs in a fresh subprocess with PYTHONPATH set to one tree, alternating the trees
(baseline, current, baseline, current, ...) so that the machine's drift hits both alike; the table
gives the median of the repeats and the ratio current / baseline (above 1: slower now).
- ProxSGD per-update cost of the fused task path (benchmarks/proxsgd_step_cost.py's `time_task`):
  a9a and news20 at batch 4 and 32, L1 logistic, 4 blocks.
- EigenPro on full MNIST: training seconds to 98% test accuracy (setup and worker start included,
  evaluations excluded), serial 1 worker x 2 threads and 2 workers x 1 thread (threads, processes).
- Checkpoint cost (current tree only): a full-MNIST epoch with checkpoint_every=30 s; the seconds
  spent writing checkpoints over the training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

STEP_COST = """
import json, sys, torch
sys.path.insert(0, "benchmarks")
torch.set_num_threads(1)
from proxsgd_step_cost import make_algo, time_task
from asyncopt.datasets import load_a9a, load_news20
out = {}
for name, loader in (("a9a", load_a9a), ("news20", load_news20)):
    X, y, _, _ = loader()
    for batch in (4, 32):
        for svrg in (False, True):
            for lazy in ("off", "on"):
                make = lambda: make_algo(X, y, batch, True, svrg, lazy=lazy)
                time_task(make(), X.shape[0], count=500)  # warm-up (compiled kernels)
                label = f"{name} batch {batch}" + (" SVRG" if svrg else "") + (" lazy" if lazy == "on" else "")
                out[label] = time_task(make(), X.shape[0])
print("RESULT " + json.dumps(out))
"""

MNIST = """
import json, sys, torch
from asyncopt import EigenProClassifier
from asyncopt.datasets import load_mnist
params, threads = json.loads(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
X, y, Xt, yt = load_mnist()
if __name__ == "__main__":
    clf = EigenProClassifier(bandwidth=10.0, epochs=2, evals_per_epoch=10, random_state=0,
                             callback=lambda e: e.val_metric >= 0.98, **params).fit(X, y, X_val=Xt, y_val=yt)
    last = clf.history_[-1]
    print("RESULT " + json.dumps({"seconds": last["seconds"] if last["val_metric"] >= 0.98 else None}))
"""

CHECKPOINT_COST = """
import json, sys, tempfile, time, torch
from asyncopt import EigenProClassifier
from asyncopt.datasets import load_mnist
from asyncopt.training import checkpoints
torch.set_num_threads(2)
X, y, Xt, yt = load_mnist()
spent = []
save = checkpoints.RunCheckpointer.save
def timed(self, *args):
    t0 = time.perf_counter(); save(self, *args); spent.append(time.perf_counter() - t0)
checkpoints.RunCheckpointer.save = timed
if __name__ == "__main__":
    folder = tempfile.mkdtemp()
    clf = EigenProClassifier(bandwidth=10.0, epochs=2, random_state=0, checkpoint_dir=folder, checkpoint_every=30.0)
    clf.fit(X, y)
    writes = [s for s in spent]
    print("RESULT " + json.dumps({"training_seconds": clf.history_[-1]["seconds"], "writes": writes}))
"""

PROXSGD_FIT = """
import json, sys, time, torch
from asyncopt import ProxSGDClassifier
from asyncopt.datasets import load_a9a, load_news20
if __name__ == "__main__":
    out = {}
    for name, loader in (("a9a", load_a9a), ("news20", load_news20)):
        X, y, _, _ = loader()
        for backend in ("serial", "processes"):
            workers = dict(n_workers=2, threads_per_worker=1) if backend != "serial" else {}
            est = ProxSGDClassifier(penalty="l1", alpha=1e-4, n_blocks=4, max_epochs=5, tol=None, random_state=0,
                                    backend=backend, **workers)
            t0 = time.perf_counter()
            est.fit(X, y)  # the default fit_intercept=True: every push also updates the intercept
            out[f"{name} {backend}"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out))
"""

MNIST_CONFIGS = [
    ("serial 1 worker x 2 threads", {"backend": "serial"}, 2),
    ("threads 2 workers x 1 thread", {"backend": "threads", "n_workers": 2, "threads_per_worker": 1}, 2),
    ("processes 2 workers x 1 thread", {"backend": "processes", "n_workers": 2, "threads_per_worker": 1}, 2),
]


def run_in(tree: Path, script: str, *args: str) -> dict:
    from asyncopt.datasets import data_home

    env = {**os.environ, "PYTHONPATH": str(tree), "ASYNCOPT_DATA": str(data_home())}
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tree, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"no result from {tree}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a worktree of the commit to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--parts", default="steps,fit,mnist,checkpoint", help="comma-separated subset")
    args = parser.parse_args(argv)
    trees = {"baseline": Path(args.baseline).resolve(), "current": HERE}
    rows = []

    def compare(label, script, *script_args, key=None):
        values = {"baseline": [], "current": []}
        for _ in range(args.repeats):
            for which, tree in trees.items():
                result = run_in(tree, script, *script_args)
                values[which].append(result if key is None else result[key])
                print(label, which, values[which][-1], flush=True)
        return values

    parts = set(args.parts.split(","))
    for part, script, label in (("steps", STEP_COST, "ProxSGD fused update, {} (us)"),
                                ("fit", PROXSGD_FIT, "ProxSGDClassifier 5-epoch fit wall time, {} (s)")):  # fmt: skip
        if part not in parts:
            continue
        got = compare(part, script)
        for case in got["baseline"][0]:
            b = statistics.median(r[case] for r in got["baseline"])
            c = statistics.median(r[case] for r in got["current"])
            rows.append((label.format(case), b, c))
    if "mnist" in parts:
        for label, params, threads in MNIST_CONFIGS:
            got = compare(label, MNIST, json.dumps(params), str(threads), key="seconds")
            b = [v for v in got["baseline"] if v is not None]
            c = [v for v in got["current"] if v is not None]
            rows.append((f"EigenPro MNIST to 98%, {label} (s)", statistics.median(b) if b else None,
                         statistics.median(c) if c else None))  # fmt: skip
    cost = run_in(HERE, CHECKPOINT_COST) if "checkpoint" in parts else None
    lines = [
        "# No-regression check against an earlier commit",
        "",
        "Command: `python benchmarks/regression_check.py --baseline <worktree> --repeats "
        f"{args.repeats} --parts {args.parts}" + (f" --out {args.out}`" if args.out else "`"),
        "",
        f"Median of {args.repeats} runs per tree, alternating trees; ratio = current / baseline.",
        "",
        "| measurement | baseline | current | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, b, c in rows:
        ratio = f"{c / b:.3f}" if b and c else "n/a"
        fmt = lambda v: "not reached" if v is None else f"{v:,.2f}"  # noqa: E731
        lines.append(f"| {label} | {fmt(b)} | {fmt(c)} | {ratio} |")
    if cost is not None:
        written = sum(cost["writes"])
        lines += [
            "",
            f"Checkpoint cost, full MNIST, 2 epochs, serial 2 threads, checkpoint_every=30 s: {len(cost['writes'])} "
            f"checkpoints (periodic and final) took {written:.3f} s of {cost['training_seconds']:.1f} training "
            f"seconds = {100 * written / cost['training_seconds']:.2f}% (each: "
            + ", ".join(f"{w * 1000:.0f} ms" for w in cost["writes"])
            + ").",
        ]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
