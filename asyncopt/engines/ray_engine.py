"""Ray: parameter servers and workers as Ray Core actors, the coordinator in the caller's process.

- A server actor (`ServerActor`) owns rows [lo, hi) of the parameter store (`algo.server_rows(b)`,
  one actor per server the algorithm declares: AsyB-ProxSGD's blocks and its intercept server,
  AsyncEigenPro's row shards). It applies the algorithm's rule (`algo.apply`) to the parts
  addressed to it, one push at a time (an actor runs one call at a time: a server's updates are
  serialized as its inbox would serialize them), and counts them (its clock). It answers pulls
  with its rows and its clock.
- A worker actor (`WorkerActor`) takes a task of batches: it pulls every server's rows (one
  message each, in parallel), computes each batch's update from what it pulled (the algorithm's
  pure `compute`), splits the updates by server (`algo.server_parts`) and pushes one message per
  server carrying all of the task's parts. A Ray call costs about a millisecond, so a message must
  carry real work: ProxSGD tasks are of many batches, EigenPro's of one (a batch is ~100 ms).
- Staleness is counted by the servers' clocks: an update's staleness is the number of updates its
  server applied between the worker's pull and this update (the worker's own earlier updates of
  the same task included: it reads the pulled rows, not its own updates).
- Each push carries (worker, sequence number); a server applies a worker's push at most once (a
  push Ray retries is answered from the ledger, not applied again).
- The coordinator hands out tasks (at most `tasks_in_flight` per worker), drains them at
  evaluation points, pulls the parameters for the monitor and the checkpoints, and sends the
  rule's state (`algo.state_dict()`: the step schedule, the SVRG anchor) to every actor after each
  evaluation point, where it may change.

The read-only data reaches the actors once, inside the algorithm put in Ray's object store
(`ray.put`), never per step. Ray is an optional dependency (`pip install asyncopt[ray]`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch

from asyncopt.engines.base import (
    AsyncAlgorithm,
    BatchStream,
    Checkpointer,
    Monitor,
    Schedule,
    TrainingInterrupted,
    WorkerFailed,
)
from asyncopt.engines.telemetry import Telemetry

TASKS_PER_WORKER = 4  # tasks per worker between two evaluation points, at least


def _write_rows(params: torch.Tensor, lo: int, hi: int, rows: np.ndarray) -> None:
    """params[lo:hi] = rows (a pulled array, read-only when Ray maps it from the object store)."""
    if params.device.type == "cpu":
        params[lo:hi].numpy()[...] = rows
    else:
        params[lo:hi] = torch.from_numpy(np.array(rows)).to(params.device)


def import_ray():
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'asyncopt[ray]' (or pip install 'ray>=2.9')") from exc
    return ray


def ensure_ray(address: str | None):
    """Join the Ray cluster at `address`, or start (or reuse) a local Ray when it is None."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=True)
    return ray


class ServerActor:
    """Rows [lo, hi) of the parameter store, the rule that updates them, their clock and ledger."""

    def __init__(self, algo, index: int, lo: int, hi: int, rows: np.ndarray, clock: int, ledger: dict):
        torch.set_num_threads(1)
        self.algo, self.index, self.lo, self.hi = algo, index, lo, hi
        self.params = algo.init_params()  # (rows outside lo..hi stay untouched zero pages)
        _write_rows(self.params, lo, hi, rows)
        self.clock = int(clock)
        self.ledger = {int(w): int(s) for w, s in ledger.items()}  # worker -> last sequence number applied

    def pull(self) -> tuple[int, np.ndarray]:
        return self.clock, self.params[self.lo : self.hi].numpy().copy()

    def push(self, worker: int, seq: int, parts: list) -> list[int] | None:
        """Apply `parts` ((part, clock the worker read)) in order; their stalenesses, or None for a
        push this server already applied (a retry)."""
        if seq <= self.ledger.get(worker, -1):
            return None
        stalenesses = []
        for part, seen in parts:
            staleness = self.clock - seen
            self.algo.apply(self.params, part, staleness)
            self.clock += 1
            stalenesses.append(staleness)
        self.ledger[worker] = seq
        return stalenesses

    def set_rule_state(self, state: dict) -> None:
        self.algo.load_state_dict(state, self.params)

    def state(self) -> dict:
        return {"clock": self.clock, "ledger": dict(self.ledger)}


