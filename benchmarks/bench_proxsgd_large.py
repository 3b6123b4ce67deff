"""AsyB-ProxSGD on a sparse problem far larger than the shipped sets, side by side with skglm,
liblinear and saga in one run; time to 1e-2 / 1e-3 relative suboptimality and peak memory of each.

The problem (generated reproducibly from --seed; the same bytes for the same arguments):
- n rows (default 2,000,000), d hashed features (default 1,000,000), about --nnz non-zeros a row
  (default 50; duplicates within a row merge, so slightly fewer). A row's columns are drawn from a
  Zipf-like popularity (column of rank r drawn with probability ~ 1 / r^0.8, ranks randomly
  permuted over the columns, as hashed text or click features are), values uniform in [0.5, 1.5],
  each row scaled to unit L2 norm. float64 values, int32 indices (CSR).
- A planted sparse model: --planted non-zero weights (default 1% of d), on columns drawn by the
  same popularity, Gaussian, scaled so the margins X w* have standard deviation 3; labels
  y = +1 with probability sigmoid(X w*), else -1.
- The objective is F(w) = mean log(1 + exp(-y a.w)) + alpha ||w||_1, no intercept, with
  alpha = alpha_max / --alpha-ratio, alpha_max = ||X^T y||_inf / (2 n) the smallest alpha whose
  solution is 0 (default 3000: at n = 2 10^5, d = 10^5 the solution has 760 non-zeros for 1,000
  planted; 100 gave 120).

F* is the best objective of a reference solve (skglm at tol 1e-8, the most accurate solver here)
or of any method in the run, whichever is lower. Each method runs in its own process that loads
the cached matrix, so its peak memory is its own: the proportional set size (PSS: shared pages
split between the processes sharing them) summed over the process and its children (the worker
processes), sampled every 0.2 s. "data" is the PSS right after loading the matrix, before the solver.

- asyncopt: ProxSGDClassifier(backend="processes", or "threads" for the labels ending so), 1 and 2
  workers, the default configuration
  (one block per worker, push="auto": on this problem the block push of AsyB, SVRG with the local
  step, batch "auto"), and the full push with 2 workers. The time is the whole fit as a user waits
  for it (setup, power iteration, worker start-up included; evaluations of F excluded); F once an
  epoch, stopped when 1e-3 is reached.
- skglm SparseLogisticRegression (tol ladder 1e-2 .. 1e-6), LogisticRegression liblinear (tol ladder
  1e-1 .. 1e-5) and saga (max_iter ladder 1, 2, 4, 8, 16): separate fits timed from scratch, the
  time to a target is that of the first fit reaching it; a ladder stops at 1e-3 or when its
  seconds so far pass --peer-budget. skglm's numba compilation is paid in a warm-up fit first.

    pip install -r benchmarks/requirements.txt
    python benchmarks/bench_proxsgd_large.py --out benchmarks/results/proxsgd_large.md

A small run to try it: --n 200000 --d 100000.
--rounds K runs the chosen methods K times, each round in the reverse order of the last (a row per
run): the 2-worker / 1-worker ratio is given per round and as the median, and the comparison with
the peers uses each method's median. The reference solve is kept beside the cached problem
(`*-reference.json`), so later runs skip it. Before and after each round the script measures what
the machine gives 2 processes of a compiled loop (2.00: two full cores): on these shared virtual
machines it moved between 1.1x and 2.0x within minutes, and the 2-worker fits move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

TARGETS = (1e-2, 1e-3)
ASYNCOPT = {  # label: (workers, push, n_blocks, variance_reduction)
    # the defaults: one block per worker, push="auto" (here the block push: lazy updates), SVRG with
    # the local step
    "asyncopt default, 1 worker": (1, "auto", "auto", "auto"),
    "asyncopt default, 2 workers": (2, "auto", "auto", "auto"),
    # Asyn-ProxSGD: every block's gradient per update (1 worker, 1 block: the same as the default)
    "asyncopt full push, 2 workers": (2, "full", "auto", "auto"),
    # the full push with eager updates that visit each block's support (ASYNCOPT_LAZY=off; session 19):
    # fused, at the step of each update's measured staleness
    "asyncopt full push eager, 1 worker": (1, "full", "auto", "auto"),
    "asyncopt full push eager, 2 workers": (2, "full", "auto", "auto"),
    # the defaults with asyncopt.start_worker_pool(workers) called before the matrix is loaded (session
    # 22): the workers import while it loads, so their start leaves the fit's time
    "asyncopt default, 1 worker, pool started first": (1, "auto", "auto", "auto"),
    "asyncopt default, 2 workers, pool started first": (2, "auto", "auto", "auto"),
    # the defaults on worker threads (session 23): the compiled task loop runs without the GIL, with no
    # worker processes to start and no copy of the data into shared memory
    "asyncopt default, 1 worker, threads": (1, "auto", "auto", "auto"),
    "asyncopt default, 2 workers, threads": (2, "auto", "auto", "auto"),
    # the defaults on a local Ray (session 36; tasks of task_samples="auto", 4,096 samples): what a
    # cluster's run costs on one machine. Ray's processes (GCS, raylet, the actors) are the method's
    # process's children, so its peak memory counts them and Ray's object store
    "asyncopt default, 2 workers, ray": (2, "auto", "auto", "auto"),
    # Ray with smaller tasks than "auto"'s 4,096 samples (less staleness, more messages a sample)
    "asyncopt default, 2 workers, ray, tasks of 1024": (2, "auto", "auto", "auto"),
    "asyncopt default, 2 workers, ray, tasks of 2048": (2, "auto", "auto", "auto"),
}
PEERS = ("skglm SparseLogisticRegression", "sklearn LogisticRegression liblinear", "sklearn LogisticRegression saga")


# -- the problem ---------------------------------------------------------------------------
def popularity(d: int, rng: np.random.Generator, exponent: float = 0.8) -> np.ndarray:
    """Cumulative column probabilities: rank r has weight 1 / r^exponent, ranks permuted over columns."""
    weights = 1.0 / np.arange(1, d + 1, dtype=np.float64) ** exponent
    weights = weights[rng.permutation(d)]
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def generate(n: int, d: int, nnz: int, planted: int, seed: int, chunk: int = 200_000):
    """(X CSR float64 / int32, y in {-1, 1}, w*) as described in the module docstring."""
    rng = np.random.default_rng(seed)
    cdf = popularity(d, rng)
    support = np.unique(np.searchsorted(cdf, rng.random(planted)))
    w = np.zeros(d)
    w[support] = rng.standard_normal(support.size)
    parts = []
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        cols = np.searchsorted(cdf, rng.random(m * nnz)).astype(np.int32)
        vals = rng.uniform(0.5, 1.5, m * nnz)
        rows = np.repeat(np.arange(m, dtype=np.int32), nnz)
        block = sp.csr_matrix((vals, (rows, cols)), shape=(m, d))  # duplicates add up
        block.sum_duplicates()
        norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1)).ravel())
        block = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ block
        parts.append(block.tocsr())
    X = sp.vstack(parts, format="csr")
    X.indices = X.indices.astype(np.int32)
    X.indptr = X.indptr.astype(np.int32 if X.nnz < 2**31 else np.int64)  # (int32: what liblinear and skglm take)
    z = X @ w
    scale = 3.0 / max(float(np.std(z)), 1e-12)
    w *= scale
    y = np.where(rng.random(n) < 1.0 / (1.0 + np.exp(-z * scale)), 1.0, -1.0)
    return X, y, w


def cache_path(args) -> Path:
    name = f"large_n{args.n}_d{args.d}_k{args.nnz}_p{args.planted}_s{args.seed}.npz"
    return Path(args.cache_dir) / name


def load_problem(path: Path):
    with np.load(path) as f:
        X = sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
        return X, f["y"], float(f["alpha"])


def objective(X, y, w, alpha) -> float:
    return float(np.mean(np.logaddexp(0.0, -y * (X @ w))) + alpha * np.abs(w).sum())


# -- peak memory of this process and its children ----------------------------------------------
def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss() -> int:
    import psutil

    me = psutil.Process()
    return pss_bytes(me.pid) + sum(pss_bytes(c.pid) for c in me.children(recursive=True))


class PeakMemory:
    """Samples tree_pss() every `interval` s in a thread; `peak` is the largest sum seen."""

    def __init__(self, interval: float = 0.2):
        self.peak, self._stop, self._interval = tree_pss(), threading.Event(), interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, tree_pss())

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, tree_pss())


# -- the methods (each in its own process: `--method LABEL`) --------------------------------------
def first_time(curve, f_star, target):
    return next((s for s, f in curve if (f - f_star) / f_star <= target), None)


def backend_of(label: str) -> str:
    for backend in ("threads", "ray"):
        if label.endswith(f", {backend}") or f", {backend}, " in label:
            return backend
    return "processes"


def task_samples_of(label: str):
    """Ray's task size: "auto" unless the label says "tasks of N"."""
    return int(label.rsplit(" ", 1)[1]) if "tasks of" in label else "auto"


