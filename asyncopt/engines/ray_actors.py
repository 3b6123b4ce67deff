"""The Ray actors of `backend="ray"`: parameter servers and workers (the coordinator: ray_engine.py).

- `ServerShard` owns rows [lo, hi) of the parameter store (`algo.server_rows(b)`). It applies the
  algorithm's rule (`algo.apply`) to the parts pushed to it, one push at a time, and counts them
  (its clock). Its `Ledger` records which pushes it applied, so a push sent again (a task reissued
  after a failure, or retried by Ray) is answered, not applied a second time.
- `ServerActor` hosts one or more shards (`algo.server_placement()`: AsyB-ProxSGD's intercept server
  with block 0, whose pushes it shares) in one process, one call at a time: its pushes are
  serialized as a server's inbox would serialize them. A worker sends a host one pull and one push a
  task, carrying the requests of all its shards.
- `WorkerActor` runs a task: pull every server's rows (one message per host, in parallel), compute
  each batch's update from what it pulled (`algo.compute`), split it by server
  (`algo.server_parts`), push one message per host with its servers' parts and the clock each was
  read at. A task of several batches reads its own updates: the worker applies each to its copy
  with the servers' rule (`algo.apply`), so the j-th batch reads the pull plus the task's first
  j - 1 updates, and its staleness is only the other workers' updates the server applied since the
  pull.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import NamedTuple

import numpy as np
import torch

RECENT_REPLIES = 8  # a server keeps its replies to each origin's last pushes, to answer their retries


WHOLE_READ_ROUNDS = 50  # re-pulls of the lagging servers before a read is taken as torn (~1 ms each)


class Front(NamedTuple):
    """What a server reports of the pushes it applied (`ServerShard.pull(pushes=True)`), for
    `lagging_servers`: per origin, the last push applied here and that push's servers."""

    pushes: dict[int, tuple[int, tuple]]
    # an origin missing from `pushes` had no push applied here, except the origins in `unknown`
    # (those of the ledger the server started from: a resumed run's earlier workers), or every
    # origin when `restarted` (a server restored after a failure may have lost any origin's pushes)
    unknown: frozenset = frozenset()
    restarted: bool = False

    def behind(self, origin: int, seq: int) -> bool:
        """Whether push `seq` of `origin` (or a later one) is known not to have been applied here."""
        if origin in self.pushes:
            return self.pushes[origin][0] < seq
        return not self.restarted and origin not in self.unknown


def lagging_servers(fronts: list[Front]) -> list[int]:
    """Servers behind a push another server applied: `fronts[a]` is server a's report. A worker has
    one task's pushes in flight at most (it awaits them, with its next pulls, before it pushes
    again), so per origin only the last push can be incomplete. A server that applied nothing from
    an origin is behind its first push (before, such a server was not compared: a run's first
    pushes, applied by one server and not yet by the other, were read torn, and MNIST's train MSE
    after the first epoch was 0.30 instead of 0.066)."""
    behind = set()
    for a, front in enumerate(fronts):
        for origin, (seq, targets) in front.pushes.items():
            for b in targets:
                if b != a and fronts[b].behind(origin, seq):
                    behind.add(b)
    return sorted(behind)


def write_rows(params: torch.Tensor, lo: int, hi: int, rows: np.ndarray) -> None:
    """params[lo:hi] = rows (a pulled array, read-only when Ray maps it from the object store)."""
    if params.device.type == "cpu":
        params[lo:hi].numpy()[...] = rows
    else:
        params[lo:hi] = torch.from_numpy(np.array(rows)).to(params.device)


def _payload_bytes(parts: list) -> int:
    """Bytes of the arrays and tensors in a push's parts (what dominates its size)."""
    total = 0
    for part, _ in parts:
        for value in getattr(part, "__dict__", {}).values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


SERVER_FILE_KIND = "ray-server"  # asyncopt.persistence file kind of a server actor's saved state


