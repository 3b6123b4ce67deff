"""Delay study of AsyB-ProxSGD (model-parallel asynchronous proximal SGD) on a9a, serial engine.

Command that produced benchmarks/results/proxsgd_delay_study.{md,png} and proxsgd_nonconvex.png:

    nice .venv/bin/python benchmarks/proxsgd_delay_study.py

(all defaults; see --help). Everything runs on one CPU thread with the serial engine, whose delay
simulator is exact and deterministic from the seed: with ``delay="fixed"`` every worker read is
exactly tau updates stale, with ``delay="random"`` its age is drawn uniformly in 0..tau.

Part 1, convex: L1 logistic regression, alpha=1e-4, no intercept, F* from
benchmarks/results/proxsgd_optima.json (liblinear, tol 1e-8). For tau in 0, 1, 3, 7, 15, 31 we
count the updates (history ``steps``: block updates for AsyB, full-vector updates for the full
push) and the epochs until (F - F*) / F* <= target (1e-3; 3e-3 and 1e-2 are read off the same
runs). The objective is probed `--probes-per-epoch` (10) times an epoch by a thin subclass of the
algorithm, outside the solver: the solver's own evaluation points drive the plateau schedule, so
they stay at the library default of one an epoch (at 10 an epoch the plateau rule halves the step
on SGD noise every 0.2 epoch and the step collapses to ~1e-53 within 40 epochs).
The step is the automatic one, as ProxSGDClassifier sets it: eta_0 = base_step(...) for the batch
size, coupled to the delay by the algorithm (``delay=tau`` -> min(eta_0, delay_unit * delay_factor(tau,
M)), delay_unit = 2 * 0.75 / L of the mean gradient: stepsize.delay_unit), with SVRG the local step
(eta_0 and L follow the curvature at each anchor); `--old-delay-rule` gives the rule before session 9
(eta_0 * delay_factor(tau, M), no local step). Plateau schedule and no
tolerance-based early stopping; runs are capped at `--max-epochs` ("> cap" when not reached). The
step rule is the same for every tau (nothing is tuned per tau).
Variants: AsyB (push="block", M blocks) and the full-vector push (push="full"), both fixed delay;
AsyB with random delays 0..tau and the step coupled to the bound tau; AsyB with random delays and
the delay-adaptive step (eta evaluated at each update's measured staleness); AsyB and the full push
with variance_reduction (SVRG anchor moved once an epoch, at the solver's evaluation point).

Part 2, nonconvex: the sigmoid loss with the same L1 penalty. For budgets K (block updates) the
run uses the constant step eta = min(c / sqrt(K), base step) (schedule="constant") and records
||G(x)||^2, the squared gradient-mapping norm, at a common reference step (the base step; via the
``validate`` hook, so budgets run with different steps are measured alike), about
`--nc-evals` times a run; reported are the minimum over the evaluations and the value at the end.
The slope of log min ||G||^2 against log K is fitted and compared with the theorem's -1/2 (an
upper bound: a steeper slope is consistent with it). Once delay-free and once with a fixed delay.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shlex
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from asyncopt.datasets import load_a9a, load_news20  # noqa: E402
from asyncopt.engines.serial import SerialEngine  # noqa: E402
from asyncopt.errors import TrainingDiverged  # noqa: E402
from asyncopt.proxsgd.algorithm import ProxSGDAlgorithm  # noqa: E402
from asyncopt.proxsgd.data import LinearData  # noqa: E402
from asyncopt.proxsgd.losses import NonconvexRegularizer, get_loss  # noqa: E402
from asyncopt.proxsgd.problem import LinearProblem, block_bounds  # noqa: E402
from asyncopt.proxsgd.prox import make_penalty  # noqa: E402
from asyncopt.proxsgd.stepsize import DELAY_MARGIN, base_step, delay_factor, estimate_smoothness  # noqa: E402
from asyncopt.training.proxsgd import ProxSGDSettings, run_proxsgd  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent
FSTAR_FALLBACK = 0.32689896196913715  # a9a, alpha=1e-4, liblinear tol=1e-8

# name -> (push, engine delay kind, delay_adaptive, variance reduction)
VARIANTS = {
    "asyb": ("block", "fixed", False, False),
    "full": ("full", "fixed", False, False),
    "asyb-random": ("block", "random", False, False),
    "asyb-random-adaptive": ("block", "random", True, False),
    "asyb-svrg": ("block", "fixed", False, True),
    "full-svrg": ("full", "fixed", False, True),
    "asyb-svrg-random-adaptive": ("block", "random", True, True),
}
LABELS = {
    "asyb": "AsyB (block push), fixed delay",
    "full": "full-vector push, fixed delay",
    "asyb-random": "AsyB, random delay 0..tau, step for bound tau",
    "asyb-random-adaptive": "AsyB, random delay 0..tau, delay-adaptive step",
    "asyb-svrg": "AsyB + SVRG, fixed delay",
    "full-svrg": "full-vector push + SVRG, fixed delay",
    "asyb-svrg-random-adaptive": "AsyB + SVRG, random delay 0..tau, delay-adaptive step",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("a9a", "news20"), default="a9a")
    p.add_argument("--alpha", type=float, default=1e-4)
    p.add_argument("--n-blocks", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--delays", type=int, nargs="+", default=[0, 1, 3, 7, 15, 31])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--target", type=float, default=1e-3, help="relative suboptimality (F - F*) / F*")
    p.add_argument(
        "--extra-targets",
        type=float,
        nargs="*",
        default=[1e-2, 3e-3],
        help="looser targets also read off the same runs (the runs stop at --target only)",
    )
    p.add_argument("--max-epochs", type=float, default=40)
    p.add_argument(
        "--evals-per-epoch",
        type=int,
        default=1,
        help="solver evaluation points a epoch; they drive the plateau schedule (library default 1)",
    )
    p.add_argument("--probes-per-epoch", type=int, default=10, help="objective measurements a epoch (target check)")
    p.add_argument("--goal-ratio", type=float, default=1.3, help="the issue's goal for updates(tau=15)/updates(0)")
    p.add_argument("--nc-budgets", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000, 30000])
    p.add_argument("--nc-c", type=float, default=None, help="eta = c / sqrt(K); default: base step * sqrt(min K)")
    p.add_argument("--nc-delay", type=int, default=7)
    p.add_argument("--nc-evals", type=int, default=20, help="evaluations per nonconvex run (about)")
    p.add_argument("--nc-reg", type=float, default=0.0, help="NonconvexRegularizer strength (0: L1 only)")
    p.add_argument(
        "--old-delay-rule",
        action="store_true",
        help="the step rule before session 9: eta_0 * factor(tau), no local step (the old table)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-convex", action="store_true")
    p.add_argument("--skip-nonconvex", action="store_true")
    p.add_argument("--out-dir", type=pathlib.Path, default=ROOT / "results")
    return p.parse_args(argv)


def load_fstar(alpha: float, dataset: str = "a9a") -> float:
    path = ROOT / "results" / "proxsgd_optima.json"
    key = f"{dataset}/alpha={alpha:g}"
    try:
        return float(json.loads(path.read_text())[key]["objective"])
    except (OSError, KeyError, ValueError):
        if alpha == 1e-4 and dataset == "a9a":
            return FSTAR_FALLBACK
        raise SystemExit(f"no F* for {key} in {path}; run benchmarks/proxsgd_optima.py first") from None


# -- part 1: convex ----------------------------------------------------------------------
class _TargetReached(Exception):
    pass


class ProbedProxSGD(ProxSGDAlgorithm):
    """The library's algorithm, unchanged, plus a probe: every `probe_samples` training samples the
    server-side parameters' objective is measured, independently of the solver's evaluation points
    (which also drive the plateau schedule, so their frequency must stay at the library default).
    Raises _TargetReached once `stop(rel)` is true."""

    # every update through `apply`, where the probe is: at delay 0 the serial engine would otherwise run
    # the batches in the compiled task loop (the same updates), and the probe never fired (the study's
    # tau=0 column read "> 60 ep (best inf)" from the serial engine's compiled path, 531790f, to session 29)
    compiled_tasks = False

    def setup_probe(self, probe_samples, fstar, target):
        self._probe = {"every": probe_samples, "next": probe_samples, "samples": 0, "steps": 0, "curve": [],
                       "fstar": fstar, "target": target}  # fmt: skip

    def compute(self, params, batch, scale, key=0):
        self._probe["samples"] += len(batch)
        return super().compute(params, batch, scale, key)

    def apply(self, params, update, staleness=0):
        super().apply(params, update, staleness)
        pr = self._probe
        pr["steps"] += 1
        if pr["samples"] >= pr["next"]:
            pr["next"] += pr["every"]
            rel = (self.problem.objective(params) - pr["fstar"]) / pr["fstar"]
            pr["curve"].append((pr["steps"], pr["samples"] / self.n_samples, rel))
            if rel <= pr["target"]:
                raise _TargetReached


def convex_run(data, sm, args, fstar, variant, tau):
    push, kind, adaptive, vr = VARIANTS[variant]
    loss = get_loss("logistic")
    problem = LinearProblem(data, loss, make_penalty("l1", args.alpha), NonconvexRegularizer(0.0), False,
                            block_bounds(data.d, args.n_blocks))  # fmt: skip
    eta0 = base_step(sm, loss.curvature, args.batch_size, 0.0)
    # the library's rule (as ProxSGDClassifier sets it): the delay bound scaled by the mean gradient's
    # smoothness, and with SVRG the local step; --old-delay-rule: eta_0 * factor(tau), no local step
    old = args.old_delay_rule
    algo = ProbedProxSGD(
        problem, args.batch_size, eta0, push=push, delay=tau, delay_adaptive=adaptive, variance_reduction=vr,
        local_steps=vr and not old, delay_smoothness=0.0 if old else loss.curvature * sm.top_eigenvalue,
    )  # fmt: skip
    eta_tau = algo.step_at(tau)  # at the start (the local step moves it at each anchor)
    algo.setup_probe(data.n / args.probes_per_epoch, fstar, args.target)
    settings = ProxSGDSettings(epochs=args.max_epochs, evals_per_epoch=args.evals_per_epoch, schedule="plateau",
                               tol=None)  # fmt: skip
    curve = algo._probe["curve"]  # (steps, epoch, relative suboptimality)
    t0 = time.perf_counter()
    status = "ok"
    try:
        run_proxsgd(algo, settings, np.random.default_rng(args.seed), engine=SerialEngine(max_delay=tau, delay=kind))
    except _TargetReached:
        pass
    except TrainingDiverged:
        status = "diverged"
    seconds = time.perf_counter() - t0
    return {
        "variant": variant, "tau": tau, "status": status, "curve": curve, "seconds": seconds,
        "eta0": eta0, "eta_tau": eta_tau, "final_step": algo.step,
        "best_rel": min((r for _, _, r in curve), default=math.inf),
    }  # fmt: skip


def hit_at(res, target):
    return next(((s, e) for s, e, r in res["curve"] if r <= target), None)


def cell(res, cap, target):
    hit = hit_at(res, target)
    if res["status"] == "diverged" and hit is None:
        last = res["curve"][-1][1] if res["curve"] else 0.0
        return f"diverged (ep {last:.1f})"
    if hit is None:
        return f"> {cap:g} ep (best {res['best_rel']:.1e})"
    steps, epoch = hit
    return f"{steps:,} ({epoch:.1f})"


# -- part 2: nonconvex ---------------------------------------------------------------------
def nonconvex_run(data, sm, args, K, tau, c):
    loss = get_loss("sigmoid")
    reg = NonconvexRegularizer(args.nc_reg)
    problem = LinearProblem(data, loss, make_penalty("l1", args.alpha), reg, False, block_bounds(data.d, args.n_blocks))
    cap = base_step(sm, loss.curvature, args.batch_size, reg.smoothness)
    eta = min(c / math.sqrt(K), cap)
    algo = ProxSGDAlgorithm(problem, args.batch_size, eta, push="block", delay=tau)
    epochs = K * args.batch_size / data.n
    per = max(1, math.ceil(args.nc_evals / epochs))
    settings = ProxSGDSettings(epochs=epochs, evals_per_epoch=per, schedule="constant", tol=None)
    t0 = time.perf_counter()
    _, hist, _ = run_proxsgd(algo, settings, np.random.default_rng(args.seed), engine=SerialEngine(max_delay=tau),
                             validate=lambda p: problem.measures(p, cap)["grad_mapping_sq"])  # fmt: skip
    g = [h.val_metric for h in hist]
    return {
        "K": K, "tau": tau, "eta": eta, "steps": hist[-1].steps, "evals": len(hist), "min_g": min(g),
        "last_g": g[-1], "mean_g": float(np.mean(g)), "objective": hist[-1].objective, "nnz": hist[-1].nnz,
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def loglog_slope(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    command = "nice .venv/bin/python benchmarks/proxsgd_delay_study.py" + (
        " " + " ".join(map(shlex.quote, sys.argv[1:])) if argv is None and len(sys.argv) > 1 else ""
    )
    started = time.perf_counter()
    suffix = "" if args.dataset == "a9a" else f"_{args.dataset}"  # (output files)
    X, y, _, _ = (load_news20 if args.dataset == "news20" else load_a9a)()
    data = LinearData.from_array(X, y.reshape(-1, 1).astype(np.float64), dtype=torch.float64)
    sm = estimate_smoothness(data, False)
    fstar = load_fstar(args.alpha, args.dataset)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = [
        f"# AsyB-ProxSGD delay study ({args.dataset}, serial engine)",
        "",
        f"Command: `{command}`",
        "",
        f"{args.dataset}: n={data.n:,}, d={data.d}; batch {args.batch_size}, M={args.n_blocks} blocks, "
        f"seed {args.seed}; "
        f"smoothness: lambda_1(A^T A/n)={sm.top_eigenvalue:.3f}, max ||a_i||^2={sm.max_row_sq_norm:g}. "
        "One CPU thread; the serial engine simulates the delay exactly.",
        "",
    ]

    # ---- convex ----
    if not args.skip_convex:
        results = {}
        for variant in args.variants:
            for tau in args.delays:
                r = convex_run(data, sm, args, fstar, variant, tau)
                results[variant, tau] = r
                status = cell(r, args.max_epochs, args.target)
                print(f"[convex] {variant:22s} tau={tau:2d} eta(tau)={r['eta_tau']:.3g} {status:>28s}"
                      f"  final eta0={r['final_step']:.3g}  {r['seconds']:.1f}s", flush=True)  # fmt: skip
        eta0 = next(iter(results.values()))["eta0"]
        md += [
            f"## 1. Convex: L1 logistic regression, alpha={args.alpha:g}, no intercept",
            "",
            f"F* = {fstar!r} (liblinear, tol 1e-8). Cells: updates (history `steps`: block updates for AsyB, "
            f"full-vector updates for the full push) until (F - F*)/F* <= {args.target:g}, and the epochs in "
            f"parentheses; the objective is probed {args.probes_per_epoch} times an epoch (after the update that "
            f"completes each 1/{args.probes_per_epoch} epoch, outside the solver, so the probes do not touch the "
            f"schedule); the solver evaluates {args.evals_per_epoch}x an epoch (the library default, which is the "
            f"plateau schedule's clock); cap {args.max_epochs:g} epochs. "
            f"Automatic step eta_0 = {eta0:.4g} (base_step for batch {args.batch_size}), coupled to the delay by "
            + (
                f"the algorithm: eta(tau) = eta_0 sin(pi / (2 (2 tau / M' + 1))), M' = {args.n_blocks} for the "
                "block push and 1 for the full push (the rule before session 9, --old-delay-rule)"
                if args.old_delay_rule
                else f"the algorithm: eta(tau) = min(eta_0, 2 * {DELAY_MARGIN:g} sin(pi / (2 (2 tau / M' + 1))) / L), "
                f"M' = {args.n_blocks} for the block push and 1 for the full push, L the mean gradient's smoothness "
                "(curvature x lambda_1); with SVRG the local step sets eta_0 and L from the curvature at each anchor"
            )
            + "; plateau schedule, tol=None (no early stop). Same rule for every tau.",
            "",
        ]
        has15 = 0 in args.delays and 15 in args.delays
        ratios = {}  # (target, variant) -> updates(tau=15) / updates(tau=0)
        for target in [args.target, *sorted(args.extra_targets)]:
            md += [
                f"### Updates (epochs) to (F - F*)/F* <= {target:g}"
                + (" (the study's target)" if target == args.target else " (looser target, same runs)"),
                "",
            ]
            header = "| variant | " + " | ".join(f"tau={t}" for t in args.delays)
            md += [header + (" | tau15/tau0 |" if has15 else " |"), "|---|" + "---:|" * (len(args.delays) + has15)]
            for variant in args.variants:
                row = [cell(results[variant, t], args.max_epochs, target) for t in args.delays]
                if has15:
                    a, b = hit_at(results[variant, 0], target), hit_at(results[variant, 15], target)
                    ratios[target, variant] = b[0] / a[0] if a and b else None
                    row.append("n/a" if ratios[target, variant] is None else f"{ratios[target, variant]:.2f}")
                md.append(f"| {LABELS[variant]} | " + " | ".join(row) + " |")
            md.append("")
        md += ["Step at the delay bound at the start, eta(tau) (the plateau schedule halves it afterwards; with "
               "SVRG the local step moves it at each anchor):", ""]  # fmt: skip
        md += [
            "| variant | " + " | ".join(f"tau={t}" for t in args.delays) + " |",
            "|---|" + "---:|" * len(args.delays),
        ]
        for variant in args.variants:
            md.append(
                f"| {LABELS[variant]} | "
                + " | ".join(f"{results[variant, t]['eta_tau']:.3g}" for t in args.delays)
                + " |"
            )
        total = sum(r["seconds"] for r in results.values())
        md += ["", f"Convex runs: {total:.0f} s in all (each stops at the target or the cap).", ""]
        if has15:
            md.append("**Goal** (issue): delay 15 costs at most "
                      f"{args.goal_ratio:g}x the updates of delay 0.")  # fmt: skip
            for (target, variant), ratio in ratios.items():
                verdict = (
                    "not measurable (a run did not reach it)"
                    if ratio is None
                    else (f"{ratio:.2f}x -> {'met' if ratio <= args.goal_ratio else 'NOT met'}")
                )
                md.append(f"- target {target:g}, {LABELS[variant]}: {verdict}")
            md.append("")

        # plot: relative suboptimality vs updates, one curve per tau
        shown = [v for v in ("asyb", "full", "asyb-svrg", "full-svrg") if v in args.variants]
        cols = min(2, len(shown))
        rows_ = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(6.5 * cols, 4.5 * rows_), squeeze=False)
        for ax, variant in zip(axes.ravel(), shown, strict=False):
            for tau in args.delays:
                cur = results[variant, tau]["curve"]
                if cur:
                    ax.semilogy([s for s, _, _ in cur], [max(r, 1e-8) for _, _, r in cur], label=f"tau={tau}")
            ax.axhline(args.target, color="k", ls=":", lw=1, label=f"target {args.target:g}")
            ax.set_xlabel("updates (block updates for AsyB)" if variant.startswith("asyb") else "full-vector updates")
            ax.set_ylabel("(F - F*) / F*")
            ax.set_title(f"{LABELS[variant]}\n{args.dataset} L1-logistic alpha={args.alpha:g}, batch {args.batch_size}")
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out_dir / f"proxsgd_delay_study{suffix}.png", dpi=110)
        plt.close(fig)

    # ---- nonconvex ----
    if not args.skip_nonconvex:
        loss = get_loss("sigmoid")
        cap = base_step(sm, loss.curvature, args.batch_size, NonconvexRegularizer(args.nc_reg).smoothness)
        c = args.nc_c if args.nc_c is not None else cap * math.sqrt(min(args.nc_budgets))
        rows = []
        for tau in (0, args.nc_delay):
            for K in args.nc_budgets:
                r = nonconvex_run(data, sm, args, K, tau, c)
                rows.append(r)
                print(f"[nonconvex] tau={tau} K={K:6d} steps={r['steps']:6d} eta={r['eta']:.3g} "
                      f"min|G|^2={r['min_g']:.3e} last={r['last_g']:.3e} F={r['objective']:.5f} "
                      f"{r['seconds']:.1f}s", flush=True)  # fmt: skip
        reg = f" + NonconvexRegularizer({args.nc_reg:g})" if args.nc_reg else ""
        md += [
            f"## 2. Nonconvex: sigmoid loss + L1 (alpha={args.alpha:g}){reg}, AsyB (M={args.n_blocks})",
            "",
            f"For each budget K (block updates) a fresh run with the constant step eta = min(c/sqrt(K), base step), "
            f"c = {c:.4g}, base step = {cap:.4g}; the delayed runs use the algorithm's coupled step "
            f"eta * delay_factor(tau={args.nc_delay}, M) = eta * {delay_factor(args.nc_delay, args.n_blocks):.3f}. "
            f"||G||^2 is the squared gradient mapping measured at the common step {cap:.4g}, about "
            f"{args.nc_evals} times a run; 'mean' is the average over those evaluations (the theorem bounds "
            "the average of E||G(x_k)||^2 over the K iterations), 'min' the minimum, 'last' the value at "
            "the end. 'updates' are the block updates actually applied (batches are split at evaluation points).",
            "",
            "| tau | K | updates | eta | mean ‖G‖² | min ‖G‖² | last ‖G‖² | F at end | nnz | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            md.append(f"| {r['tau']} | {r['K']:,} | {r['steps']:,} | {r['eta']:.3g} | {r['mean_g']:.3e} | "
                      f"{r['min_g']:.3e} | {r['last_g']:.3e} | {r['objective']:.5f} | {r['nnz']} | "
                      f"{r['seconds']:.1f} |")  # fmt: skip
        md += ["", "Fitted log-log slopes of ||G||^2 against updates (theorem: O(1/sqrt(K)), slope -1/2 or steeper):",
               ""]  # fmt: skip
        slopes = {}
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for tau, marker in ((0, "o"), (args.nc_delay, "s")):
            sel = [r for r in rows if r["tau"] == tau]
            K = np.array([r["steps"] for r in sel], dtype=float)
            gmin = np.array([r["min_g"] for r in sel])
            glast = np.array([r["last_g"] for r in sel])
            gmean = np.array([r["mean_g"] for r in sel])
            slopes[tau] = (loglog_slope(K, gmin), loglog_slope(K, glast), loglog_slope(K, gmean))
            md.append(f"- tau={tau}: mean ||G||^2 slope {slopes[tau][2]:.2f}; min ||G||^2 slope {slopes[tau][0]:.2f}; "
                      f"last ||G||^2 slope {slopes[tau][1]:.2f}")  # fmt: skip
            ax.loglog(K, gmean, marker=marker, lw=2, label=f"mean ||G||², tau={tau} (slope {slopes[tau][2]:.2f})")
            ax.loglog(K, gmin, marker=marker, label=f"min ||G||², tau={tau} (slope {slopes[tau][0]:.2f})")
            ax.loglog(K, glast, marker=marker, ls="--", alpha=0.5, label=f"last ||G||², tau={tau} "
                      f"(slope {slopes[tau][1]:.2f})")  # fmt: skip
        K0 = np.array([r["steps"] for r in rows if r["tau"] == 0], dtype=float)
        g0 = [r["mean_g"] for r in rows if r["tau"] == 0][0]
        ax.loglog(K0, g0 * (K0 / K0[0]) ** -0.5, "k:", label="reference slope -1/2")
        ax.set_xlabel("K (block updates)")
        ax.set_ylabel("||G(x)||² (gradient mapping)")
        ax.set_title("AsyB-ProxSGD, sigmoid loss + L1, a9a; eta = c/sqrt(K)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out_dir / "proxsgd_nonconvex.png", dpi=110)
        plt.close(fig)
        md += ["", f"Nonconvex runs: {sum(r['seconds'] for r in rows):.0f} s in all.", ""]

    md += [f"Total wall time: {time.perf_counter() - started:.0f} s. Plots: `proxsgd_delay_study{suffix}.png` "
           "(relative suboptimality vs updates), `proxsgd_nonconvex.png`.", ""]  # fmt: skip
    (args.out_dir / f"proxsgd_delay_study{suffix}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