def run_asyncopt(X, y, alpha, f_star, label, max_epochs):
    import torch

    from asyncopt import ProxSGDClassifier

    torch.set_num_threads(1)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # (a local Ray on loopback)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    workers, push, blocks, vr = ASYNCOPT[label]
    if "eager" in label:
        os.environ["ASYNCOPT_LAZY"] = "off"

    def stop(entry):
        return entry.objective <= f_star * (1 + TARGETS[-1])

    model = ProxSGDClassifier(
        penalty="l1", alpha=alpha, fit_intercept=False, n_workers=workers, threads_per_worker=1,
        backend=backend_of(label), n_blocks=blocks, push=push, task_samples=task_samples_of(label),
        variance_reduction=vr, max_epochs=max_epochs, random_state=0, callback=stop,
    ).fit(X, y)  # fmt: skip
    t = model.telemetry_
    last = model.history_[-1]
    curve = [(h["seconds"], h["objective"]) for h in model.history_]
    note = (
        f"{last['epoch']:.1f} epochs, {last['samples'] / max(last['seconds'], 1e-9):,.0f} samples/s "
        f"(setup {t['setup_seconds']:.1f} s, worker start {t['startup_seconds']:.1f} s, in the times), "
        f"staleness mean {t['staleness']['mean']:.2f}, push {model.push_}, {model.n_blocks_} blocks, "
        f"batch {model.batch_size_}"
    )
    return curve, model.coef_.ravel(), note


