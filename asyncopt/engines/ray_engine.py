"""Ray: parameter servers and workers as Ray Core actors (ray_actors.py), the coordinator here, in
the caller's process.

- A server for each one the algorithm declares (`algo.n_locks`, `algo.server_rows(b)`):
  AsyB-ProxSGD's block servers and its intercept server, AsyncEigenPro's `n_servers` row shards;
  one actor each, or as `algo.server_placement()` groups them (ProxSGD's intercept with block 0).
- Worker actors (`resources_per_worker`) run tasks: pull, compute, push (ray_actors.WorkerActor).
  A task carries `task_samples` samples ("auto": AUTO_TASK_SAMPLES; None: one batch): a task costs
  a call, a pull and a push, milliseconds, so it must carry milliseconds of compute. A call carries several tasks when
  the segment to the next evaluation point is long (`_size_tasks`), each with its own pull and push.
- Staleness is counted by the servers' clocks: the number of updates a server applied between
  the worker's pull and this update.
- The coordinator hands out tasks (`tasks_in_flight` per worker), drains them at evaluation points,
  pulls the parameters for the monitor and checkpoints, and sends the rule's state
  (`algo.state_dict()`: step schedule, SVRG anchor) to every actor after each evaluation point.
- Failures. Every task carries (origin, sequence number); servers apply a push once (their ledger).
  A dead worker actor is replaced, and its tasks in flight are reissued with their numbers, so a
  server that applied part of a task before the death does not apply it again. A dead server
  actor is restarted from the coordinator's copy of the latest drained point (an evaluation point
  or checkpoint: the state a checkpoint file holds), or from its file. The updates it acknowledged
  since are run again: the coordinator keeps the tasks done since the last drained point and
  reissues, with their numbers, those the restored ledger lacks (servers that still hold them
  refuse them by their ledgers), so a failure costs time, not updates. Deaths and the updates run
  again are recorded in `telemetry_["failures"]`; more than `max_failures` deaths stop the run
  with WorkerFailed.

The read-only data reaches the actors once, inside the algorithm put in Ray's object store
(`ray.put`), never per step. Ray is an optional dependency (`pip install asyncopt[ray]`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path

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
    begin_run,
)
from asyncopt.engines.ray_actors import Ledger, ServerActor, ShardSpec, WorkerActor, write_rows, write_server_file
from asyncopt.engines.telemetry import Telemetry
from asyncopt.errors import ActorFailureWarning

# rounds of replacing dead actors at one drained point before the run gives up (each round waits for
# the actors' start: a cluster that cannot start them fails in bounded time)
REPLACEMENT_ROUNDS = 20

TASKS_PER_WORKER = 2  # tasks per worker between two evaluation points, at least (with task_samples)
# task_samples="auto": samples of a task. Against one batch of 32 a task, 4,096 reached 1e-2 2.2-3.2x
# sooner on a9a, news20 and penbased (2 workers), as soon as or sooner than 256 or 1,024, though
# its staleness (50-85 updates) costs epochs (benchmarks/results/ray_task_size.md)
AUTO_TASK_SAMPLES = 4096
CALLS_PER_SLOT = 4  # calls per worker and in-flight slot between two evaluation points, at least
MAX_TASKS_PER_CALL = 16  # (a call's tasks run one after the other; the drain waits for the last call)


def import_ray():
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'asyncopt[ray]' (or pip install 'ray>=2.9')") from exc
    return ray


# objects up to this size travel inside the call's message, not through the object store (Ray's
# default is 100 kB): a pull of 20-40k news20 rows is 160-320 kB, and the store's round trips through
# the raylet cost 7 ms a task more on 2 workers (benchmarks/results/ray_vs_processes.md). Set for
# a local Ray that asyncopt starts; a cluster takes it from `ray start --system-config`.
DIRECT_CALL_BYTES = 8 * 1024 * 1024


def ensure_ray(address: str | None):
    """Join the Ray cluster at `address`, or start (or reuse) a local Ray when it is None."""
    ray = import_ray()
    if not ray.is_initialized():
        extra = {}
        if address is None and "RAY_max_direct_call_object_size" not in os.environ:
            extra["_system_config"] = {"max_direct_call_object_size": DIRECT_CALL_BYTES}
        try:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=True, **extra)
        except ValueError:  # (a local Ray already running, started by someone else: joined as it is)
            if not extra:
                raise
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=True)
    return ray


@dataclasses.dataclass
class _Sent:
    slot: int  # the worker slot (telemetry's worker index)
    tasks: list  # run one after the other by the worker, in one call (WorkerActor.run_tasks)
    origin: int  # the id the servers' ledgers know the pushes by (kept when the tasks are reissued)
    seqs: list[int]  # each task's sequence number
    redo: bool = False  # tasks run again after a restart lost their updates: counted once, when first done
    restarts: int = 0  # the servers' restarts when it was sent: a reply from before one may be lost


class _ServerDied(Exception):
    pass


def _failure_message(record: dict) -> str:
    """What the run did about a dead actor, in words (the record: telemetry_["failures"])."""
    when = f"after {record['samples']:,} samples"
    if record["actor"] == "worker":
        return f"Ray worker actor {record['index']} died {when}; replaced, its tasks in flight sent again"
    rolled = record.get("rolled_back")
    also = f" (and server actors {rolled}, rolled back with it)" if rolled else ""
    lost = f", {record['lost_updates']} lost" if record["lost_updates"] else ""
    return (
        f"Ray server actor {record['index']} (servers {record['servers']}) died {when}; restarted from the "
        f"{record['restored_from']}{also}, {record['redone_updates']} acknowledged updates run again{lost}"
    )


@dataclasses.dataclass
class RayEngine:
    n_workers: int = 2
    threads_per_worker: int | None = None
    ray_address: str | None = None  # None: start or reuse a local Ray; else join that cluster
    resources_per_worker: dict | None = None  # Ray resources of a worker actor, e.g. {"num_cpus": 1, "num_gpus": 1}
    task_samples: int | str | None = None  # samples of a task (None: one batch; "auto": AUTO_TASK_SAMPLES)
    tasks_in_flight: int = 2  # tasks queued per worker, so that none idles while the coordinator replies
    timeout: float = 300.0  # longest wait for any one task before the run is declared hung
    max_failures: int = 10  # actor deaths the run survives; one more stops it
    server_folder: str | None = None  # where servers save their state (every node must reach it; None: none)
    server_save_seconds: float | None = 10.0  # a server saves after a push this long after its last save

    def __post_init__(self):
        if self.n_workers < 1:
            raise ValueError(f"n_workers={self.n_workers} must be >= 1")
        if self.threads_per_worker is None:
            self.threads_per_worker = max(1, (os.cpu_count() or 1) // self.n_workers)

    # -- actors --------------------------------------------------------------------------
    def _start(self, ray, algo, params: torch.Tensor, servers_state: dict | None) -> None:
        self._run = uuid.uuid4().hex[:8]  # names the actors (`ray list actors`, the chaos test)
        # the read-only data, once, in the object store (as numpy arrays where the algorithm can: the
        # actors of a node then read one copy in place)
        self._algo_ref = ray.put(algo.for_object_store() if hasattr(algo, "for_object_store") else algo)
        # servers get only what their rule needs when the algorithm can say so: one copy for all
        # (`for_servers`: EigenPro's additive rule, no data), or each its own (`for_server(b)`:
        # ProxSGD's rule with the block's columns of X, from which it forms the pairs of the
        # samples' coefficients a worker pushes)
        n = algo.n_locks
        if hasattr(algo, "for_server"):
            self._server_refs = [ray.put(algo.for_server(b)) for b in range(n)]
        else:
            shared = ray.put(algo.for_servers()) if hasattr(algo, "for_servers") else self._algo_ref
            self._server_refs = [shared] * n
        self._rows = [algo.server_rows(b) for b in range(n)]
        # the servers each actor hosts: ProxSGD's intercept server with block 0 (it is in every push)
        placement = algo.server_placement() if hasattr(algo, "server_placement") else [[b] for b in range(n)]
        self._placement = [list(servers) for servers in placement]
        if sorted(b for servers in self._placement for b in servers) != list(range(n)):
            raise ValueError(f"server_placement {placement} must hold each of the {n} servers once")
        state = servers_state or {}
        self._generation = [0] * len(self._placement)
        clocks, ledgers = state.get("clocks") or [0] * n, state.get("ledgers") or [None] * n
        self._files = None
        if self.server_folder is not None:  # each server saves its rows, clock and ledger there
            folder = Path(self.server_folder) / f"run-{self._run}"
            self._files = [str(folder / f"server-{b}.safetensors") for b in range(n)]
            for b, (lo, hi) in enumerate(self._rows):  # (a server that dies starting restarts from these)
                write_server_file(self._files[b], b, lo, hi, params[lo:hi], clocks[b], ledgers[b])
        self._hosts = [self._new_host(ray, h, params, clocks, ledgers) for h in range(len(self._placement))]
        # what a server that dies restarts from without files, until the first drained point
        self._snapshot = {"params": params.detach().clone(), "servers": {"clocks": clocks, "ledgers": ledgers}}
        self._acked = [[] for _ in range(n)]  # per server: (origin, seq, updates) acknowledged since a drained point
        self._done: dict = {}  # (origin, seq) -> (slot, task): the tasks done since a drained point
        self._redo: dict = {}  # the same, for those whose updates a restart lost: to run again
        resources = dict(self.resources_per_worker or {"num_cpus": self.threads_per_worker})
        self._check_resources(ray, resources)
        self._worker_cls, self._worker_resources = ray.remote(WorkerActor), resources
        # each slot's current actor's id: past every origin of a resumed run's ledgers (its workers'
        # sequence numbers start again at 1; under an old id the ledgers would refuse them as applied)
        first = 1 + max((int(o) for ledger in ledgers if ledger for part in ("upto", "above")
                         for o in ledger.get(part, {})), default=-1)  # fmt: skip
        self._origin = list(range(first, first + self.n_workers))
        self._next_origin = first + self.n_workers
        self._seq = {}
        self._worker_rule = {}  # slot -> the rule's state its next call carries (_broadcast_rule_state)
        self._workers = [self._new_worker(slot) for slot in range(self.n_workers)]

    def _new_host(
        self,
        ray,
        h: int,
        params: torch.Tensor | None,
        clocks: list | None = None,
        ledgers: list | None = None,
        restarted: bool = False,
        aligned: bool = False,
    ):
        """Host h's actor: each of its servers b from `params` (rows lo..hi), `clocks[b]` and
        `ledgers[b]`, or from its file (`params` None); `restarted`: after a failure; `aligned`: with
        every other host from the same drained point (ServerShard)."""
        specs = []
        for b in self._placement[h]:
            lo, hi = self._rows[b]
            rows = None if params is None else params[lo:hi].cpu().numpy()
            file = None if self._files is None else self._files[b]
            clock, ledger = (0, None) if params is None else (clocks[b], ledgers[b])
            specs.append(ShardSpec(b, lo, hi, rows, clock, ledger, file, self.server_save_seconds, restarted, aligned))
        name = f"asyncopt-{self._run}-server-{h}-{self._generation[h]}"
        cls = ray.remote(num_cpus=0)(ServerActor).options(name=name)
        return cls.remote(specs, *(self._server_refs[b] for b in self._placement[h]))

    def _new_worker(self, slot: int):
        name = f"asyncopt-{self._run}-worker-{slot}-{self._origin[slot]}"
        return self._worker_cls.options(name=name, **self._worker_resources).remote(
            self._algo_ref, self._hosts, self._placement, self._rows, self.threads_per_worker
        )

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
            if isinstance(cause, ray.exceptions.RayActorError):
                raise _ServerDied() from None  # a worker's pull or push found a dead server
            if isinstance(cause, tuple(getattr(algo, "passthrough_errors", ()))):
                cause.add_note(f"raised in worker (ray actor):\n{exc}")
                raise cause from None
            raise WorkerFailed(f"a Ray actor raised:\n{exc}") from None

    # -- failures ------------------------------------------------------------------------
    def _failed(self, telemetry: Telemetry, record: dict) -> None:
        telemetry.failures.append(record)
        if len(telemetry.failures) > self.max_failures:
            raise WorkerFailed(
                f"{len(telemetry.failures)} Ray actor failures (max_failures={self.max_failures}); the last: {record}"
            )
        warnings.warn(_failure_message(record), ActorFailureWarning, stacklevel=2)

    def _replace_worker(self, ray, algo, slot: int, in_flight: dict, telemetry, applied: int) -> None:
        """A new actor for `slot`, and the slot's tasks in flight reissued to it with their numbers."""
        self._failed(telemetry, {"actor": "worker", "index": slot, "samples": applied})
        mine = sorted((s for s in in_flight.values() if s.slot == slot), key=lambda s: (s.origin, s.seqs[0]))
        for ref in [r for r, s in in_flight.items() if s.slot == slot]:
            del in_flight[ref]
        ray.kill(self._workers[slot])
        self._origin[slot] = self._next_origin
        self._next_origin += 1
        self._workers[slot] = self._new_worker(slot)
        self._call(ray, self._workers[slot].set_rule_state.remote(algo.state_dict()), algo)
        for sent in mine:
            self._submit(sent, in_flight)

    def _restart_dead_servers(self, ray, algo, telemetry, applied: int) -> None:
        """Hosts that do not answer are restarted, each of their servers from its file or the snapshot;
        the tasks whose updates a restored server lacks go on the list to run again (`_redo`: the
        caller runs them; without that, a server killed late in an epoch lost the whole epoch:
        MNIST 10k at 28 of 29 updates, train MSE 0.87 after it against 0.064). Algorithms whose
        updates must land whole (`snapshot_reads`: an EigenPro update's batch rows and Nystrom rows
        sit on different servers) restart every host from the last drained point instead: a
        restored server without parts its peers kept holds half updates for good (MNIST 10k, a
        server killed after 20 of 116 updates: 20 halves, train MSE 2,600 after the epoch and 38
        after 4, against 0.0011)."""
        dead = []
        for h, host in enumerate(self._hosts):
            try:
                ray.get(host.ping.remote(), timeout=self.timeout)
            except ray.exceptions.RayActorError:
                dead.append(h)
        whole = bool(dead) and getattr(algo, "snapshot_reads", False) and len(self._hosts) > 1
        for h in range(len(self._hosts)) if whole else dead:
            if h not in dead:  # (alive: rolled back with the others, its calls in flight fail and are reissued)
                ray.kill(self._hosts[h], no_restart=True)
            self._generation[h] += 1
            if self._files is not None and not whole:  # from the files its servers saved last
                self._hosts[h] = self._new_host(ray, h, None, restarted=True)
            else:  # from the coordinator's copy of the last drained point
                state = self._snapshot["servers"]
                params, clocks, ledgers = self._snapshot["params"], state["clocks"], state["ledgers"]
                self._hosts[h] = self._new_host(ray, h, params, clocks, ledgers, restarted=True, aligned=whole)
            self._call(ray, self._hosts[h].set_rule_state.remote(algo.state_dict()), algo)
            # lost: the updates a server acknowledged that its restored ledger does not hold (those of
            # tasks in flight were not acknowledged: they are sent again, and applied then)
            states = self._call(ray, self._hosts[h].state.remote(), algo)
            lost = redone = 0
            for b in self._placement[h]:
                restored = Ledger(states[b]["ledger"])
                for o, q, c in self._acked[b]:
                    if restored.seen(o, q):
                        continue
                    if (o, q) in self._done:  # run again: the servers that hold it refuse it (their ledgers)
                        self._redo[(o, q)] = self._done[(o, q)]
                        redone += c
                    else:  # (every acknowledged task is kept until the next drained point: not expected)
                        self._lost[b] += c
                        lost += c
                self._acked[b] = [e for e in self._acked[b] if restored.seen(e[0], e[1])]
            source = "file" if self._files is not None and not whole else "drained point"
            record = {
                "actor": "server", "index": h, "servers": list(self._placement[h]), "samples": applied,
                "lost_updates": lost, "redone_updates": redone, "restored_from": source,
            }  # fmt: skip
            if whole:  # (the hosts restored with it: not failures; their updates since run again too)
                record["rolled_back"] = [other for other in range(len(self._hosts)) if other not in dead]
            if h in dead:
                self._failed(telemetry, record)
            for worker in self._workers:  # (a dead worker is replaced later, with the new hosts)
                try:
                    self._call(ray, worker.set_host.remote(h, self._hosts[h]), algo)
                except ray.exceptions.RayActorError:
                    pass

    def _replace_dead_workers(self, ray, algo, telemetry, applied: int) -> None:
        """At a drained point (nothing in flight): workers that do not answer are replaced."""
        for slot, worker in enumerate(self._workers):
            try:
                ray.get(worker.ready.remote(), timeout=self.timeout)
            except ray.exceptions.RayActorError:
                self._replace_worker(ray, algo, slot, {}, telemetry, applied)

    def _drained(self, ray, algo, telemetry, applied: int, action):
        """`action()` at a drained point, again after replacing the actors that died meanwhile and
        running again the tasks whose updates their restarts lost."""
        for _ in range(REPLACEMENT_ROUNDS):
            try:
                self._run_redo(ray, algo, telemetry)
                return action()
            except (ray.exceptions.RayActorError, _ServerDied):
                pass
            try:
                self._restart_dead_servers(ray, algo, telemetry, applied)
                self._replace_dead_workers(ray, algo, telemetry, applied)
            except (ray.exceptions.RayActorError, _ServerDied):
                # a replacement died in its own start (the chaos test once killed one that had waited
                # 3 s for its CPU under CI's load): the next round replaces it
                continue
        raise WorkerFailed(
            f"Ray actors kept dying at a drained point: {REPLACEMENT_ROUNDS} rounds of replacements did not "
            "bring every worker and server up (see telemetry_['failures'] and the Ray logs)"
        )

    def _redo_calls(self) -> list[_Sent]:
        """The tasks to run again, a call per slot and origin, in their order; taken off the list."""
        groups: dict = {}
        for (origin, seq), (slot, task) in sorted(self._redo.items()):
            groups.setdefault((slot, origin), []).append((seq, task))
        self._redo = {}
        return [
            _Sent(slot, [task for _, task in group], origin, [seq for seq, _ in group], redo=True)
            for (slot, origin), group in groups.items()
        ]

    def _run_redo(self, ray, algo, telemetry) -> None:
        """At a drained point: the tasks to run again, run and awaited (kept on the list if that fails)."""
        if not self._redo:
            return
        keep = dict(self._redo)
        calls = self._redo_calls()
        in_flight: dict = {}
        for sent in calls:
            self._submit(sent, in_flight)
        try:
            replies = self._call(ray, list(in_flight), algo)
        except BaseException:
            self._redo = {**keep, **self._redo}
            raise
        for sent, reply in zip(in_flight.values(), replies, strict=True):
            self._settle(sent, reply, telemetry)

    def _settle(self, sent: _Sent, reply: dict, telemetry) -> None:
        """A call's reply: its acknowledgements, its tasks kept as done, its work in the telemetry."""
        for seq, parts in reply["acks"]:
            for b, count in parts.items():
                self._acked[b].append((sent.origin, seq, count))
        for seq, task in zip(sent.seqs, sent.tasks, strict=True):
            self._done[(sent.origin, seq)] = (sent.slot, task)
        r = reply
        telemetry.record_many(
            sent.slot, r["stalenesses"], r["samples"], r["compute"], r["idle"], r["messages"],
            r["sent"], r["bytes"], r["pull_bytes"],
        )  # fmt: skip
        telemetry.record_reads(r.get("reads_repaired", 0), 0, 0, r.get("reads_torn", 0))

    def _take_snapshot(self, ray, algo, params: torch.Tensor) -> None:
        """At a drained point: the servers' rows into `params` (for the monitor and checkpoints), and
        their clocks and ledgers, in one call per host (each server saves its file first, with files)."""
        save = self._files is not None
        replies = self._call(ray, [host.snapshot.remote(save) for host in self._hosts], algo)
        by_server = {b: reply for states in replies for b, reply in states.items()}
        for b, (lo, hi) in enumerate(self._rows):
            write_rows(params, lo, hi, by_server[b][0])
        states = {b: state for b, (_, state) in by_server.items()}
        self._snapshot = {"params": params.detach().clone(), "servers": self._states(states)}
        self._acked = [[] for _ in self._rows]  # (all held by the snapshot, and by the files)
        self._done = {}

    # -- messages ------------------------------------------------------------------------
    def _submit(self, sent: _Sent, in_flight: dict) -> None:
        # (the rule's state since the last evaluation point rides on the slot's first call after it)
        rule = self._worker_rule.pop(sent.slot, None)
        extra = () if rule is None else (rule[0], rule[1])  # (a list of refs: Ray does not wait for them)
        sent.restarts = sum(self._generation)
        in_flight[self._workers[sent.slot].run_tasks.remote(sent.tasks, sent.origin, sent.seqs, *extra)] = sent

    def _send_next(self, slot: int, stream: BatchStream, until: int, batch_size: int, in_flight: dict) -> None:
        """The stream's next tasks (`_call_tasks` of them, not crossing the evaluation point `until`)
        to `slot`, in one call, if any is left."""
        tasks = []
        while stream.issued < until and len(tasks) < self._call_tasks:
            tasks.append(stream.next_task(until - stream.issued, self._task_batches, batch_size))
        if tasks:
            origin = self._origin[slot]
            first = self._seq.get(origin, 0) + 1
            self._seq[origin] = first + len(tasks) - 1
            self._submit(_Sent(slot, tasks, origin, list(range(first, first + len(tasks)))), in_flight)

    def _pull(self, ray, algo, params: torch.Tensor) -> None:
        """The servers' rows into `params` (the coordinator's copy: for the monitor and checkpoints)."""
        asks = [[(b, None, None, False) for b in servers] for servers in self._placement]
        pulled = self._call(ray, [host.pull.remote(ask) for host, ask in zip(self._hosts, asks, strict=True)], algo)
        for servers, replies in zip(self._placement, pulled, strict=True):
            for b, (_, rows, _) in zip(servers, replies, strict=True):
                write_rows(params, *self._rows[b], rows)

    def _servers_state(self, ray, algo) -> dict:
        by_server = {}
        for states in self._call(ray, [host.state.remote() for host in self._hosts], algo):
            by_server.update(states)
        return self._states(by_server)

    def _states(self, by_server: dict) -> dict:
        """The servers' states (ServerShard.state, by server) as the coordinator keeps them."""
        states = [by_server[b] for b in range(len(self._rows))]
        return {
            "clocks": [s["clock"] for s in states],
            "ledgers": [s["ledger"] for s in states],
            "refused": [s["refused"] for s in states],
            "busy": [s["busy"] for s in states],
            "lost": list(self._lost),
        }

    def _broadcast_rule_state(self, ray, algo) -> None:
        """The rule's state to every actor: put in the object store once per role (not serialized once
        per actor), each role's share of it where the algorithm says (`actor_state_dict`). Not waited
        for here: a worker's share rides on its next call (`_submit`: an actor runs one caller's calls
        in order), with the hosts' calls, which the worker awaits before its first push (a push must
        not reach a server before the rule it is applied with), so the hosts load it while the
        workers pull and compute. A host that died meanwhile fails that wait: the run restarts it
        (with the rule's state) and sends the call again."""
        if hasattr(algo, "actor_state_dict"):
            servers, workers = (ray.put(algo.actor_state_dict(role)) for role in ("server", "worker"))
        else:
            servers = workers = ray.put(algo.state_dict())
        loaded = [a.set_rule_state.remote(servers) for a in self._hosts]
        self._worker_rule = dict.fromkeys(range(self.n_workers), (workers, loaded))

    def _shutdown(self, ray) -> None:
        for actor in [*getattr(self, "_workers", []), *getattr(self, "_hosts", [])]:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - an actor already gone
                pass
        self._workers, self._hosts = [], []
        if getattr(self, "_files", None):  # the servers' files serve restarts within this run only
            run_folder = Path(self._files[0]).parent
            shutil.rmtree(run_folder, ignore_errors=True)
            try:
                run_folder.parent.rmdir()  # (only when no other run's files are left)
            except OSError:
                pass

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
        params, stream, steps, telemetry = begin_run(algo, schedule, rng, monitor, self.n_workers, params, resume)
        eval_at = schedule.evaluation_points()
        next_eval = int(np.searchsorted(eval_at, stream.issued, side="right"))
        applied = stream.issued
        in_flight: dict = {}  # task reference -> _Sent
        stopping = draining = False
        batch_size = schedule.batch_size
        ray = ensure_ray(self.ray_address)
        servers_state = None if resume is None else resume.get("servers")
        self._lost = list((servers_state or {}).get("lost", [0] * algo.n_locks))
        try:
            t0 = time.perf_counter()
            telemetry.setup_seconds = t0 - started if started is not None else 0.0
            self._start(ray, algo, params, servers_state)
            ready = lambda: self._call(ray, [w.ready.remote() for w in self._workers], algo)  # noqa: E731
            self._drained(ray, algo, telemetry, applied, ready)  # (an actor that dies starting is replaced)
            self._take_snapshot(ray, algo, params)
            telemetry.startup_seconds = time.perf_counter() - t0
            while next_eval < len(eval_at):
                if not in_flight:
                    at_eval = stream.issued == eval_at[next_eval]

                    if stopping or at_eval or (checkpointer is not None and draining):
                        self._drained(ray, algo, telemetry, applied, lambda: self._take_snapshot(ray, algo, params))
                    if stopping or at_eval:
                        if at_eval:
                            next_eval += 1
                        if monitor(params, applied, steps) or stopping or next_eval == len(eval_at):
                            break
                        # the monitor may have changed the step or the anchor
                        self._drained(ray, algo, telemetry, applied, lambda: self._broadcast_rule_state(ray, algo))
                    if checkpointer is not None:
                        draining = False
                        signum = checkpointer.stop_requested()
                        if signum is not None or checkpointer.due(applied):
                            coordinator = self._drained(
                                ray,
                                algo,
                                telemetry,
                                applied,
                                lambda s=steps: self._coordinator_state(ray, algo, stream, s),
                            )
                            checkpointer.save(params, coordinator, telemetry)
                            if signum is not None:
                                raise TrainingInterrupted(signum)
                    self._size_tasks(eval_at[next_eval] - stream.issued, batch_size)
                    for _ in range(self.tasks_in_flight):
                        for slot in range(self.n_workers):
                            self._send_next(slot, stream, eval_at[next_eval], batch_size, in_flight)
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.timeout)
                if not ready:
                    raise WorkerFailed(f"no task finished on any Ray worker for {self.timeout:.0f} s")
                sent = in_flight.pop(ready[0])
                try:
                    reply = self._call(ray, ready[0], algo)
                except ray.exceptions.RayActorError:  # the worker actor died: replace it, reissue its tasks
                    in_flight[ready[0]] = sent
                    self._replace_worker(ray, algo, sent.slot, in_flight, telemetry, applied)
                    continue
                except _ServerDied:  # a server died under this task: restart it, run again what it lost
                    self._restart_dead_servers(ray, algo, telemetry, applied)
                    for redo in self._redo_calls():
                        self._submit(redo, in_flight)
                    self._submit(sent, in_flight)
                    continue
                self._settle(sent, reply, telemetry)
                if sent.restarts != sum(self._generation):
                    # done before a restart that this reply had not yet told of: its pushes may have
                    # reached only the servers' lost states, so run it again (the ledgers refuse
                    # what was kept)
                    for seq, task in zip(sent.seqs, sent.tasks, strict=True):
                        self._redo[(sent.origin, seq)] = (sent.slot, task)
                    for redo in self._redo_calls():
                        self._submit(redo, in_flight)
                if sent.redo:  # (its samples and updates were counted when it was first done)
                    continue
                applied += reply["samples"]
                steps += reply["updates"]
                if progress is not None:
                    progress.update(reply["samples"])
                if time_limit is not None and monitor.session_seconds() >= time_limit:
                    stopping = True
                if checkpointer is not None and not draining:  # drain, then save with nothing in flight
                    draining = checkpointer.stop_requested() is not None or checkpointer.due(applied)
                if not stopping and not draining:
                    self._send_next(sent.slot, stream, eval_at[next_eval], batch_size, in_flight)
            if checkpointer is not None:
                self._drained(ray, algo, telemetry, applied, lambda: self._pull(ray, algo, params))
                coordinator = self._drained(
                    ray, algo, telemetry, applied, lambda: self._coordinator_state(ray, algo, stream, steps)
                )
                checkpointer.save(params, coordinator, telemetry)
            final = self._drained(ray, algo, telemetry, applied, lambda: self._servers_state(ray, algo))
            telemetry.server_updates = final["clocks"]
            telemetry.server_busy_seconds = final["busy"]
            telemetry.lost_updates = final["lost"]
            telemetry.refused_pushes = final["refused"]
            telemetry.server_actors = [list(servers) for servers in self._placement]
        finally:
            self._shutdown(ray)
        return params, telemetry

    def _coordinator_state(self, ray, algo, stream: BatchStream, steps: int) -> dict:
        return {"stream": stream.state_dict(), "steps": steps, "servers": self._servers_state(ray, algo)}

    def _size_tasks(self, segment: int, batch_size: int) -> None:
        """Batches per task until the next evaluation point (`segment` samples away): task_samples,
        but small enough that every worker gets TASKS_PER_WORKER tasks of the segment; and tasks per
        call: as many as leave every worker CALLS_PER_SLOT calls per in-flight slot (up to
        MAX_TASKS_PER_CALL), so that the coordinator is not on every batch's path."""
        if self.task_samples is None:
            self._task_batches = 1
        else:
            wanted = AUTO_TASK_SAMPLES if self.task_samples == "auto" else self.task_samples
            samples = min(wanted, -(-segment // (TASKS_PER_WORKER * self.n_workers)))
            self._task_batches = max(1, -(-samples // batch_size))
        tasks = segment // (self._task_batches * batch_size)
        calls = CALLS_PER_SLOT * self.n_workers * self.tasks_in_flight
        self._call_tasks = int(min(MAX_TASKS_PER_CALL, max(1, tasks // calls)))
