"""Tasks of many batches as one message (backend="ray"): compiled on the worker, compiled on the server.

A Ray round trip costs milliseconds of CPU on both ends, a compiled ProxSGD update microseconds,
so a Ray worker runs a task of many batches in one compiled call and pushes each server one
`Bundle`, its share of the task's updates as flat arrays (a few numpy buffers pickle without a
copy; a list of small tensors costs microseconds each, as much as an update):

- worker (`compute_bundle`): each batch's update from the worker's copy of the parameters, the
  update then applied to that copy with the servers' rule (fast.task_route / task_server_apply),
  so that the task's later batches read it, as its servers will hold it;
- server (`apply_bundle`): the bundle's updates in order, each with the step of the push's staleness.

The same kernels as the shared-memory engines' compiled loop (fast.py), so the arithmetic is theirs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import types

import numpy as np
from numba import njit
from numba.typed import List

from asyncopt.proxsgd.fast import task_route, task_server_apply, task_worker_step


@dataclasses.dataclass
class Bundle:
    """Updates of one task for one server, in order: update t is (blocks[t], the pairs
    offsets[t]:offsets[t+1] of index / values, intercepts[t])."""

    blocks: np.ndarray  # (n,) int64: the update's block, -1 for a full push
    offsets: np.ndarray  # (n + 1,) int64
    index: np.ndarray  # (pairs,) int64: parameter rows
    values: np.ndarray  # (pairs, k)
    intercepts: np.ndarray  # (n, k): the intercept's gradient (zeros without an intercept)
    round_batch: int  # a batch's step is scaled by its size / round_batch (engines.base.Task)

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def select(self, updates: np.ndarray, lo: int, hi: int) -> Bundle:
        """The bundle of `updates` (increasing positions) with only their pairs in rows lo..hi."""
        n = len(self)
        owner = np.repeat(np.arange(n), np.diff(self.offsets))  # the update of each pair
        chosen = np.zeros(n, dtype=bool)
        chosen[updates] = True
        keep = chosen[owner] & (self.index >= lo) & (self.index < hi)
        counts = np.bincount(owner[keep], minlength=n)[updates]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Bundle(self.blocks[updates], offsets, self.index[keep], self.values[keep], self.intercepts[updates],
                      self.round_batch)  # fmt: skip


def _compute(worker, server, rows, sizes, keys, staleness):
    """(status, blocks, offsets, index, values, intercepts) of the task's batches (see the module)."""
    n = sizes.shape[0]
    k = worker[4].shape[1]  # (worker[4]: the parameters P)
    blocks = np.empty(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    intercepts = np.zeros((n, k), dtype=worker[4].dtype)
    indexes, values = List(), List()
    start = 0
    for t in range(n):
        status, update = task_worker_step(worker, rows[start : start + sizes[t]], keys[t])
        start += sizes[t]
        if status != 0:
            return status, blocks[:0], offsets[:1], np.zeros(0, np.int64), np.zeros((0, k), worker[4].dtype), intercepts
        j, index, grad, intercept = update
        if t + 1 < n:  # the task's later batches read this update (the last one only its servers do)
            first, stop, extra, eta = task_route(server, update, staleness)
            for b in range(first, stop):
                task_server_apply(server, b, update, eta)
            if extra >= 0:
                task_server_apply(server, extra, update, eta)
        blocks[t] = j
        offsets[t + 1] = offsets[t] + index.shape[0]
        if intercept.shape[0] == k:
            intercepts[t] = intercept
        indexes.append(index)
        values.append(grad)
    all_index = np.empty(offsets[n], dtype=np.int64)
    all_values = np.empty((offsets[n], k), dtype=worker[4].dtype)
    for t in range(n):
        all_index[offsets[t] : offsets[t + 1]] = indexes[t]
        all_values[offsets[t] : offsets[t + 1]] = values[t]
    return 0, blocks, offsets, all_index, all_values, intercepts


def _apply(server_args, server, blocks, offsets, index, values, intercepts, staleness):
    for t in range(blocks.shape[0]):
        update = (blocks[t], index[offsets[t] : offsets[t + 1]], values[offsets[t] : offsets[t + 1]], intercepts[t])
        _, _, _, eta = task_route(server_args, update, staleness)
        task_server_apply(server_args, server, update, eta)


@functools.cache
def _compiled(name: str):
    """`name` compiled, cached by numba under a name with the stamps of this folder's sources: the
    kernels inline fast.py's, and numba checks only the file of the function it caches."""
    folder = os.path.dirname(os.path.abspath(__file__))
    stamps = []
    for file in sorted(os.listdir(folder)):
        if file.endswith(".py"):
            st = os.stat(os.path.join(folder, file))
            stamps.append(f"{file}:{st.st_mtime_ns}:{st.st_size}")
    tag = hashlib.blake2b("|".join(stamps).encode(), digest_size=8).hexdigest()
    f = globals()[name]
    copy = types.FunctionType(f.__code__, f.__globals__, f"{name}_{tag}")
    copy.__qualname__ = copy.__name__  # numba names the cache file after it
    return njit(cache=True, nogil=True)(copy)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: numba compiles one version for read-only arrays (what Ray delivers) and one
    for writable ones; always read-only, the one loaded when an actor starts is the one used."""
    view = a.view()
    view.flags.writeable = False
    return view


def compute_bundle(worker_args, server_args, task, staleness: int, compile_only: bool = False) -> tuple[int, Bundle]:
    """(status, the task's updates): status 0, or the worker kernel's non-zero code (divergence).
    `compile_only`: an empty bundle of the arguments' types, without loading the kernel."""
    if compile_only:
        k, dtype = worker_args[4].shape[1], worker_args[4].dtype
        ints = np.zeros(0, dtype=np.int64)
        return 0, Bundle(ints, np.zeros(1, np.int64), ints, np.zeros((0, k), dtype), np.zeros((0, k), dtype), 1)
    rows, sizes, keys = (_read_only(np.asarray(a, dtype=np.int64)) for a in (task.rows, task.sizes, task.keys))
    status, blocks, offsets, index, values, intercepts = _compiled("_compute")(
        worker_args, server_args, rows, sizes, keys, int(staleness)
    )
    return int(status), Bundle(blocks, offsets, index, values, intercepts, int(task.round_batch))


def apply_bundle(server_args, server: int, bundle: Bundle, staleness: int) -> None:
    arrays = (bundle.blocks, bundle.offsets, bundle.index, bundle.values, bundle.intercepts)
    _compiled("_apply")(server_args, server, *map(_read_only, arrays), int(staleness))