def run_ladder(X, y, alpha, f_star, label, budget):
    curve, coef, note, spent = [], None, "", 0.0
    if label.startswith("skglm"):
        from skglm import SparseLogisticRegression

        t0 = time.perf_counter()
        SparseLogisticRegression(alpha=alpha, fit_intercept=False, tol=1e-1).fit(X[:500], y[:500])
        note = f"numba warm-up {time.perf_counter() - t0:.1f} s not in the times; "
        ladder = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
        make = lambda v: SparseLogisticRegression(alpha=alpha, fit_intercept=False, tol=v, max_iter=1000)  # noqa: E731
    else:
        from sklearn.linear_model import LogisticRegression

        solver = "saga" if label.endswith("saga") else "liblinear"
        ladder = [1, 2, 4, 8, 16] if solver == "saga" else [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]

        def make(v):
            kw = {"max_iter": v, "tol": 0.0} if solver == "saga" else {"tol": v, "max_iter": 100_000}
            C = 1 / (alpha * X.shape[0])
            return LogisticRegression(l1_ratio=1.0, solver=solver, C=C, fit_intercept=False, random_state=0, **kw)

    for value in ladder:
        model = make(value)
        t0 = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - t0
        spent += seconds
        coef = model.coef_.ravel()
        curve.append((seconds, objective(X, y, coef, alpha)))
        last = value
        if curve[-1][1] <= f_star * (1 + TARGETS[-1]) or spent > budget:
            break
    note += f"last {'max_iter' if label.endswith('saga') else 'tol'}={last:g}, ladder {spent:.0f} s in all"
    return curve, coef, note


def method_main(args):
    warnings.filterwarnings("ignore")
    if "pool started first" in args.method:  # (before the matrix loads, as a user's script may)
        import asyncopt

        asyncopt.start_worker_pool(ASYNCOPT[args.method][0])
    X, y, alpha = load_problem(cache_path(args))
    meter = PeakMemory()
    data_bytes = tree_pss()
    t0 = time.perf_counter()
    if args.method == "reference":
        from skglm import SparseLogisticRegression

        model = SparseLogisticRegression(alpha=alpha, fit_intercept=False, tol=1e-8, max_iter=1000).fit(X, y)
        coef = model.coef_.ravel()
        curve, note = [(time.perf_counter() - t0, objective(X, y, coef, alpha))], "skglm tol 1e-8"
    elif args.method in ASYNCOPT:
        curve, coef, note = run_asyncopt(X, y, alpha, args.f_star, args.method, args.max_epochs)
    else:
        curve, coef, note = run_ladder(X, y, alpha, args.f_star, args.method, args.peer_budget)
    peak = meter.close()
    out = {
        "curve": curve, "note": note, "nnz": int(np.count_nonzero(coef)), "peak_bytes": peak,
        "data_bytes": data_bytes, "wall": time.perf_counter() - t0,
    }  # fmt: skip
    Path(args.result).write_text(json.dumps(out))


