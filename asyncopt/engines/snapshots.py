"""Lock-free reads of a parameter store that the workers write in place (servers in the workers).

A worker copies the store without a lock while other workers write it, so a copy taken across a
write can hold part of an update. For EigenPro that is an update's batch rows without its Nystrom
correction (or the reverse): an unpreconditioned step in the top eigendirections, which the next
steps amplify (the simulator's torn reads diverged at every delay, benchmarks/results/delay_study.md).
The rule that rules it out, for algorithms that declare `snapshot_reads`:

- a write is logged before it starts (the rows it will touch, in a ring of `slots` slots) and
  counted twice: word BEGIN_WORD before it touches the store, word VERSION_WORD once it is done;
  writes are one at a time (the writers' lock, held for the adds only, not while computing);
- a read copies the whole store without any lock, then re-copies only the rows of the writes that
  overlapped the copy, once those writes are done, and again for the writes that began meanwhile,
  until a re-copy overlaps none. Rows no overlapping write touched already held the final version.

The read is then the store at one version, each update in it whole (tests/test_torn_reads.py tears
reads on purpose). A re-copy is the rows of a few updates (batch rows plus the s Nystrom rows), small
next to the n x c copy and the kernel product that follows. After MAX_ROUNDS re-copies, or when the
ring was overrun by a very slow read, the read takes the writers' lock for one copy (bounded work).
"""

from __future__ import annotations

import time

import torch

from asyncopt.engines import atomics

SLOTS = 64  # logged writes: a read overlapped by more (a very slow read) copies under the lock
MAX_ROUNDS = 8  # re-copies before a read takes the writers' lock
WAIT_SECONDS = 60.0  # longest wait for a write in progress to finish before a read gives up


class WriteLog:
    """The rows each recent write touches: slot k % slots holds write k's rows (int64, padded)."""

    def __init__(self, capacity: int, slots: int = SLOTS):
        self.slots, self.capacity = slots, capacity
        self.rows = torch.zeros((slots, capacity), dtype=torch.int64)
        self.lengths = torch.zeros(slots, dtype=torch.int64)

    def tensors(self) -> list[torch.Tensor]:
        return [self.rows, self.lengths]

    def record(self, write: int, rows: torch.Tensor) -> None:
        if len(rows) > self.capacity:
            raise RuntimeError(f"an update touches {len(rows)} rows, more than the write log's {self.capacity}")
        slot = write % self.slots
        self.rows[slot, : len(rows)] = rows
        self.lengths[slot] = len(rows)

    def rows_between(self, lo: int, hi: int) -> torch.Tensor:
        """The rows writes lo+1..hi touched (each once)."""
        parts = [self.rows[k % self.slots, : int(self.lengths[k % self.slots])] for k in range(lo + 1, hi + 1)]
        return torch.unique(torch.cat(parts))


def logged_write(words, log: WriteLog, rows: torch.Tensor, apply) -> None:
    """Log and count one write around `apply()` (the caller holds the writers' lock)."""
    write = int(words[atomics.BEGIN_WORD]) + 1
    log.record(write, rows)
    atomics.fence()  # the log entry is complete before a reader can see the write begun
    words[atomics.BEGIN_WORD] = write
    atomics.fence()  # counted as begun before its first add reaches the store
    apply()
    atomics.fence()
    words[atomics.VERSION_WORD] = write


class ReadStats:
    """What a process's reads cost: reads that re-copied rows, rows re-copied, reads under the lock."""

    def __init__(self):
        self.repaired = self.rows = self.locked = 0

    def take(self) -> tuple[int, int, int]:
        out = (self.repaired, self.rows, self.locked)
        self.repaired = self.rows = self.locked = 0
        return out


def snapshot_read(words, log: WriteLog, params: torch.Tensor, write_lock, stats: ReadStats, copy=torch.clone):
    """(version, copy of `params` at that version), without a lock unless the rounds run out;
    `copy(params)` takes the lock-free copy."""
    lo = int(words[atomics.VERSION_WORD])
    atomics.fence()
    seen = copy(params)
    atomics.fence()
    hi = int(words[atomics.BEGIN_WORD])
    if hi == lo:
        return lo, seen
    stats.repaired += 1
    for _ in range(MAX_ROUNDS):
        if hi - lo >= log.slots:
            break
        _wait_done(words, hi)
        rows = log.rows_between(lo, hi)
        atomics.fence()
        if int(words[atomics.BEGIN_WORD]) - lo >= log.slots:  # a slot was reused while we read it
            break
        seen[rows] = params[rows]
        stats.rows += len(rows)
        atomics.fence()
        lo, hi = hi, int(words[atomics.BEGIN_WORD])
        if hi == lo:
            return lo, seen
    stats.locked += 1
    with write_lock:  # no write in progress: one plain copy is a whole version
        return int(words[atomics.VERSION_WORD]), params.clone()


def _wait_done(words, write: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while int(words[atomics.VERSION_WORD]) < write:
        if time.monotonic() > deadline:
            raise RuntimeError(f"write {write} did not finish within {WAIT_SECONDS:.0f} s (a worker died mid-write?)")
        time.sleep(0)