class WorkerActor:
    """A worker: pull, compute a task's batches from what it pulled, push each server's parts."""

    def __init__(self, index: int, algo, servers: list, rows: list, threads: int):
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        self.index, self.algo, self.servers, self.rows = index, algo, servers, rows
        if hasattr(algo, "prepare"):  # load compiled kernels before the first task's clock
            algo.prepare()
        self.params = algo.init_params()
        self.seq = 0

    def ready(self) -> bool:
        return True

    def set_rule_state(self, state: dict) -> None:
        self.algo.load_state_dict(state, self.params)

    def run_task(self, task) -> tuple[list[int], int, float, float]:
        """(stalenesses, samples, compute seconds, seconds waiting on pulls and pushes)."""
        import ray

        t0 = time.perf_counter()
        task.rows = np.array(task.rows)  # (writable: Ray maps arrays read-only from the object store)
        pulled = ray.get([server.pull.remote() for server in self.servers])
        clocks = []
        for (lo, hi), (clock, rows) in zip(self.rows, pulled, strict=True):
            _write_rows(self.params, lo, hi, rows)
            clocks.append(clock)
        t1 = time.perf_counter()
        parts: list[list] = [[] for _ in self.servers]
        owners = []  # per update: (server, place in that server's parts) of each of its parts
        for batch, scale, key in task.batches():
            update = self.algo.compute(self.params, torch.as_tensor(batch), scale, key)
            self.algo.check(update, -1, -1)
            placed = []
            for server, part in self.algo.server_parts(update):
                placed.append((server, len(parts[server])))
                parts[server].append((part, clocks[server]))
            owners.append(placed)
        t2 = time.perf_counter()
        self.seq += 1
        targets = [b for b, p in enumerate(parts) if p]
        sent = [self.servers[b].push.remote(self.index, self.seq, parts[b]) for b in targets]
        replies = dict(zip(targets, ray.get(sent), strict=True))
        # an update's staleness: the most any of its servers counted (None: a retry, applied before)
        stalenesses = [
            max(replies[b][i] for b, i in placed) for placed in owners if all(replies[b] is not None for b, _ in placed)
        ]
        return stalenesses, task.n_samples, t2 - t1, (t1 - t0) + (time.perf_counter() - t2)


