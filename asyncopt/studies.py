"""Two studies of an asynchronous solver on the user's data (`asyncopt bench`, or from Python):

- `speedup_study`: the same fit with 1, 2, ... workers; time to the target (the loss one worker
  ends at, within `slack`) and training throughput, each against one worker's;
- `delay_study`: the serial engine's exact delay simulator (max_delay = tau, optionally with
  inconsistent reads), epochs to the target of the delay-0 run (within `slack`).

The loss is the history's objective (ProxSGD) or train MSE (EigenPro). Each returns a dict with
"rows" (one per setting) and "runs" (each fit's history and telemetry, for the pictures).
"""

from __future__ import annotations

import time

from sklearn.base import clone

from asyncopt.errors import TrainingDiverged


def _loss_key(history: list[dict]) -> str:
    return "objective" if history[-1].get("objective") is not None else "train_mse"


def _first(history: list[dict], key: str, target: float):
    return next((h for h in history if h[key] <= target), None)


def _fit(est, X, y, fit_kwargs):
    t0 = time.perf_counter()
    est.fit(X, y, **fit_kwargs)
    return time.perf_counter() - t0


def _training_seconds(est) -> float:
    t = est.telemetry_
    return max(1e-9, est.history_[-1]["seconds"] - t.get("setup_seconds", 0.0) - t.get("startup_seconds", 0.0))


def speedup_study(estimator, X, y, workers=(1, 2), backend="processes", slack=0.05, progress=None, **fit_kwargs):
    """Fit `estimator` (its settings) with each worker count on `backend`; returns rows of
    workers, wall seconds (the whole fit), seconds to target, speed-up and throughput speed-up."""
    workers = sorted(set(int(w) for w in workers))
    if workers[0] != 1:
        workers = [1, *workers]
    rows, runs, target, key = [], {}, None, None
    for w in workers:
        est = clone(estimator).set_params(backend=backend, n_workers=w)  # (1 worker too: the same engine)
        wall = _fit(est, X, y, fit_kwargs)
        history = est.history_
        if target is None:
            key = _loss_key(history)
            final = history[-1][key]
            target = final + slack * abs(final)
        hit = _first(history, key, target)
        rows.append(
            {
                "workers": w,
                "backend": est.backend,
                "wall_seconds": wall,
                "seconds_to_target": None if hit is None else hit["seconds"],
                "samples_per_second": history[-1]["samples"] / _training_seconds(est),
                "final_loss": history[-1][key],
                "staleness_mean": est.telemetry_["staleness"]["mean"],
            }
        )
        runs[f"{w} worker{'s' if w > 1 else ''} ({est.backend})"] = {
            "history": history,
            "telemetry": est.telemetry_,
        }
        if progress is not None:
            progress(rows[-1])
    one = rows[0]
    for r in rows:
        r["speedup"] = (
            None if r["seconds_to_target"] is None or not one["seconds_to_target"]
            else one["seconds_to_target"] / r["seconds_to_target"]
        )  # fmt: skip
        r["throughput_speedup"] = r["samples_per_second"] / one["samples_per_second"]
    return {"study": "speedup", "loss": key, "target": target, "slack": slack, "rows": rows, "runs": runs}


def delay_study(
    estimator, X, y, delays=(0, 1, 3, 7, 15, 31), inconsistent_reads=False, budget=3.0, slack=0.05, progress=None,
    **fit_kwargs,
):  # fmt: skip
    """Fit `estimator` on the serial engine with max_delay = each of `delays` (delay 0 first, to set
    the target); the delayed fits get `budget` times delay 0's epochs and stop at the target."""
    epochs_param = "epochs" if "epochs" in estimator.get_params() else "max_epochs"
    delays = sorted(set(int(d) for d in delays) | {0})
    rows, runs, target, key, base_epochs = [], {}, None, None, None
    for tau in delays:
        est = clone(estimator).set_params(backend="serial", n_workers=1, max_delay=tau)
        if "inconsistent_reads" in est.get_params():
            est.set_params(inconsistent_reads=(inconsistent_reads if tau > 0 else False))
        if target is not None:
            stop_at = target

            def reached(entry, key=key, stop_at=stop_at):
                return getattr(entry, key) <= stop_at

            params = {epochs_param: budget * base_epochs, "callback": reached}
            if "tol" in est.get_params():
                params["tol"] = None
            est.set_params(**params)
        t0 = time.perf_counter()
        try:
            _fit(est, X, y, fit_kwargs)
        except TrainingDiverged as exc:  # (a delayed run that diverges is a result; delay 0 diverging is not)
            if target is None:
                raise
            rows.append({"max_delay": tau, "inconsistent_reads": (inconsistent_reads if tau > 0 else False),
                         "epochs_to_target": None, "updates_to_target": None, "final_loss": None,
                         "wall_seconds": time.perf_counter() - t0, "diverged": str(exc).split(":")[0]})  # fmt: skip
            if progress is not None:
                progress(rows[-1])
            continue
        wall = time.perf_counter() - t0
        history = est.history_
        if target is None:
            key = _loss_key(history)
            final = history[-1][key]
            target = final + slack * abs(final)
            base_epochs = history[-1]["epoch"]
        hit = _first(history, key, target)
        rows.append(
            {
                "max_delay": tau,
                "inconsistent_reads": (inconsistent_reads if tau > 0 else False),
                "epochs_to_target": None if hit is None else hit["epoch"],
                "updates_to_target": None if hit is None else hit.get("steps"),
                "final_loss": history[-1][key],
                "wall_seconds": wall,
                "diverged": None,
            }
        )
        runs[f"max_delay {tau}"] = {"history": history, "telemetry": est.telemetry_}
        if progress is not None:
            progress(rows[-1])
    base = rows[0]["epochs_to_target"]
    for r in rows:
        r["epochs_ratio"] = None if r["epochs_to_target"] is None or not base else r["epochs_to_target"] / base
    return {"study": "delay", "loss": key, "target": target, "slack": slack, "rows": rows, "runs": runs}


def markdown(result: dict, command: str = "") -> str:
    """The study's rows as a Markdown table (with the command that made it, when given)."""
    rows = result["rows"]
    columns = [c for c in rows[0] if c not in ("backend",)] if rows else []
    head = f"Command: `{command}`\n\n" if command else ""
    reference = "one worker's" if result["study"] == "speedup" else "delay 0's"
    target = f"{result['loss']} <= {result['target']:.6g}"
    head += f"Target: {target} ({reference} final value, {result['slack']:.0%} slack).\n\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r[c]
            cells.append("n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"
