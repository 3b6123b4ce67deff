"""What every engine run records: staleness of each update and per-worker work and waiting."""

from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np

TIMELINE_CAP = 2048  # tasks kept per worker for the timeline (then every other one is dropped, and so on)


@dataclasses.dataclass
class WorkerStats:
    steps: int = 0
    samples: int = 0
    compute_seconds: float = 0.0  # reading parameters and computing updates
    wait_seconds: float = 0.0  # waiting for a task (idle)
    message_seconds: float = 0.0  # Ray: pulling from and pushing to the server actors
    messages: int = 0  # Ray: pulls and pushes sent
    message_bytes: int = 0  # Ray: bytes of the rows pulled and the updates pushed (array payloads)
    pull_bytes: int = 0  # Ray: of which pulled


@dataclasses.dataclass
class Telemetry:
    """Staleness = updates applied between a worker's read and the application of its update."""

    n_workers: int
    staleness: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    workers: list[WorkerStats] = dataclasses.field(default_factory=list)
    startup_seconds: float = 0.0  # starting the workers (spawned processes import torch), inside fit's time
    setup_seconds: float = 0.0  # fit's serial work before the engine ran (input checks, data, step size)
    server_updates: list[int] = dataclasses.field(
        default_factory=list
    )  # each parameter server's clock (servers in the workers)
    failures: list[dict] = dataclasses.field(default_factory=list)  # Ray: actors that died, and what was lost
    lost_updates: list[int] = dataclasses.field(default_factory=list)  # Ray: per server, updates lost to restarts
    # Ray: per server, pushes its ledger answered without applying them again (a task reissued after a
    # worker died mid-push, or a retry), since the server actor last started
    refused_pushes: list[int] = dataclasses.field(default_factory=list)
    server_busy_seconds: list[float] = dataclasses.field(default_factory=list)  # Ray: per server, in pulls and pushes
    server_actors: list[list[int]] = dataclasses.field(default_factory=list)  # Ray: the servers each actor hosts
    # snapshot reads (engines/snapshots.py): reads a write overlapped, rows re-copied, reads under the lock
    reads_repaired: int = 0
    rows_recopied: int = 0
    reads_locked: int = 0
    reads_torn: int = 0  # Ray: reads still missing part of a push after the re-pulls (ray_actors.py)
    # per worker, tasks as (end, compute, wait) seconds since the engine started, when the coordinator
    # recorded them (the end is the reply's arrival): every task up to TIMELINE_CAP, then every 2nd, 4th...
    timeline: list[list[tuple[float, float, float]]] = dataclasses.field(default_factory=list)
    timeline_stride: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.workers:
            self.workers = [WorkerStats() for _ in range(self.n_workers)]
        self._t0 = time.perf_counter()
        self._seen = [0] * self.n_workers
        self.timeline = self.timeline or [[] for _ in range(self.n_workers)]
        self.timeline_stride = self.timeline_stride or [1] * self.n_workers

    def _mark(self, worker: int, compute: float, wait: float) -> None:
        """A task of `worker` in the timeline (bounded: beyond the cap, every other one is kept)."""
        if worker >= len(self.timeline):
            return
        self._seen[worker] += 1
        if self._seen[worker] % self.timeline_stride[worker]:
            return
        line = self.timeline[worker]
        line.append((time.perf_counter() - self._t0, compute, wait))
        if len(line) >= TIMELINE_CAP:
            del line[1::2]
            self.timeline_stride[worker] *= 2

    def record(self, worker: int, staleness: int, samples: int, compute: float, wait: float) -> None:
        self.staleness[int(staleness)] += 1
        w = self.workers[worker]
        w.steps += 1
        w.samples += samples
        w.compute_seconds += compute
        w.wait_seconds += wait
        self._mark(worker, compute, wait)

    def record_many(
        self,
        worker: int,
        stalenesses: list[int],
        samples: int,
        compute: float,
        wait: float,
        messages: float = 0.0,
        sent: int = 0,
        sent_bytes: int = 0,
        pulled_bytes: int = 0,
    ) -> None:
        """A task's updates at once: samples, compute, wait and message seconds are the task's totals."""
        values, counts = np.unique(np.asarray(stalenesses, dtype=np.int64), return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.staleness[value] += count
        w = self.workers[worker]
        w.steps += len(stalenesses)
        w.samples += samples
        w.compute_seconds += compute
        w.wait_seconds += wait
        w.message_seconds += messages
        w.messages += sent
        w.message_bytes += sent_bytes
        w.pull_bytes += pulled_bytes
        self._mark(worker, compute + messages, wait)

    def record_reads(self, repaired: int, rows: int, locked: int, torn: int = 0) -> None:
        self.reads_repaired += repaired
        self.rows_recopied += rows
        self.reads_locked += locked
        self.reads_torn += torn

    @property
    def updates(self) -> int:
        return sum(self.staleness.values())

    def staleness_summary(self) -> dict:
        if not self.staleness:
            return {"mean": 0.0, "max": 0, "p50": 0, "p99": 0}
        values = sorted(self.staleness.elements())
        return {
            "mean": sum(values) / len(values),
            "max": values[-1],
            "p50": values[len(values) // 2],
            "p99": values[min(len(values) - 1, int(0.99 * len(values)))],
        }

    @classmethod
    def from_dict(cls, saved: dict, n_workers: int) -> Telemetry:
        """Continue the record of a resumed run (`as_dict`'s output) with `n_workers` workers."""
        t = cls(n_workers=n_workers)
        t.staleness.update({int(k): int(v) for k, v in saved.get("staleness_histogram", {}).items()})
        for w, stats in zip(t.workers, saved.get("workers", []), strict=False):
            for name, value in stats.items():
                setattr(w, name, value)
        t.setup_seconds = float(saved.get("setup_seconds", 0.0))
        t.startup_seconds = float(saved.get("startup_seconds", 0.0))
        t.server_updates = [int(c) for c in saved.get("server_updates", [])]
        t.failures = [dict(f) for f in saved.get("failures", [])]
        t.lost_updates = [int(c) for c in saved.get("lost_updates", [])]
        t.refused_pushes = [int(c) for c in saved.get("refused_pushes", [])]
        t.server_busy_seconds = [float(c) for c in saved.get("server_busy_seconds", [])]
        t.server_actors = [[int(b) for b in servers] for servers in saved.get("server_actors", [])]
        reads = ("reads_repaired", "rows_recopied", "reads_locked", "reads_torn")
        t.record_reads(*(int(saved.get(k, 0)) for k in reads))
        return t

    def as_dict(self) -> dict:
        return {
            "n_workers": self.n_workers,
            "updates": self.updates,
            "staleness_histogram": dict(sorted(self.staleness.items())),
            "staleness": self.staleness_summary(),
            "workers": [dataclasses.asdict(w) for w in self.workers],
            "startup_seconds": self.startup_seconds,
            "setup_seconds": self.setup_seconds,
            "server_updates": list(self.server_updates),
            "failures": [dict(f) for f in self.failures],
            "lost_updates": list(self.lost_updates),
            "refused_pushes": list(self.refused_pushes),
            "server_busy_seconds": list(self.server_busy_seconds),
            "server_actors": [list(servers) for servers in self.server_actors],
            "reads_repaired": self.reads_repaired,
            "rows_recopied": self.rows_recopied,
            "reads_locked": self.reads_locked,
            "reads_torn": self.reads_torn,
            "timeline": [[list(map(float, row)) for row in line] for line in self.timeline],
        }
