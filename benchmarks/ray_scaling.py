"""How backend="ray" scales: a model built from measurements made here, checked at 1 and 2 workers.

This machine has 2 cores, so runs of 8-512 workers cannot be measured; they are predicted from
what can be measured, and the prediction is checked where it can be (1 and 2 workers, here).

Measured (one run of this script):
1. messages: round trips of a pull (float64 rows) and a push ((index, value) pairs) between Ray
   actors, by payload, one server or several at once, one caller or two at once (two callers on
   2 cores: the contention of a 2-worker run here);
2. fits on Ray with 1 and 2 workers, timed to target: AsyB-ProxSGD on a9a (L1 logistic, alpha 1e-4,
   no intercept, batch 256, 4 block servers, one batch a task) to (F - F*)/F* <= 1e-2; AsyncEigenPro
   on MNIST 10,000 (one weight server, the estimator's batch) to 94% accuracy on 2,000 test images.
   From the 1-worker fit: compute per task, bytes pulled and pushed per message, server busy time
   per task, start-up;
3. the cost of staleness, from the serial engine's exact delay simulator on the same problems:
   ProxSGD updates to target with random delays 0..tau (mean tau/2) and the delay-adaptive step;
   EigenPro epochs to target with a consistent delay tau and the in-flight batch rule (the batch
   of tau + 1 workers).

Model of one worker's task: pull from every server at once, compute, push to every server at once.
- t_task = compute + pull + push + server time (the servers' busy time per task, measured) + the
  servers' queueing wait (M/D/1 at utilization rho = workers x server time / t_task; at rho >= 1
  the servers set the pace).
- Messages: here, the measured round trip for that payload, fan-out and number of concurrent
  callers; on a cluster (each actor on its own node), the one-caller round trip plus a network
  hop (NETWORK_MS a round trip, NETWORK_GBPS) -- an assumption, not a measurement.
- Staleness: the other workers' updates applied while a task is between its pull and its push:
  (W - 1) x updates per task x (t_task - pull) / t_task.
- EigenPro's batch is the in-flight rule's, m0 / W: its compute and push bytes are fitted as
  a + b m through the 1- and 2-worker fits (pulls are the whole weight vector, every task).
- Time to target = start-up + setup + updates to target at that staleness (interpolated in the
  delay study) x t_task / W. Start-up here grows with the actors (servers + workers) started on
  the 2 cores; on a cluster it is the 1-worker start-up (each node starts its actor at once).

    python benchmarks/ray_scaling.py --out benchmarks/results/ray_scaling.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

NETWORK_MS = 0.1  # a round trip between two nodes of one cluster network (assumed)
NETWORK_GBPS = 10.0  # link speed (assumed)
CLUSTER_WORKERS = (1, 8, 64, 512)
PROX = dict(penalty="l1", alpha=1e-4, fit_intercept=False, batch_size=256, n_blocks=4, random_state=0)
PROX_TARGET = 1e-2
EIGEN_TARGET = 0.94
DELAYS = (0, 1, 3, 7, 15, 31, 63, 127, 255, 511)


# -- 1. messages --------------------------------------------------------------------------------
def measure_messages(ray, repeats: int) -> list[dict]:
    from ray_messages import Server, Worker

    sizes = [100, 10_000, 100_000, 1_000_000]
    servers = [ray.remote(num_cpus=0)(Server).remote(max(sizes)) for _ in range(4)]
    callers = [ray.remote(num_cpus=0)(Worker).remote(servers) for _ in range(2)]
    ray.get([c.time_calls.remote("empty", 0, 1, 5) for c in callers])
    rows = []
    for kind in ("pull", "push"):
        for size in sizes:
            for fan in (1, 4):
                for n_callers in (1, 2):
                    times = ray.get([c.time_calls.remote(kind, size, fan, repeats) for c in callers[:n_callers]])
                    ms = 1e3 * statistics.median([t for ts in times for t in ts])
                    payload = (8 if kind == "pull" else 16) * size
                    rows.append({"kind": kind, "size": size, "bytes": payload, "fan": fan, "callers": n_callers,
                                 "ms": ms})  # fmt: skip
                    print(rows[-1], flush=True)
    for actor in servers + callers:
        ray.kill(actor)
    return rows


def round_trip_ms(messages: list[dict], kind: str, nbytes: float, fan: int, callers: int) -> float:
    """The measured round trip for `nbytes` a message, interpolated linearly in bytes (fan 1 or 4;
    other fans by a line through those two)."""

    def at(f):
        pts = sorted((m["bytes"], m["ms"]) for m in messages if m["kind"] == kind and m["fan"] == f
                     and m["callers"] == callers)  # fmt: skip
        xs, ys = zip(*pts, strict=True)
        if nbytes >= xs[-1]:  # beyond the largest: the last segment's slope
            return ys[-1] + (nbytes - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(np.interp(nbytes, xs, ys))

    one, four = at(1), at(4)
    return one + (fan - 1) * (four - one) / 3


# -- 2. fits ------------------------------------------------------------------------------------
def busy_cpu_seconds() -> float:
    """CPU seconds the machine has been busy (all cores, all processes: /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuProbe:
    """A callback that samples the machine's busy CPU at each evaluation point (and stops at the
    target): the CPU a task costs, all processes together (workers, servers, raylet, driver)."""

    def __init__(self, hit):
        self.hit, self.marks = hit, []

    def __call__(self, entry):
        self.marks.append((time.perf_counter(), busy_cpu_seconds(), time.process_time(), entry.seconds, entry.steps))
        return self.hit(entry)

    def per_update_ms(self) -> tuple[float, float]:
        """(machine, driver) busy CPU between the first and last evaluation point, less the
        evaluations (on one core: their wall time is the part not in the history's seconds), per
        update. The driver's is the coordinator's (its Ray threads included)."""
        (w0, c0, d0, s0, u0), (w1, c1, d1, s1, u1) = self.marks[0], self.marks[-1]
        evaluations = (w1 - w0) - (s1 - s0)
        n = max(1, u1 - u0)
        return 1e3 * ((c1 - c0) - evaluations) / n, 1e3 * max(0.0, (d1 - d0) - evaluations) / n


def first_hit(history: list[dict], hit) -> dict | None:
    return next((h for h in history if hit(h)), None)


def fit_proxsgd(workers: int, fstar: float, backend: str = "ray") -> dict:
    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a

    X, y, _, _ = load_a9a()
    probe = CpuProbe(lambda e: (e.objective - fstar) / fstar <= PROX_TARGET)
    est = ProxSGDClassifier(backend=backend, n_workers=workers, threads_per_worker=1, max_epochs=40, tol=None,
                            evals_per_epoch=10, callback=probe, **PROX)  # fmt: skip
    t0 = time.perf_counter()
    est.fit(X, y)
    wall = time.perf_counter() - t0
    hit = first_hit(est.history_, lambda h: (h["objective"] - fstar) / fstar <= PROX_TARGET)
    return summarize("proxsgd", workers, est, wall, hit, batch=est.batch_size_, probe=probe)


def fit_eigenpro(workers: int, backend: str = "ray") -> dict:
    from asyncopt import EigenProClassifier
    from asyncopt.datasets import load_mnist

    X, y, Xt, yt = load_mnist()
    probe = CpuProbe(lambda e: e.val_metric >= EIGEN_TARGET)
    est = EigenProClassifier(bandwidth=10.0, epochs=3, evals_per_epoch=10, random_state=0, backend=backend,
                             n_workers=workers, threads_per_worker=1, callback=probe)  # fmt: skip
    t0 = time.perf_counter()
    est.fit(X[:10_000], y[:10_000], X_val=Xt[:2000], y_val=yt[:2000])
    wall = time.perf_counter() - t0
    hit = first_hit(est.history_, lambda h: h["val_metric"] >= EIGEN_TARGET)
    return summarize("eigenpro", workers, est, wall, hit, batch=est.batch_size_, probe=probe)


def summarize(algo: str, workers: int, est, wall: float, hit: dict | None, batch: int, probe: CpuProbe) -> dict:
    """The fit's figures per task (a task is one batch here: one pull from every server actor, one push
    to each server actor the update goes to)."""
    t = est.telemetry_
    ws = t["workers"]
    n_servers = len(t.get("server_actors") or t["server_updates"])  # (a message goes to an actor)
    tasks = t["updates"]
    pulls = tasks * n_servers
    pushes = sum(w["messages"] for w in ws) - pulls
    pull_bytes = sum(w["pull_bytes"] for w in ws)
    push_bytes = sum(w["message_bytes"] for w in ws) - pull_bytes
    last = est.history_[-1]
    training = last["seconds"] - t["setup_seconds"] - t["startup_seconds"]
    row = {
        "algo": algo, "workers": workers, "batch": batch, "servers": n_servers, "tasks": tasks,
        "pushes_per_task": pushes / tasks, "updates": t["updates"], "samples": last["samples"],
        "training_seconds": training, "wall": wall,
        "setup_seconds": t["setup_seconds"], "startup_seconds": t["startup_seconds"],
        "compute_per_task_ms": 1e3 * sum(w["compute_seconds"] for w in ws) / tasks,
        "messages_per_task_ms": 1e3 * sum(w["message_seconds"] for w in ws) / tasks,
        "pull_bytes_per_message": pull_bytes / max(1, pulls),
        "push_bytes_per_message": push_bytes / max(1, pushes),
        "server_busy_per_task_ms": 1e3 * sum(t["server_busy_seconds"] or [0.0]) / tasks,
        "server_busy_seconds": t["server_busy_seconds"],
        "staleness": t["staleness"]["mean"],
        "updates_to_target": hit["steps"] if hit else None, "epochs_to_target": hit["epoch"] if hit else None,
        "seconds_to_target": hit["seconds"] if hit else None,
        "throughput": last["samples"] / training,
        "task_wall_ms": 1e3 * training * workers / tasks,  # a worker's tasks run one after the other
        "cpu_per_task_ms": probe.per_update_ms()[0],  # (a task is one update here)
        "coordinator_cpu_per_task_ms": probe.per_update_ms()[1],
    }  # fmt: skip
    print(row, flush=True)
    return row


# -- 3. the cost of staleness (serial engine) ------------------------------------------------------
def proxsgd_updates_to_target(fstar: float, tau: int, max_epochs: float) -> int | None:
    from asyncopt import ProxSGDClassifier
    from asyncopt.datasets import load_a9a

    X, y, _, _ = load_a9a()
    est = ProxSGDClassifier(max_delay=tau, delay="random", delay_adaptive=True, max_epochs=max_epochs, tol=None,
                            evals_per_epoch=10, callback=lambda e: (e.objective - fstar) / fstar <= PROX_TARGET,
                            **PROX)  # fmt: skip
    est.fit(X, y)
    hit = first_hit(est.history_, lambda h: (h["objective"] - fstar) / fstar <= PROX_TARGET)
    print("proxsgd delay", tau, hit["steps"] if hit else None, flush=True)
    return hit["steps"] if hit else None


def delay_curves(fstar: float, prox_epochs: float) -> dict:
    from asyncopt import EigenProClassifier
    from asyncopt.datasets import load_mnist

    prox = {tau: proxsgd_updates_to_target(fstar, tau, prox_epochs) for tau in DELAYS}
    X, y, Xt, yt = load_mnist()
    eigen = {}
    for tau in DELAYS:
        est = EigenProClassifier(bandwidth=10.0, epochs=3, evals_per_epoch=10, random_state=0, max_delay=tau,
                                 callback=lambda e: e.val_metric >= EIGEN_TARGET)  # fmt: skip
        est.fit(X[:10_000], y[:10_000], X_val=Xt[:2000], y_val=yt[:2000])
        hit = first_hit(est.history_, lambda h: h["val_metric"] >= EIGEN_TARGET)
        eigen[tau] = (hit["epoch"] if hit else None, est.batch_size_)
        print("eigenpro delay", tau, eigen[tau], flush=True)
    return {"proxsgd_updates": prox, "eigenpro_epochs": eigen}


def interpolate_delay(curve: dict, tau: float):
    """The curve (tau -> value; None: target not reached) at tau, linear in log(1 + tau)."""
    pts = sorted((int(k), v) for k, v in curve.items())
    xs = [math.log1p(k) for k, _ in pts]
    x = math.log1p(max(0.0, tau))
    if x > xs[-1]:
        return None  # beyond the study
    for (_, v0), (_, v1), x0, x1 in zip(pts, pts[1:], xs, xs[1:], strict=False):
        if x0 <= x <= x1:
            if v0 is None or v1 is None:
                return None
            return v0 + (v1 - v0) * (x - x0) / (x1 - x0)
    return pts[0][1]


# -- 4. the model ---------------------------------------------------------------------------------
def predict(
    one: dict, two: dict | None, messages: list[dict], curves: dict, workers: int, where: str, coordinator_ms: float
) -> dict:
    """The model's figures for `workers` workers, `where` = "here" (this machine's cores shared by
    every actor) or "cluster" (each actor on its own node). Calibrated on the 1-worker fit `one`:
    its compute, its messages and the rest of its task's wall time (coordination, drains) per task,
    its CPU per task (all processes), its servers' and its coordinator's busy time per task."""
    algo, S = one["algo"], one["servers"]
    batch = one["samples"] / one["tasks"]  # (the mean: a task does not cross an evaluation point, the last is short)
    compute, messages_ms = one["compute_per_task_ms"], one["messages_per_task_ms"]
    other = max(0.0, one["task_wall_ms"] - compute - messages_ms)
    cpu, server = one["cpu_per_task_ms"], one["server_busy_per_task_ms"]
    # the coordinator's CPU per task, from the ProxSGD fit (its tasks are many between evaluation points;
    # EigenPro's 16 tasks carry the drains, pulls and broadcasts of 8 evaluation points)
    coordinator = coordinator_ms
    pull_bytes, push_bytes = one["pull_bytes_per_message"], one["push_bytes_per_message"]
    if algo == "eigenpro":  # the in-flight rule's batch m0 / W: compute in proportion (the m x n kernel block);
        m1, m2 = one["batch"], two["batch"]  # push bytes on the line through the 1- and 2-worker fits (counts)
        batch = max(1.0, batch / workers)
        p1, p2 = one["push_bytes_per_message"], two["push_bytes_per_message"]
        push_bytes = max(0.0, p1 + (batch - m1) * (p2 - p1) / (m2 - m1))
        scaled = compute * batch / (one["samples"] / one["tasks"])
        cpu += scaled - compute
        compute = scaled
    # the share of the messages before the read (the pull), from the round trips measured alone
    pull_rt = round_trip_ms(messages, "pull", pull_bytes, S, 1)
    push_rt = round_trip_ms(messages, "push", push_bytes, max(1, round(one["pushes_per_task"])), 1)
    pull_share = pull_rt / (pull_rt + push_rt)
    base = compute + messages_ms + other
    if where == "cluster":  # a network hop for the pull (fan-out: the worker's link carries all) and the push
        wire = lambda b: NETWORK_MS + 8 * b / (NETWORK_GBPS * 1e9) * 1e3  # noqa: E731 (ms)
        base += wire(pull_bytes * S) + wire(push_bytes * one["pushes_per_task"])
    per_server = server / S  # (ProxSGD's blocks are drawn evenly; EigenPro has one server)
    t_task, rho_s, rho_c = base, 0.0, 0.0
    if where == "here":  # processor sharing: W tasks' CPU on the machine's cores
        demand = workers * cpu / base
        t_task = base * max(1.0, demand / os.cpu_count())
    else:  # the servers and the coordinator are queues: M/D/1 waits, and at load 1 they set the pace
        for _ in range(500):
            rho_s, rho_c = workers * per_server / t_task, workers * coordinator / t_task
            if max(rho_s, rho_c) >= 0.999:
                t_task = workers * max(per_server, coordinator)
                rho_s, rho_c = workers * per_server / t_task, workers * coordinator / t_task
                break
            wait = 2 * rho_s * per_server / (2 * (1 - rho_s)) + rho_c * coordinator / (2 * (1 - rho_c))
            if abs(base + wait - t_task) < 1e-9:
                break
            t_task = base + wait
    stretch = t_task / base  # (contention or queueing stretches the whole task)
    window = (compute + messages_ms * (1 - pull_share)) * stretch + (t_task - base)  # read to write
    staleness = (workers - 1) * window / t_task
    throughput = workers * batch / (t_task / 1e3)  # samples/s
    if algo == "proxsgd":
        updates = interpolate_delay(curves["proxsgd_updates"], 2 * staleness)  # (random 0..tau: mean tau / 2)
        samples = None if updates is None else updates * batch
    else:
        epochs = interpolate_delay({k: v[0] for k, v in curves["eigenpro_epochs"].items()}, workers - 1)
        samples = None if epochs is None else epochs * 10_000
    # start-up: here the actors start on the machine's cores, one after the other in effect (torch
    # imports and kernel loads are CPU-bound): in proportion to the actors, servers included; on a
    # cluster each node starts its own at once: one actor's start, as measured for 1 worker (assumed)
    startup = one["startup_seconds"]
    if where == "here":
        startup *= (S + workers) / (S + 1)
    seconds = None if samples is None else startup + one["setup_seconds"] + samples / throughput
    return {"workers": workers, "where": where, "batch": batch, "compute_ms": compute, "messages_ms": messages_ms,
            "other_ms": other, "t_task_ms": t_task, "rho_s": rho_s, "rho_c": rho_c, "staleness": staleness,
            "throughput": throughput, "pull_kb": pull_bytes * S / 1e3,
            "push_kb": push_bytes * one["pushes_per_task"] / 1e3, "seconds_to_target": seconds}  # fmt: skip


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def tables(data: dict) -> str:
    out = []
    coordinator_ms = data["fits"]["proxsgd"][0]["coordinator_cpu_per_task_ms"]
    titles = (("proxsgd", "ProxSGD (push=\"auto\": the full push here), a9a, 4 block servers"),
              ("eigenpro", "AsyncEigenPro, MNIST 10,000"))  # fmt: skip
    for algo, title in titles:
        one, two = data["fits"][algo]
        out += [f"### {title}", "", "Check: the model against the fits here (2 cores).", "",
                "| workers | | samples/s | mean staleness | seconds to target | task (ms) |",
                "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
        checks = []
        for fit in (one, two):
            p = predict(one, two, data["messages"], data["curves"], fit["workers"], "here", coordinator_ms)
            checks.append((fit, p))
            task_ms = fit["task_wall_ms"]
            out.append(
                f"| {fit['workers']} | measured | {fit['throughput']:,.0f} | {fit['staleness']:.2f} | "
                f"{fmt(fit['seconds_to_target'], '.1f')} | {task_ms:.1f} |"
            )
            out.append(
                f"| {fit['workers']} | model | {p['throughput']:,.0f} | {p['staleness']:.2f} | "
                f"{fmt(p['seconds_to_target'], '.1f')} | {p['t_task_ms']:.1f} |"
            )
        fit, p = checks[1]
        out += ["", f"Model / measured at 2 workers: throughput {p['throughput'] / fit['throughput']:.2f}, time to "
                f"target {fmt(ratio(p['seconds_to_target'], fit['seconds_to_target']))}, per-task time "
                f"{p['t_task_ms'] / fit['task_wall_ms']:.2f}, staleness {fmt(ratio(p['staleness'], fit['staleness']))} "
                f"(at 1 worker the model is calibrated: it matches by construction, except the time to target, "
                f"which goes through the serial delay study). Compute per task, 1 -> 2 workers, measured: "
                f"{one['compute_per_task_ms']:.2f} -> {fit['compute_per_task_ms']:.2f} ms (batch "
                f"{one['samples'] / one['tasks']:.0f} -> {fit['samples'] / fit['tasks']:.0f}); messages per task "
                f"{one['messages_per_task_ms']:.2f} -> {fit['messages_per_task_ms']:.2f} ms."]  # fmt: skip
        out += ["", f"Prediction for a cluster (each actor on its own node; {NETWORK_MS} ms and {NETWORK_GBPS:g} Gb/s "
                "a hop, assumed).", "",
                "| workers | batch | compute (ms) | messages (ms) | other (ms) | task (ms) | server load | "
                "coordinator load | pulled / pushed per task (kB) | mean staleness | samples/s | seconds to target | "
                "speedup |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        first = None
        for w in CLUSTER_WORKERS:
            p = predict(one, two, data["messages"], data["curves"], w, "cluster", coordinator_ms)
            first = first or p["seconds_to_target"]
            speedup = None if p["seconds_to_target"] is None or first is None else first / p["seconds_to_target"]
            out.append(f"| {w} | {p['batch']:.0f} | {p['compute_ms']:.2f} | {p['messages_ms']:.2f} | "
                       f"{p['other_ms']:.2f} | "
                       f"{p['t_task_ms']:.2f} | {p['rho_s']:.2f} | {p['rho_c']:.2f} | "
                       f"{p['pull_kb']:,.1f} / {p['push_kb']:,.1f} | {p['staleness']:.1f} | {p['throughput']:,.0f} | "
                       f"{fmt(p['seconds_to_target'], '.1f')} | {fmt(speedup)} |")  # fmt: skip
        out.append("")
    out += ["### Notes on this run", ""] + [f"- {n}" for n in data.get("notes", [])] + [""]
    out += ["### Measured inputs", "", "Fits (Ray, here):", "", "```"]
    out += [json.dumps(r) for algo in data["fits"].values() for r in algo]
    out += ["```", "", "Cost of staleness (serial engine): ProxSGD updates to target by tau (random delay 0..tau, "
            "delay-adaptive step); EigenPro (epochs to target, batch) by tau (consistent delay, in-flight rule):", "",
            "```", json.dumps(data["curves"]), "```", "",
            "Messages (round trip, ms, median; `callers`: concurrent calling actors):", "",
            "| kind | bytes a message | servers at once | callers | ms |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    out += [f"| {m['kind']} | {m['bytes']:,} | {m['fan']} | {m['callers']} | {m['ms']:.3f} |" for m in data["messages"]]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="Markdown file (and the measurements next to it, .json)")
    parser.add_argument("--from-json", default=None, help="redo the model from saved measurements")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--curves-from", default=None, help="take the delay study from this saved JSON (its "
                        "counts do not depend on the machine's load) instead of rerunning it")  # fmt: skip
    parser.add_argument("--prox-epochs", type=float, default=300, help="cap of a ProxSGD delay-study run")
    parser.add_argument("--extend", action="store_true", help="with --from-json: rerun the ProxSGD delay "
                        "points that did not reach the target, capped at --prox-epochs, and save the JSON")  # fmt: skip
    args = parser.parse_args()
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        if args.extend:
            fstar = json.loads((Path(__file__).parent / "results" / "proxsgd_optima.json").read_text())[
                "a9a/alpha=0.0001"]["objective"]  # fmt: skip
            curve = data["curves"]["proxsgd_updates"]
            for tau, updates in curve.items():
                if updates is None:
                    curve[tau] = proxsgd_updates_to_target(fstar, int(tau), args.prox_epochs)
            data.setdefault("notes", []).append(f"ProxSGD delay points rerun with a cap of {args.prox_epochs} epochs")
            Path(args.from_json).write_text(json.dumps(data, indent=1))
    else:
        import ray

        from asyncopt.datasets import load_a9a  # noqa: F401 (fail early without the data)

        optima = json.loads((Path(__file__).parent / "results" / "proxsgd_optima.json").read_text())
        fstar = optima["a9a/alpha=0.0001"]["objective"]
        from asyncopt.engines.ray_engine import DIRECT_CALL_BYTES

        # (as asyncopt starts a local Ray itself: calls carry objects up to DIRECT_CALL_BYTES)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
                 _system_config={"max_direct_call_object_size": DIRECT_CALL_BYTES})  # fmt: skip
        # the driver's evaluations on one thread: their CPU is then their wall time (CpuProbe)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        data = {"messages": measure_messages(ray, args.repeats)}
        data["fits"] = {"proxsgd": [fit_proxsgd(1, fstar), fit_proxsgd(2, fstar)],
                        "eigenpro": [fit_eigenpro(1), fit_eigenpro(2)]}  # fmt: skip
        if args.curves_from:
            data["curves"] = json.loads(Path(args.curves_from).read_text())["curves"]
        else:
            data["curves"] = delay_curves(fstar, args.prox_epochs)
        data["seconds"] = time.perf_counter() - t0
    text = (f"Command: `python benchmarks/ray_scaling.py` ({os.cpu_count()} cores; "
            f"{data.get('seconds', 0):.0f} s)\n\n" + tables(data))  # fmt: skip
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        if not args.from_json:
            Path(args.out).with_suffix(".json").write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
