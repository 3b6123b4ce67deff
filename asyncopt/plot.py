"""Pictures of asynchronous runs (needs matplotlib: the 'plot' extra).

Every function takes what a user has at hand, a fitted estimator, its ``history_`` or
``telemetry_``, or saved bench results (`asyncopt bench`'s JSON), draws on a new figure (or on
``ax``), saves it to ``path`` when given, and returns the matplotlib Figure.

- `plot_convergence`: objective / train MSE (log scale, or the suboptimality against a known
  optimum) and the validation metric, against seconds or samples, several runs overlaid;
- `plot_staleness`: the staleness histogram;
- `plot_timeline`: per worker, when it computed and when it waited;
- `plot_speedup`: speed-up against workers, next to the ideal;
- `plot_delay`: the cost of staleness (epochs or updates to target against the delay).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

# what a history holds, by algorithm: (key, axis label, log scale)
LOSSES = (("objective", "objective F(x)", True), ("train_mse", "train MSE (fixed subsample)", True))
X_AXES = {"seconds": "training seconds (setup included)", "samples": "samples processed", "epoch": "epochs"}


def _pyplot(path):
    import matplotlib

    if path is not None and not os.environ.get("DISPLAY") and matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path, title=None, layout=True):
    if title:
        fig.suptitle(title)
    if layout:
        fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        _pyplot(path).close(fig)
    return fig


def _history(run) -> list[dict]:
    """A history as a list of dicts, from an estimator, a history, or saved results ({"history": ...})."""
    if hasattr(run, "history_"):
        run = run.history_
    if isinstance(run, Mapping) and "history" in run:
        run = run["history"]
    entries = [e if isinstance(e, Mapping) else e.as_dict() for e in run]
    if not entries:
        raise ValueError("an empty history: nothing to plot")
    return entries


def _runs(runs) -> list[tuple[str, list[dict]]]:
    """(label, history) pairs from one run, a list of runs, or a {label: run} mapping."""
    if isinstance(runs, Mapping) and "history" not in runs:
        return [(str(k), _history(v)) for k, v in runs.items()]
    if hasattr(runs, "history_") or (isinstance(runs, Mapping)):
        return [(_label(runs), _history(runs))]
    runs = list(runs)
    if runs and (isinstance(runs[0], Mapping) and "epoch" in runs[0] or hasattr(runs[0], "epoch")):
        return [("", _history(runs))]  # one history
    return [(_label(r) or f"run {i + 1}", _history(r)) for i, r in enumerate(runs)]


def _label(run) -> str:
    if hasattr(run, "history_"):
        return type(run).__name__
    return str(run.get("label", "")) if isinstance(run, Mapping) else ""


def plot_convergence(runs, x="seconds", optimum=None, ax=None, path=None, title=None):
    """The loss (objective, or train MSE for EigenPro) and, when recorded, the validation metric,
    against `x` ("seconds", "samples" or "epoch"), one line per run.

    `optimum`: a known optimal objective F*; the relative suboptimality (F - F*) / F* is drawn instead.
    """
    if x not in X_AXES:
        raise ValueError(f"x={x!r}: use one of {', '.join(X_AXES)}")
    runs = _runs(runs)
    plt = _pyplot(path)
    has_val = any(h.get("val_metric") is not None for _, hist in runs for h in hist)
    if ax is None:
        fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(9.5 if has_val else 5.5, 3.8), squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(ax) if isinstance(ax, Sequence) else [ax]
        fig = axes[0].figure
    loss_key, loss_label = None, None
    for label, hist in runs:
        key, name, _ = next(((k, n, g) for k, n, g in LOSSES if hist[0].get(k) is not None), (None, None, None))
        if key is None:
            raise ValueError(f"history {label!r} has neither objective nor train_mse")
        loss_key, loss_label = key, name
        xs = [h[x] for h in hist]
        ys = [h[key] for h in hist]
        if optimum is not None:
            ys = [max((v - optimum) / abs(optimum), 1e-16) for v in ys]
        axes[0].plot(xs, ys, marker="o", markersize=3, label=label or None)
        if has_val and len(axes) > 1:
            val = [(h[x], h["val_metric"]) for h in hist if h.get("val_metric") is not None]
            if val:
                axes[1].plot(*zip(*val, strict=True), marker="o", markersize=3, label=label or None)
    axes[0].set_yscale("log")
    ylabel = "relative suboptimality (F - F*) / F*" if optimum is not None and loss_key == "objective" else loss_label
    if optimum is not None and loss_key != "objective":
        ylabel = f"({loss_label} - optimum) / optimum"
    axes[0].set(xlabel=X_AXES[x], ylabel=ylabel)
    if x == "samples":
        axes[0].ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    if has_val and len(axes) > 1:
        axes[1].set(xlabel=X_AXES[x], ylabel="validation metric (accuracy or R^2)")
    for a in axes:
        a.grid(True, which="both", alpha=0.3)
        if any(label for label, _ in runs):
            a.legend(fontsize=8)
    return _finish(fig, path, title)


def _telemetry(run) -> dict:
    if hasattr(run, "telemetry_"):
        return run.telemetry_
    if isinstance(run, Mapping) and "telemetry" in run:
        return run["telemetry"]
    if isinstance(run, Mapping) and "staleness_histogram" in run:
        return run
    raise ValueError("expected a fitted estimator, its telemetry_, or saved results with a telemetry")


def plot_staleness(run, ax=None, path=None, title=None):
    """How stale the updates were: the count of updates by staleness (updates applied between a
    worker's read and its update's application), log-scaled counts."""
    hist = {int(k): int(v) for k, v in _telemetry(run)["staleness_histogram"].items()}
    if not hist:
        raise ValueError("the telemetry records no updates")
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.6)) if ax is None else (ax.figure, ax)
    values = sorted(hist)
    ax.bar(values, [hist[v] for v in values], width=0.8, color="C0")
    ax.set_yscale("log")
    total = sum(hist.values())
    mean = sum(k * v for k, v in hist.items()) / total
    ax.axvline(mean, color="C3", linestyle="--", label=f"mean {mean:.2f}")
    ax.set(xlabel="staleness (updates applied between read and write)", ylabel="updates")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, path, title or f"staleness of {total:,} updates")


def plot_timeline(run, ax=None, path=None, title=None):
    """Per worker, its tasks in time: computing (dark) and waiting for a task (light), as the
    coordinator recorded them (a task ends when its reply arrives). Long runs keep every 2nd, 4th...
    task (telemetry's timeline); the breakdown on the right is of all tasks."""
    t = _telemetry(run)
    lines = t.get("timeline") or []
    if not any(lines):
        raise ValueError("the telemetry has no timeline (recorded by asyncopt 0.1.0 and later)")
    plt = _pyplot(path)
    if ax is None:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 1.8 + 0.5 * len(lines)), width_ratios=[3, 1])
    else:
        fig, bx = ax.figure, None
    for w, line in enumerate(lines):
        busy = [(end - compute, compute) for end, compute, _ in line]
        idle = [(end - compute - wait, wait) for end, compute, wait in line if wait > 0]
        ax.broken_barh(idle, (w - 0.35, 0.7), facecolors="C1", alpha=0.5)
        ax.broken_barh(busy, (w - 0.35, 0.7), facecolors="C0")
    ax.set(xlabel="seconds since the engine started (workers' start-up included)", ylabel="worker",
           yticks=range(len(lines)), ylim=(-0.6, len(lines) - 0.4))  # fmt: skip
    fig.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color="C0"), plt.Rectangle((0, 0), 1, 1, color="C1", alpha=0.5)],
        labels=["compute (and messages)", "waiting for a task (e.g. while the coordinator evaluates)"],
        fontsize=8,
        loc="lower center",
        ncol=2,
        frameon=False,
    )
    if bx is not None:
        workers = t["workers"]
        compute = [w["compute_seconds"] + w.get("message_seconds", 0.0) for w in workers]
        wait = [w["wait_seconds"] for w in workers]
        bx.barh(range(len(workers)), compute, color="C0")
        bx.barh(range(len(workers)), wait, left=compute, color="C1", alpha=0.5)
        bx.set(xlabel="seconds, all tasks", yticks=range(len(workers)))
    fig.suptitle(title or "what each worker did")
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))  # (room for the legend below and the title above)
    return _finish(fig, path, layout=False)