def machine_parallelism(repeats: int) -> float:
    """What the machine gives 2 processes now (proxsgd_speedup_breakdown.machine_parallelism): the
    second core of these shared virtual machines comes and goes within minutes."""
    sys.path.insert(0, str(Path(__file__).parent))
    from proxsgd_speedup_breakdown import machine_parallelism as gauge

    return gauge(repeats=repeats)


def cached_reference(args, path: Path) -> dict:
    """The reference solve (skglm at tol 1e-8, ~2 minutes at the default size), kept beside the cached
    problem: it depends on the problem only."""
    kept = path.with_name(path.stem + "-reference.json")
    if kept.exists():
        return json.loads(kept.read_text())
    reference = spawn(args, "reference", None)
    if "error" not in reference:
        kept.write_text(json.dumps(reference))
    return reference


def spawn(args, method, f_star):
    result = Path(args.cache_dir) / f"result-{abs(hash(method))}.json"
    command = [
        sys.executable, __file__, "--method", method, "--result", str(result), "--f-star", repr(f_star or 0.0),
        "--n", str(args.n), "--d", str(args.d), "--nnz", str(args.nnz), "--planted", str(args.planted),
        "--seed", str(args.seed), "--cache-dir", args.cache_dir, "--max-epochs", str(args.max_epochs),
        "--peer-budget", str(args.peer_budget),
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        return {"error": f"exit status {done.returncode}"}
    return json.loads(result.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--d", type=int, default=1_000_000)
    p.add_argument("--nnz", type=int, default=50)
    p.add_argument("--planted", type=int, default=None, help="non-zeros of w* (default d / 100)")
    p.add_argument("--alpha-ratio", type=float, default=3000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--peer-budget", type=float, default=600.0, help="seconds a peer's ladder may take")
    p.add_argument("--cache-dir", default="/tmp/asyncopt-large")
    p.add_argument("--methods", nargs="*", default=None, help="labels to run (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="run the methods this many times, alternating")
    p.add_argument("--out", default=None)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--f-star", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.planted = args.planted or max(1, args.d // 100)
    if args.method:
        return method_main(args)

    path = cache_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not path.exists():
        X, y, _ = generate(args.n, args.d, args.nnz, args.planted, args.seed)
        alpha = float(np.abs(X.T @ y).max()) / (2 * args.n) / args.alpha_ratio
        np.savez(path, data=X.data, indices=X.indices, indptr=X.indptr, shape=np.array(X.shape), y=y, alpha=alpha)
    X, y, alpha = load_problem(path)
    made = time.perf_counter() - t0
    size = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    print(f"problem: n={X.shape[0]:,} d={X.shape[1]:,} nnz={X.nnz:,} ({size / 2**30:.2f} GiB), alpha={alpha:.3g}, "
          f"{made:.0f} s to make or load", flush=True)  # fmt: skip
    del X

    reference = cached_reference(args, path)
    f_star = reference["curve"][-1][1]
    print("reference", reference, flush=True)
    labels = args.methods or [*ASYNCOPT, *PEERS]
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    results, runs, machine = {}, [], []  # runs: (round, label, key in results); machine: (before, after) a round
    for r in range(args.rounds):  # (each round in the reverse order of the last: neither arm always goes first)
        before = machine_parallelism(repeats=1)
        for label in labels if r % 2 == 0 else labels[::-1]:
            key = label if args.rounds == 1 else f"{label} (round {r + 1})"
            results[key] = spawn(args, label, f_star)
            runs.append((r, label, key))
            print(key, {k: v for k, v in results[key].items() if k != "curve"}, flush=True)
        machine.append((before, machine_parallelism(repeats=1)))
    best = min([f_star] + [f for r in results.values() for _, f in r.get("curve", [])])

    with np.load(path) as f:
        nnz_total = int(f["indptr"][-1])
    lines = [
        "# AsyB-ProxSGD at scale: a synthetic sparse L1-logistic problem, side by side with the peers",
        "",
        f"Command: `python benchmarks/bench_proxsgd_large.py {shlex.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"Problem (how it is made: the script's docstring): n = {args.n:,}, d = {args.d:,}, "
        f"{nnz_total:,} non-zeros ({nnz_total / args.n:.1f} a row, {size / 2**30:.2f} GiB as CSR), planted model "
        f"with {args.planted:,} non-zeros, alpha = alpha_max / {args.alpha_ratio:g} = {alpha:.4g}, seed {args.seed}. "
        f"F* = {best:.8f} (reference: skglm tol 1e-8, {reference['curve'][-1][0]:.0f} s, "
        f"{reference['nnz']:,} non-zeros{'' if best == f_star else '; a method in the run went lower'}). "
        "2 cores; one torch / BLAS thread per asyncopt process; the peers as they come (liblinear and saga "
        "are single-threaded).",
        "",
    ]
    lines += [
        "| method | s to 1e-2 | s to 1e-3 | final rel. subopt | non-zeros | peak memory GiB (data) | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    times = {}
    for label, r in results.items():
        if "error" in r:
            lines.append(f"| {label} | - | - | - | - | - | failed: {r['error']} |")
            continue
        times[label] = [first_time(r["curve"], best, t) for t in TARGETS]
        cells = " | ".join("-" if t is None else f"{t:.1f}" for t in times[label])
        sub = (r["curve"][-1][1] - best) / best
        mem = f"{r['peak_bytes'] / 2**30:.2f} ({r['data_bytes'] / 2**30:.2f})"
        lines.append(f"| {label} | {cells} | {sub:.2e} | {r['nnz']:,} | {mem} | {r['note']} |")
    lines += ["", "'-': not reached (asyncopt: within --max-epochs; peers: within the ladder or its budget).", ""]
    pairs = {  # 2 workers: against 1 worker of the same backend
        "asyncopt default, 2 workers": "asyncopt default, 1 worker",
        "asyncopt full push, 2 workers": "asyncopt default, 1 worker",
        "asyncopt default, 2 workers, threads": "asyncopt default, 1 worker, threads",
    }
    for label, single in pairs.items():
        for i, t in enumerate(TARGETS):
            ratios = []  # (1 worker / this, within each round)
            for r in range(args.rounds):
                got = {lab: times.get(k) for rr, lab, k in runs if rr == r}
                one, two = got.get(single), got.get(label)
                if one and two and one[i] and two[i]:
                    ratios.append(one[i] / two[i])
            if len(ratios) == 1:
                lines.append(f"- {label[9:]}: time to {t:g}, {single[9:]} / this = {ratios[0]:.2f}x")
            elif ratios:
                each = ", ".join(f"{v:.2f}" for v in ratios)
                lines.append(f"- {label[9:]}: time to {t:g}, {single[9:]} / this, each round: {each}; "
                             f"median {statistics.median(ratios):.2f}x")  # fmt: skip
    gauges = "; ".join(f"round {r + 1}: {a:.2f}x before, {b:.2f}x after" for r, (a, b) in enumerate(machine))
    lines.append(f"- the machine (2 processes of a compiled loop touching no memory, the work of one; 2.00: two "
                 f"full cores): {gauges}")  # fmt: skip
    label_of = {key: label for _, label, key in runs}
    for i, t in enumerate(TARGETS):  # (with rounds: each method's median over the rounds that reached t)
        reached = {}
        for key, v in times.items():
            if v[i] is not None:
                reached.setdefault(label_of[key], []).append(v[i])
        ours = {k: statistics.median(v) for k, v in reached.items() if k.startswith("asyncopt")}
        peers = {k: statistics.median(v) for k, v in reached.items() if not k.startswith("asyncopt")}
        if ours and peers:
            mine, fastest = min(ours, key=ours.get), min(peers, key=peers.get)
            lines.append(f"- to {t:g}: best asyncopt ({mine[9:]}) {ours[mine]:.1f} s, fastest peer {fastest} "
                         f"{peers[fastest]:.1f} s (asyncopt / peer = {ours[mine] / peers[fastest]:.2f})")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
