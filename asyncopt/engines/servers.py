"""Parameter servers: each owns rows of the parameter store, applies the algorithm's rule to the
parts of updates addressed to it, one update at a time, and counts them (its clock).

Their counters live in one small int64 array (`sync`, engines/atomics.py's layout: the version
counter, the shared-task cursor, then per server a lock word and its clock), a tensor the
processes transport moves to shared memory, so compiled workers (engines/compiled.py) and Python
workers see the same words. Two placements:

- `ServerGroup` (servers in the workers): a worker applies its own update, each part under the
  lock of the server it is for, so one server's updates are serialized as its inbox would
  serialize them while different servers proceed in parallel;
- `PublishingServer` (the coordinator applies): the coordinator is the one server of every row,
  the single writer; it publishes each update under a sequence word (a seqlock), and workers
  read through `read`, which never returns half an update.

The rule's state (step schedule, SVRG anchor) is the algorithm's (`state_dict`): it is one
schedule for every server and reaches worker processes through shared tensors.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from asyncopt.engines import atomics, handover, snapshots


class _Words:
    """Holds `sync` (a tensor, shareable) and a numpy view of it, rebuilt after pickling or sharing."""

    def __init__(self, sync: torch.Tensor):
        self.sync = sync

    @property
    def words(self) -> np.ndarray:
        view = self.__dict__.get("_view")
        if view is None:
            view = self._view = self.sync.numpy()
        return view

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_view", None)  # (a numpy view would pickle as a copy)
        return state

    def share_memory_(self, pack=handover.share_each):
        """The words to shared memory (`pack`: how a list of tensors gets there, handover.py)."""
        self.__dict__.pop("_view", None)  # (a numpy view would keep reading the moved storage)
        pack(self._shared_tensors())
        return self

    def _shared_tensors(self) -> list[torch.Tensor]:
        return [self.sync]


class ParameterServer(_Words):
    """Server `index`: rows [lo, hi) of the parameter store, its lock and its clock (updates applied)."""

    def __init__(self, index: int, lo: int, hi: int, lock, sync: torch.Tensor):
        super().__init__(sync)
        self.index, self.lo, self.hi, self.lock = index, lo, hi, lock
        self._clock_word = atomics.lock_word(index) + atomics.CLOCK_OFFSET

    @property
    def clock(self) -> int:
        return int(self.words[self._clock_word])

    def apply(self, rule, params: torch.Tensor, part, staleness: int) -> None:
        """`rule(params, part, staleness)` (the algorithm's `apply`) on this server's part, under its lock."""
        with self.lock:
            rule(params, part, staleness)
            self.words[self._clock_word] += 1


class ServerGroup(_Words):
    """The servers of a run whose workers apply their own updates (`algo.n_locks` servers owning
    `algo.server_rows(b)`), and the version counter staleness is measured against."""

    def __init__(self, algo, new_lock, batch_size: int | None = None):
        n = algo.n_locks
        super().__init__(atomics.new_sync(n))
        rows = [algo.server_rows(b) if hasattr(algo, "server_rows") else (0, 0) for b in range(n)]
        self.servers = [ParameterServer(b, lo, hi, new_lock(), self.sync) for b, (lo, hi) in enumerate(rows)]
        self.version_lock = new_lock()
        # algorithms whose steps must not see part of an update (EigenPro) read whole versions
        # without a lock (snapshots.py); the others read the store in place
        self.log = None
        if getattr(algo, "snapshot_reads", False):
            self.log = snapshots.WriteLog(algo.touched_rows_cap(batch_size))
        self.read_stats = snapshots.ReadStats()

    def _shared_tensors(self) -> list[torch.Tensor]:
        for server in self.servers:  # (their numpy views too)
            server.__dict__.pop("_view", None)
        return [self.sync, *(self.log.tensors() if self.log is not None else ())]

    def share_memory_(self, pack=handover.share_each):
        super().share_memory_(pack)
        for server in self.servers:
            server.sync = self.sync
        return self

    @property
    def version(self) -> int:
        return int(self.words[atomics.VERSION_WORD])

    def push(self, algo, params: torch.Tensor, update, read_version: int) -> int:
        """Apply `update` (read at `read_version`) part by part: `algo.server_parts(update)` says which
        server gets which part. Returns its staleness (updates applied since the read)."""
        if self.log is not None:  # one logged write at a time, under the version lock (snapshots.py)
            with self.version_lock:
                staleness = self.version - read_version

                def apply():
                    for server, part in algo.server_parts(update):
                        self.servers[server].apply(algo.apply, params, part, staleness)

                snapshots.logged_write(self.words, self.log, algo.touched_rows(update), apply)
            return staleness
        with self.version_lock:
            staleness = self.version - read_version
        for server, part in algo.server_parts(update):
            self.servers[server].apply(algo.apply, params, part, staleness)
        with self.version_lock:
            self.words[atomics.VERSION_WORD] += 1
        return staleness

    def read(self, params: torch.Tensor) -> tuple[int, torch.Tensor]:
        """(version, what a step reads): a whole version copied without a lock for algorithms with
        `snapshot_reads`, else the store itself (ProxSGD: a step reads its rows in place)."""
        if self.log is None:
            return self.version, params
        return snapshots.snapshot_read(self.words, self.log, params, self.version_lock, self.read_stats, self._copy)

    def _copy(self, params: torch.Tensor) -> torch.Tensor:
        """A snapshot read's lock-free copy (tests/test_torn_reads.py tears it on purpose)."""
        return params.clone()

    def clocks(self) -> list[int]:
        return [s.clock for s in self.servers]

    def state_dict(self) -> dict:
        return {"version": self.version, "clocks": self.clocks()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the clocks of a checkpoint (with no update in flight)."""
        for server, clock in zip(self.servers, state.get("clocks", []), strict=False):
            self.words[server._clock_word] = int(clock)


class PublishingServer(_Words):
    """The coordinator as the one server of every row (the single writer). Word VERSION_WORD counts
    the versions published; word lock_word(0) is the sequence word, odd while an update is applied."""

    def __init__(self):
        super().__init__(atomics.new_sync(1))
        self._seq = atomics.lock_word(0)

    @property
    def version(self) -> int:
        return int(self.words[atomics.VERSION_WORD])

    def apply(self, rule, params: torch.Tensor, update, staleness: int, publish: bool = True) -> None:
        """`rule(params, update, staleness)` with the sequence word odd meanwhile; `publish` counts a
        version (a synchronous round publishes once, after its last update: `advance`)."""
        words = self.words
        words[self._seq] += 1  # odd: readers do not keep what they copy now
        rule(params, update, staleness)
        words[self._seq] += 1
        if publish:
            words[atomics.VERSION_WORD] += 1

    def advance(self) -> None:
        self.words[atomics.VERSION_WORD] += 1

    def read(self, params: torch.Tensor) -> tuple[int, torch.Tensor]:
        """A copy of the parameters that no update was being applied to while it was taken, and its
        version. Without it a read can see an update's first part and not its second: EigenPro's
        batch rows without their Nystrom correction, an unpreconditioned step in the top
        eigendirections (with 2 threads, 1 fit in 4 to 8 ended far from interpolating). Stale but
        whole reads are what the algorithms are designed for."""
        words = self.words
        while True:
            before = int(words[self._seq])
            if before & 1:  # a write in progress: let the server finish
                time.sleep(0)
                continue
            version = int(words[atomics.VERSION_WORD])
            seen = params.clone()
            if int(words[self._seq]) == before:
                return version, seen