def _load(results):
    if isinstance(results, str | os.PathLike):
        with open(results, encoding="utf-8") as f:
            return json.load(f)
    return results


def plot_speedup(results, ax=None, path=None, title=None):
    """Speed-up against workers from `asyncopt bench speedup` results (its JSON file or dict, or
    rows {"workers", "speedup"[, "throughput_speedup"]}): time to target of 1 worker over that of P,
    next to the ideal P."""
    rows = _rows(_load(results), "workers")
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.8)) if ax is None else (ax.figure, ax)
    ws = [r["workers"] for r in rows]
    ax.plot(ws, ws, "k--", label="ideal", linewidth=1)
    to_target = [(r["workers"], r["speedup"]) for r in rows if r.get("speedup") is not None]
    if to_target:
        ax.plot(*zip(*to_target, strict=True), marker="o", label="time to target")
    if any(r.get("throughput_speedup") is not None for r in rows):
        ax.plot(ws, [r.get("throughput_speedup") for r in rows], marker="s", label="throughput (samples/s)")
    ax.set(xlabel="workers", ylabel="speed-up over 1 worker", xticks=ws)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title)


def plot_delay(results, ax=None, path=None, title=None):
    """The cost of staleness from `asyncopt bench delay` results (or rows {"max_delay",
    "epochs_to_target"}): epochs to the target against the simulated delay; a missed target is
    marked at the top."""
    rows = _rows(_load(results), "max_delay")
    plt = _pyplot(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.8)) if ax is None else (ax.figure, ax)
    xs = [r["max_delay"] + 1 for r in rows]  # (log scale: delay 0 at 1)
    reached = [(x, r["epochs_to_target"]) for x, r in zip(xs, rows, strict=True) if r["epochs_to_target"] is not None]
    if reached:
        ax.plot(*zip(*reached, strict=True), marker="o", label="target reached")
    missed = [x for x, r in zip(xs, rows, strict=True) if r["epochs_to_target"] is None]
    if missed:
        top = max([y for _, y in reached], default=1.0) * 1.2
        ax.plot(missed, [top] * len(missed), "rx", markersize=9, label="not reached (or diverged)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(r["max_delay"]) for r in rows])
    ax.set(xlabel="max delay (updates)", ylabel="epochs to target")
    highest = max([y for _, y in reached] + ([top] if missed else []), default=1.0)
    ax.set_ylim(0, 1.15 * highest)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, title)


def _rows(results, key: str) -> list[dict]:
    rows = results.get("rows", results) if isinstance(results, Mapping) else results
    rows = sorted((dict(r) for r in rows), key=lambda r: r[key])
    if not rows:
        raise ValueError("no results to plot")
    return rows


def plot_history(history, path=None, title=None):
    """The convergence of one run (kept for existing code: plot_convergence draws the same)."""
    return plot_convergence(history, path=path, title=title)