def write_server_file(path: str, index: int, lo: int, hi: int, rows, clock: int, ledger: dict | None) -> None:
    """Server `index`'s rows lo..hi, clock and ledger (Ledger.state_dict), atomically (safetensors)."""
    from asyncopt.persistence import write_file

    payload = {"index": index, "lo": lo, "hi": hi, "clock": int(clock), "ledger": ledger or {}}
    write_file(path, SERVER_FILE_KIND, payload, {"rows": rows})


def read_server_file(path: str, index: int, lo: int, hi: int) -> tuple[np.ndarray, int, dict]:
    """(rows, clock, ledger) saved by ServerActor.save, checked to be server `index`'s rows lo..hi."""
    from asyncopt.persistence import FileFormatError, read_file

    payload, arrays = read_file(path, SERVER_FILE_KIND)
    if (payload.get("index"), payload.get("lo"), payload.get("hi")) != (index, lo, hi):
        raise FileFormatError(f"{path}: the file of server {payload.get('index')}, not of server {index} ({lo}..{hi})")
    return arrays["rows"].numpy(), int(payload["clock"]), payload["ledger"]


class Ledger:
    """The pushes a server applied, by origin (a worker actor's id; a reissued task keeps its
    origin's id) and sequence number: every number up to `upto[o]`, and the ones in `above[o]`.
    Plain ints, so it is saved with the servers' state and restored with them."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.upto = {int(o): int(s) for o, s in state.get("upto", {}).items()}
        self.above = {int(o): set(map(int, s)) for o, s in state.get("above", {}).items()}
        self.replies: dict[int, dict[int, list[int]]] = {}  # recent stalenesses, to answer a retry

    def seen(self, origin: int, seq: int) -> bool:
        return seq <= self.upto.get(origin, 0) or seq in self.above.get(origin, ())

    def record(self, origin: int, seq: int, stalenesses: list[int]) -> None:
        above = self.above.setdefault(origin, set())
        above.add(seq)
        upto = self.upto.get(origin, 0)
        while upto + 1 in above:
            upto += 1
            above.discard(upto)
        self.upto[origin] = upto
        recent = self.replies.setdefault(origin, {})
        recent[seq] = stalenesses
        if len(recent) > RECENT_REPLIES:
            del recent[min(recent)]

    def reply(self, origin: int, seq: int) -> list[int] | None:
        return self.replies.get(origin, {}).get(seq)

    def state_dict(self) -> dict:
        return {
            "upto": {str(o): s for o, s in self.upto.items()},
            "above": {str(o): sorted(s) for o, s in self.above.items() if s},
        }


class ServerShard:
    """Rows [lo, hi) of the parameter store, the rule that updates them, their clock and ledger."""

    def __init__(
        self,
        algo,
        index: int,
        lo: int,
        hi: int,
        rows: np.ndarray | None,
        clock: int,
        ledger: dict | None,
        file: str | None = None,
        save_every: float | None = None,
        params: torch.Tensor | None = None,
        restarted: bool = False,
        aligned: bool = False,
    ):
        """The rows, clock and ledger given, or (`rows` None) those of its file, `file`: where it saves
        them (a folder every node reaches; the coordinator writes the first), at the coordinator's
        request (`save`), and after a push once `save_every` seconds have passed since the last save.
        `params`: the store to keep the rows in (the host's, shared by its shards: disjoint rows).
        `restarted`: restored after a failure (its reports vouch only for origins seen since), unless
        `aligned`: restored with every other server from one drained point (a whole rollback), so
        that, as at a run's start, a push it has not applied since is one it lacks."""
        if getattr(algo, "bundles", False):  # load compiled kernels now, not in the first push (~0.2 s)
            algo.warm_bundles("server")
        elif hasattr(algo, "prepare"):
            algo.prepare()
        self.algo, self.index, self.lo, self.hi = algo, index, lo, hi
        self.file, self.save_every = file, save_every
        if rows is None:  # restarted from its file
            rows, clock, ledger = read_server_file(file, index, lo, hi)
        # (rows outside lo..hi are other shards' or stay untouched zero pages)
        self.params = algo.init_params() if params is None else params
        write_rows(self.params, lo, hi, rows)
        self.clock = int(clock)
        self.ledger = Ledger(ledger)
        self.refused = 0  # pushes answered from the ledger, not applied again
        self.saved_at = time.perf_counter()
        self.busy = 0.0  # seconds in pulls and pushes (the server's load)
        # an additive rule (algo.additive: each part is added in) lets a worker keep a replica and
        # pull only the parts applied since its last pull: the recent ones, as (clock before, part),
        # no more bytes of them than of the rows (a whole pull is smaller then)
        self.additive = bool(getattr(algo, "additive", False))
        self.log: collections.deque = collections.deque()
        self.log_bytes = 0
        self.rows_bytes = self.params[lo:hi].numel() * self.params.element_size()
        # per origin, the last push applied here and the servers it went to: what a worker compares
        # across servers to see a push some of them applied and others not yet (`lagging_servers`)
        self.last_push: dict[int, tuple[int, tuple]] = {}
        # (aligned: the workers' origins go on pushing, redone tasks first, and a read must see a push
        # that one server applied since the rollback and another not yet; without this, 1 run in 9 of
        # the EigenPro chaos test read them torn unseen: first epoch at train MSE 0.30 against 0.066)
        self.restarted = bool(restarted) and not aligned
        self.unknown = (
            frozenset()
            if aligned
            else frozenset(self.ledger.upto) | frozenset(o for o, seqs in self.ledger.above.items() if seqs)
        )

    def save(self) -> int:
        """Write rows, clock and ledger to the server's file (atomically); the clock saved."""
        rows = self.params[self.lo : self.hi]
        write_server_file(self.file, self.index, self.lo, self.hi, rows, self.clock, self.ledger.state_dict())
        self.saved_at = time.perf_counter()
        return self.clock

    def pull(self, rows: np.ndarray | None = None, since: int | None = None, pushes: bool = False) -> tuple:
        """(clock, rows, None): the server's rows (all, or those of `rows`, global row numbers); or
        (clock, None, parts): with `since` (the clock of the caller's replica of all the rows), the
        parts applied since, in order, when this server keeps them (an additive rule, and not more
        bytes than the rows). `pushes`: a fourth element, the server's `Front`."""
        t0 = time.perf_counter()
        extra = (Front(dict(self.last_push), self.unknown, self.restarted),) if pushes else ()
        if rows is None and since is not None and self.additive and since <= self.clock:
            if since == self.clock or (self.log and self.log[0][0] <= since):
                parts = [part for before, part in self.log if before >= since]
                self.busy += time.perf_counter() - t0
                return (self.clock, None, parts, *extra)
        if rows is None:
            reply = (self.clock, self.params[self.lo : self.hi].numpy().copy(), None, *extra)
        else:
            reply = (self.clock, self.params.numpy()[rows], None, *extra)
        self.busy += time.perf_counter() - t0
        return reply

    def push(
        self, origin: int, seq: int, parts: list, bundled: bool = False, stepped_at: int = 0, targets=None
    ) -> tuple[list[int] | None, bool]:
        """Apply `parts` ((part, clock the worker read)) in order: (their stalenesses, False); for a
        push applied before, (the stalenesses it got then, or None if forgotten, True). `bundled`:
        one part, a bundle of the task's updates (`algo.apply_bundle`). `stepped_at`: the staleness
        whose step the worker's copy took for the task's updates (0 for a task of one batch)."""
        if self.ledger.seen(origin, seq):
            self.refused += 1
            return self.ledger.reply(origin, seq), True
        t0 = time.perf_counter()
        # every part of a push has the same staleness: the updates applied here since the pull that
        # are not the task's own (its earlier parts are applied just before each part, and the
        # worker's copy read them: it applies a task's updates as it goes, WorkerActor.run_task)
        staleness = self.clock - parts[0][1] if parts else 0
        if hasattr(self.algo, "server_delay"):  # (this server's count, as the updates applied anywhere)
            staleness = self.algo.server_delay(self.index, staleness)
        # the step: no larger than the one the worker's copy took for the task's earlier updates (its
        # later batches read them moved that far; a larger step here would apply them from a read
        # that did not see them: as stale as the task is long)
        stepped = max(staleness, stepped_at)
        if bundled:
            ((bundle, _),) = parts
            self.algo.apply_bundle(self.params, self.index, bundle, stepped)
            count = len(bundle)
        else:
            for i, (part, _) in enumerate(parts):
                if self.additive:
                    self._log(self.clock + i, part)
                self.algo.apply(self.params, part, stepped)
            count = len(parts)
        self.clock += count
        if targets is not None:
            self.last_push[origin] = (seq, tuple(targets))
        stalenesses = [staleness] * count
        self.ledger.record(origin, seq, stalenesses)
        if self.file is not None and self.save_every is not None:
            if time.perf_counter() - self.saved_at >= self.save_every:
                self.save()
        self.busy += time.perf_counter() - t0
        return stalenesses, False

    def _log(self, clock: int, part) -> None:
        """Keep `part` (applied at `clock`) for delta pulls; drop the oldest beyond the rows' bytes."""
        self.log.append((clock, part))
        self.log_bytes += _payload_bytes([(part, 0)])
        while self.log and self.log_bytes > self.rows_bytes:
            _, old = self.log.popleft()
            self.log_bytes -= _payload_bytes([(old, 0)])

    def set_rule_state(self, state: dict) -> None:
        self.algo.load_state_dict(state, self.params)

    def state(self) -> dict:
        return {"clock": self.clock, "ledger": self.ledger.state_dict(), "refused": self.refused, "busy": self.busy}


@dataclasses.dataclass
class ShardSpec:
    """How a host starts one shard (ServerShard's arguments but the rule, which travels apart: Ray
    resolves object references only as a call's own arguments)."""

    index: int
    lo: int
    hi: int
    rows: np.ndarray | None  # None: from its file
    clock: int = 0
    ledger: dict | None = None
    file: str | None = None
    save_every: float | None = None
    restarted: bool = False
    aligned: bool = False


class ServerActor:
    """Server shards in one process (`algo.server_placement()`), one call at a time. Each keeps its
    own rows, clock, ledger and file; they share one parameter store (their rows are disjoint). A
    call carries requests for several of them (a worker's pull or push of one task): one message a
    host instead of one a server."""

    def __init__(self, specs: list[ShardSpec], *algos):
        torch.set_num_threads(1)
        params = algos[0].init_params()
        self.shards = {
            spec.index: ServerShard(
                algo,
                spec.index,
                spec.lo,
                spec.hi,
                spec.rows,
                spec.clock,
                spec.ledger,
                spec.file,
                spec.save_every,
                params,
                spec.restarted,
                spec.aligned,
            )  # fmt: skip
            for spec, algo in zip(specs, algos, strict=True)
        }

    def ping(self) -> list[int]:
        return list(self.shards)

    def pull(self, requests: list[tuple]) -> list[tuple]:
        """Each (server, rows, since, pushes): that shard's `pull(rows, since, pushes)` reply."""
        return [self.shards[b].pull(*request) for b, *request in requests]

    def push(self, requests: list[tuple]) -> list[tuple]:
        """Each (server, origin, seq, parts, bundled, stepped_at, targets): that shard's push reply."""
        return [self.shards[b].push(*request) for b, *request in requests]

    def save(self) -> list[int]:
        return [shard.save() for shard in self.shards.values()]

    def set_rule_state(self, state: dict) -> None:
        for shard in self.shards.values():
            shard.set_rule_state(state)

    def state(self) -> dict[int, dict]:
        return {b: shard.state() for b, shard in self.shards.items()}

    def snapshot(self, save: bool) -> dict[int, tuple]:
        """At a drained point, per shard: (its rows, its state), saved to its file first with `save`."""
        if save:
            self.save()
        return {b: (shard.pull()[1], shard.state()) for b, shard in self.shards.items()}


@dataclasses.dataclass
class _Pending:
    """A task whose pushes were sent and not yet answered (WorkerActor.run_tasks)."""

    seq: int
    refs: list  # the push calls, one per host of a target server
    groups: list[list[int]]  # the target servers of each call
    targets: list[int]
    owners: list[list]  # each update's (server, place in that server's parts)
    reply: dict  # the task's reply so far (all but the push replies' figures)


class WorkerActor:
    """A worker: pull, compute a task's batches from what it pulled, push each server's parts."""

    def __init__(self, algo, hosts: list, placement: list[list[int]], rows: list, threads: int):
        """`hosts`: the server actors, `placement[h]`: the servers host h holds, `rows[b]`: server b's."""
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        from asyncopt.engines.base import blas_threads

        blas_threads(threads)
        self.algo, self.hosts, self.rows = algo, list(hosts), rows
        self.placement = [list(servers) for servers in placement]
        self.host_of = {b: h for h, servers in enumerate(self.placement) for b in servers}
        self.n_servers = len(rows)
        if getattr(algo, "bundles", False):  # load compiled kernels before the first task's clock
            algo.warm_bundles("worker")
        elif hasattr(algo, "prepare"):
            algo.prepare()
        self.params = algo.init_params()
        self.loading: list = []  # the hosts' rule-state calls to await before the next push
        self.finished = None  # when the last task ended (the idle time before the next one is waiting)
        self.staleness = 0  # the servers' staleness for this worker's last task: the step its copy takes
        # additive rules: the clock each server's rows in self.params are at (None: not a replica of
        # them, e.g. after the task's own updates were applied to the copy)
        self.replica: list[int | None] = [None] * self.n_servers
        self.push_fault: int | None = None  # (fault injection: arm_push_fault)

    def ready(self) -> int:
        return os.getpid()

    def arm_push_fault(self, hosts: int) -> None:
        """Fault injection for the chaos tests: at its next push this worker's process sends the parts
        for its first `hosts` hosts only, waits until they are applied, and exits, as a worker whose
        node is lost in the middle of a push: some servers hold the push, the others never get it."""
        self.push_fault = hosts

    def _die_mid_push(self, requests: dict[int, tuple]) -> None:
        import ray

        kept = {b: r for b, r in requests.items() if self.host_of[b] < self.push_fault}
        refs, _ = self._send("push", kept)
        ray.get(refs)
        os._exit(1)

    def set_rule_state(self, state: dict) -> None:
        self.algo.load_state_dict(state, self.params)

    def set_host(self, index: int, host) -> None:
        """A restarted host's handle (the coordinator replaced a dead one; its clocks may be behind)."""
        self.hosts[index] = host
        for b in self.placement[index]:
            self.replica[b] = None

    def _send(self, method: str, requests: dict[int, tuple]) -> tuple[list, list[list[int]]]:
        """One call of `method` per host, with the requests (server -> its arguments) of its servers:
        (the calls, the servers of each)."""
        groups: dict[int, list[int]] = {}
        for b in requests:
            groups.setdefault(self.host_of[b], []).append(b)
        refs = [getattr(self.hosts[h], method).remote([(b, *requests[b]) for b in bs]) for h, bs in groups.items()]
        return refs, list(groups.values())

    @staticmethod
    def _by_server(replies: list[list], groups: list[list[int]]) -> dict[int, tuple]:
        return {b: reply for bs, got in zip(groups, replies, strict=True) for b, reply in zip(bs, got, strict=True)}

    def run_tasks(
        self, tasks: list, origin: int, seqs: list[int], rule_state: dict | None = None, loaded: list | None = None
    ) -> dict:
        """Tasks one after the other, each with its own pull and push, in one call from the
        coordinator: the coordinator's cost is then per call, not per batch. One reply for all, with
        each task's acknowledgements (`acks`: (seq, updates each server now holds)). `rule_state`: the
        rule's state to take first (the coordinator's after an evaluation point); `loaded`: the calls
        that give the hosts theirs, awaited before the first push.

        Pushes are pipelined: a task's pushes are not waited for before the next task's pulls are
        sent; both are awaited together, before the next task computes. An actor runs one caller's
        calls in the order sent, so each server applies the push before it answers the pull: the
        next task reads its own updates, and the steps are those of a worker that waited. One round
        trip a task is saved; at most one task's pushes are in flight per worker, so per origin only
        the last push can be incomplete at some servers (what `lagging_servers` relies on)."""
        import ray

        if rule_state is not None:  # (the rule's state since the last evaluation point)
            self.set_rule_state(rule_state)
        self.loading = list(loaded or [])
        total: dict = {"stalenesses": [], "acks": []}
        pending = None
        for task, seq in zip(tasks, seqs, strict=True):
            pending = self._run_task(task, origin, seq, pending, total)
        t0 = time.perf_counter()
        replies = ray.get(pending.refs)
        pending.reply["messages"] += time.perf_counter() - t0
        self._settle(pending, replies, total)
        self.finished = time.perf_counter()
        return total

    def _run_task(self, task, origin: int, seq: int, pending: _Pending | None, total: dict) -> _Pending:
        """Pull (awaiting `pending`, the previous task's pushes, with it), compute, send the pushes of
        push (origin, seq) to every server the task's updates go to; what to await of them."""
        import ray

        t0 = time.perf_counter()
        task.rows = np.array(task.rows)  # (writable: Ray maps arrays read-only from the object store)
        wanted = self._wanted(task.rows)
        since = [r if w is None else None for r, w in zip(self.replica, wanted, strict=True)]
        # algorithms whose steps must not see part of an update (EigenPro) read whole pushes: a push
        # that some servers applied and others not yet is waited for (docs/design.md)
        whole = getattr(self.algo, "snapshot_reads", False) and len(self.hosts) > 1
        refs, groups = self._send("pull", {b: (wanted[b], since[b], whole) for b in range(self.n_servers)})
        if pending is None:
            got = ray.get(refs)
        else:  # (the previous task's pushes, sent before these pulls: each host answers them first)
            got = ray.get(refs + pending.refs)
            self._settle(pending, got[len(refs) :], total)
        pulled, pull_calls = self._by_server(got[: len(refs)], groups), len(refs)
        clocks, pull_bytes = [0] * self.n_servers, 0
        for b in range(self.n_servers):
            pull_bytes += self._take(b, wanted[b], pulled[b], clocks)
        repaired = torn = 0
        if whole:
            fronts = [pulled[b][3] for b in range(self.n_servers)]
            for _ in range(WHOLE_READ_ROUNDS):
                lagging = lagging_servers(fronts)
                if not lagging:
                    break
                repaired = 1
                again, groups = self._send("pull", {b: (None, self.replica[b], True) for b in lagging})
                for b, reply in self._by_server(ray.get(again), groups).items():
                    pull_bytes += self._take(b, None, reply, clocks)
                    fronts[b] = reply[3]
            else:
                torn = 1 if lagging_servers(fronts) else 0
        t1 = time.perf_counter()
        bundled = getattr(self.algo, "bundles", False)
        stepped_at = self.staleness if len(task.sizes) > 1 else 0  # (the step of the copy's updates)
        if len(task.sizes) > 1:  # the copy takes the task's own updates: no longer a replica
            self.replica = [None] * self.n_servers
        parts, owners = self._bundle(task, clocks) if bundled else self._batches(task, clocks)
        t2 = time.perf_counter()
        targets = [b for b, p in enumerate(parts) if p]
        if self.loading:  # (the hosts hold the rule these pushes are applied with)
            ray.get(self.loading)
            self.loading = []
        requests = {b: (origin, seq, parts[b], bundled, stepped_at, targets) for b in targets}
        if self.push_fault is not None:
            self._die_mid_push(requests)
        refs, groups = self._send("push", requests)
        idle = 0.0 if self.finished is None else max(0.0, t0 - self.finished)
        self.finished = time.perf_counter()
        reply = {
            "updates": len(owners),
            "samples": task.n_samples,
            "compute": t2 - t1,
            "idle": idle,
            "messages": (t1 - t0) + (self.finished - t2),
            # what each server now holds of this task (updates)
            "parts": {b: len(parts[b][0][0]) if bundled else len(parts[b]) for b in targets},
            "sent": pull_calls + len(refs),  # (messages: one a host)
            "bytes": pull_bytes + sum(_payload_bytes(parts[b]) for b in targets),
            "pull_bytes": pull_bytes,
            "reads_repaired": repaired,  # reads that waited for a push to reach all its servers
            "reads_torn": torn,  # reads still missing part of a push after WHOLE_READ_ROUNDS re-pulls
        }
        return _Pending(seq, refs, groups, targets, owners, reply)

    def _wanted(self, rows: np.ndarray) -> list:
        """Per server, the rows of it the task's steps read (`algo.rows_read`), or None: all of them.
        All of them when the task's samples have as many entries as the server has rows (finding the
        rows read is a pass over the entries, ~5 ns each: 3-5 ms a news20 batch of 4,096, as much as
        its compute, to save shipping 15% of the rows), or when they are more than half of its rows
        (the indices would travel too). The steps read the same rows either way."""
        entries = self.algo.read_entries(rows) if hasattr(self.algo, "read_entries") else None
        if entries is not None and all(entries >= hi - lo for lo, hi in self.rows):
            return [None] * self.n_servers
        needed = self.algo.rows_read(rows)  # (None: all)
        wanted = [None if needed is None else needed[(needed >= lo) & (needed < hi)] for lo, hi in self.rows]
        entries = entries or 0
        return [None if w is None or 2 * len(w) > hi - lo or entries >= hi - lo else w
                for w, (lo, hi) in zip(wanted, self.rows, strict=True)]  # fmt: skip

    def _settle(self, pending: _Pending, replies: list, total: dict) -> None:
        """A task's push replies: its updates' stalenesses (the most any of their servers counted;
        unknown for a retry forgotten), the staleness the copy steps the next task at, and the
        task's reply added to `total`."""
        replies = self._by_server(replies, pending.groups)
        stalenesses = []
        for placed in pending.owners:
            counted = [replies[b][0][i] for b, i in placed if replies[b][0] is not None]
            if counted:
                stalenesses.append(max(counted))
        if stalenesses:
            self.staleness = max(stalenesses)
        reply = pending.reply
        reply["retried"] = sum(replies[b][1] for b in pending.targets)
        total["stalenesses"] += stalenesses
        total["acks"].append((pending.seq, reply.pop("parts")))
        for key, value in reply.items():
            total[key] = total.get(key, 0) + value

    def _take(self, b: int, w, reply, clocks: list[int]) -> int:
        """Put server b's pull reply into the copy (its deltas, rows, or the rows of `w`); its bytes."""
        (lo, hi), (clock, rows, deltas) = self.rows[b], reply[:3]
        if deltas is not None:  # the parts applied since the replica's clock, in the servers' order
            for part in deltas:
                self.algo.apply(self.params, part, 0)
            nbytes = _payload_bytes([(part, 0) for part in deltas])
        elif w is None:
            write_rows(self.params, lo, hi, rows)
            nbytes = rows.nbytes
        else:
            self.params.numpy()[w] = rows
            nbytes = rows.nbytes
        self.replica[b] = clock if w is None and getattr(self.algo, "additive", False) else None
        clocks[b] = clock
        return nbytes

    def _batches(self, task, clocks: list[int]) -> tuple[list[list], list[list]]:
        """The task batch by batch: (each server's parts, each update's (server, place in its parts))."""
        parts: list[list] = [[] for _ in range(self.n_servers)]
        owners = []
        n_batches = len(task.sizes)
        for i, (batch, scale, key) in enumerate(task.batches()):
            update = self.algo.compute(self.params, torch.as_tensor(batch), scale, key)
            self.algo.check(update, -1, -1)
            if i + 1 < n_batches:  # the task's later batches read this update, as its servers will hold it
                self.algo.apply(self.params, update, self.staleness)
            placed = []
            for server, part in self.algo.server_parts(update):
                placed.append((server, len(parts[server])))
                parts[server].append((part, clocks[server]))
            owners.append(placed)
        return parts, owners

    def _bundle(self, task, clocks: list[int]) -> tuple[list[list], list[list]]:
        """The task in one compiled call (algo.compute_bundle), one bundle for each server."""
        bundle = self.algo.compute_bundle(self.params, task, self.staleness)
        parts: list[list] = [[] for _ in range(self.n_servers)]
        owners: list[list] = [[] for _ in range(len(bundle))]
        for server, part, updates in self.algo.bundle_parts(bundle):
            parts[server] = [(part, clocks[server])]
            for place, t in enumerate(updates.tolist()):
                owners[t].append((server, place))
        return parts, owners