@dataclasses.dataclass
class RayEngine:
    n_workers: int = 2
    threads_per_worker: int | None = None
    ray_address: str | None = None  # None: start or reuse a local Ray; else join that cluster
    resources_per_worker: dict | None = None  # Ray resources of a worker actor, e.g. {"num_cpus": 1, "num_gpus": 1}
    task_samples: int | None = None  # samples of a task (None: one batch)
    tasks_in_flight: int = 2  # tasks queued per worker, so that none idles while the coordinator replies
    timeout: float = 300.0  # longest wait for any one task before the run is declared hung

    def __post_init__(self):
        if self.n_workers < 1:
            raise ValueError(f"n_workers={self.n_workers} must be >= 1")
        if self.threads_per_worker is None:
            self.threads_per_worker = max(1, (os.cpu_count() or 1) // self.n_workers)

    # -- actors --------------------------------------------------------------------------
    def _start(self, algo, params: torch.Tensor, servers_state: dict | None):
        ray = ensure_ray(self.ray_address)
        algo_ref = ray.put(algo)  # the read-only data, once, in the object store
        n = algo.n_locks
        self._rows = [algo.server_rows(b) for b in range(n)]
        clocks = (servers_state or {}).get("clocks", [0] * n)
        ledgers = (servers_state or {}).get("ledgers", [{}] * n)
        server_cls = ray.remote(num_cpus=0)(ServerActor)
        self._server_actors = [
            server_cls.options(name=None).remote(
                algo_ref, b, lo, hi, params[lo:hi].cpu().numpy(), clocks[b], ledgers[b]
            )  # fmt: skip
            for b, (lo, hi) in enumerate(self._rows)
        ]
        resources = dict(self.resources_per_worker or {"num_cpus": self.threads_per_worker})
        self._check_resources(ray, resources)
        worker_cls = ray.remote(WorkerActor).options(**resources)
        self._workers = [
            worker_cls.remote(i, algo_ref, self._server_actors, self._rows, self.threads_per_worker)
            for i in range(self.n_workers)
        ]
        self._call(ray, [w.ready.remote() for w in self._workers], algo)

    def _check_resources(self, ray, resources: dict) -> None:
        """Fail now, naming the shortfall, when the cluster cannot place every worker at once (Ray
        would leave the extra actors pending: a hang)."""
        total = ray.cluster_resources()
        names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
        asked = {names.get(k, k): v for k, v in resources.items() if k != "resources"}
        asked.update(resources.get("resources", {}))
        for name, amount in asked.items():
            if amount and self.n_workers * amount > total.get(name, 0):
                raise ValueError(
                    f"n_workers={self.n_workers} workers of {amount:g} {name} each need "
                    f"{self.n_workers * amount:g} {name}, and the Ray cluster has {total.get(name, 0):g}: "
                    "lower n_workers or threads_per_worker, set resources_per_worker, or add nodes"
                )

    def _call(self, ray, refs, algo):
        """ray.get with the run's errors: the algorithm's own (TrainingDiverged) as itself, others
        as WorkerFailed with the actor's traceback; bounded by the timeout."""
        try:
            return ray.get(refs, timeout=self.timeout)
        except ray.exceptions.GetTimeoutError:
            raise WorkerFailed(f"no reply from the Ray actors for {self.timeout:.0f} s") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, tuple(getattr(algo, "passthrough_errors", ()))):
                cause.add_note(f"raised in worker (ray actor):\n{exc}")
                raise cause from None
            raise WorkerFailed(f"a Ray actor raised:\n{exc}") from None
        except ray.exceptions.RayActorError as exc:
            raise WorkerFailed(f"a Ray actor died: {exc}") from None

    def _pull(self, ray, algo, params: torch.Tensor) -> None:
        """The servers' rows into `params` (the coordinator's copy: for the monitor and checkpoints)."""
        pulled = self._call(ray, [s.pull.remote() for s in self._server_actors], algo)
        for (lo, hi), (_, rows) in zip(self._rows, pulled, strict=True):
            _write_rows(params, lo, hi, rows)

    def _servers_state(self, ray, algo) -> dict:
        states = self._call(ray, [s.state.remote() for s in self._server_actors], algo)
        return {"clocks": [s["clock"] for s in states], "ledgers": [s["ledger"] for s in states]}

    def _broadcast_rule_state(self, ray, algo) -> None:
        state = algo.state_dict()
        actors = [*self._server_actors, *self._workers]
        self._call(ray, [a.set_rule_state.remote(state) for a in actors], algo)

    def _shutdown(self, ray) -> None:
        for actor in [*getattr(self, "_workers", []), *getattr(self, "_server_actors", [])]:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - an actor already gone
                pass
        self._workers, self._server_actors = [], []

    # -- the coordinator -----------------------------------------------------------------
    def run(
        self,
        algo: AsyncAlgorithm,
        schedule: Schedule,
        rng: np.random.Generator,
        monitor: Monitor,
        time_limit: float | None = None,
        started: float | None = None,
        progress=None,
        *,
        params: torch.Tensor | None = None,
        resume: dict | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> tuple[torch.Tensor, Telemetry]:
        """As WorkerEngine.run: train from `params`, continuing the coordinator state `resume`."""
        ray = import_ray()
        params = algo.init_params() if params is None else params
        stream = BatchStream(schedule, rng)
        telemetry = Telemetry(n_workers=self.n_workers)
        steps = 0
        if resume is not None:
            stream.load_state_dict(resume["stream"])
            steps = int(resume["steps"])
            telemetry = Telemetry.from_dict(resume["telemetry"], self.n_workers)
        monitor.telemetry = telemetry
        eval_at = schedule.evaluation_points()
        next_eval = int(np.searchsorted(eval_at, stream.issued, side="right"))
        applied = stream.issued
        in_flight: dict = {}  # task reference -> worker
        stopping = draining = False
        batch_size = schedule.batch_size
        try:
            t0 = time.perf_counter()
            telemetry.setup_seconds = t0 - started if started is not None else 0.0
            self._start(algo, params, None if resume is None else resume.get("servers"))
            telemetry.startup_seconds = time.perf_counter() - t0

            def send(worker: int) -> None:
                if stream.issued < eval_at[next_eval]:
                    task = stream.next_task(eval_at[next_eval] - stream.issued, self._task_batches, batch_size)
                    in_flight[self._workers[worker].run_task.remote(task)] = worker

            while next_eval < len(eval_at):
                if not in_flight:
                    if stopping or stream.issued == eval_at[next_eval]:
                        if stream.issued == eval_at[next_eval]:
                            next_eval += 1
                        self._pull(ray, algo, params)
                        if monitor(params, applied, steps) or stopping or next_eval == len(eval_at):
                            break
                        self._broadcast_rule_state(ray, algo)  # the monitor may change the step or the anchor
                    if checkpointer is not None:
                        draining = False
                        signum = checkpointer.stop_requested()
                        if signum is not None or checkpointer.due(applied):
                            self._pull(ray, algo, params)
                            checkpointer.save(params, self._coordinator_state(ray, algo, stream, steps), telemetry)
                            if signum is not None:
                                raise TrainingInterrupted(signum)
                    self._size_tasks(eval_at[next_eval] - stream.issued, batch_size)
                    for _ in range(self.tasks_in_flight):
                        for worker in range(self.n_workers):
                            send(worker)
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.timeout)
                if not ready:
                    raise WorkerFailed(f"no task finished on any Ray worker for {self.timeout:.0f} s")
                worker = in_flight.pop(ready[0])
                stalenesses, n, compute, wait = self._call(ray, ready[0], algo)
                telemetry.record_many(worker, stalenesses, n, compute, wait)
                applied += n
                steps += len(stalenesses)
                if progress is not None:
                    progress.update(n)
                if time_limit is not None and monitor.session_seconds() >= time_limit:
                    stopping = True
                if checkpointer is not None and not draining:  # drain, then save with nothing in flight
                    draining = checkpointer.stop_requested() is not None or checkpointer.due(applied)
                if not stopping and not draining:
                    send(worker)
            if checkpointer is not None:
                self._pull(ray, algo, params)
                checkpointer.save(params, self._coordinator_state(ray, algo, stream, steps), telemetry)
            telemetry.server_updates = self._servers_state(ray, algo)["clocks"]
        finally:
            self._shutdown(ray)
        return params, telemetry

    def _coordinator_state(self, ray, algo, stream: BatchStream, steps: int) -> dict:
        return {"stream": stream.state_dict(), "steps": steps, "servers": self._servers_state(ray, algo)}

    def _size_tasks(self, segment: int, batch_size: int) -> None:
        """Batches per task until the next evaluation point (`segment` samples away): task_samples,
        but small enough that every worker gets TASKS_PER_WORKER tasks of the segment."""
        if self.task_samples is None:
            self._task_batches = 1
            return
        samples = min(self.task_samples, -(-segment // (TASKS_PER_WORKER * self.n_workers)))
        self._task_batches = max(1, -(-samples // batch_size))
