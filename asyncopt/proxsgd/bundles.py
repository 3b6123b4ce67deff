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

from asyncopt.proxsgd.block_prox import general_sweep, sweeps
from asyncopt.proxsgd.fast import (
    GROUPED_BLOCKS,
    STEP_NOT_FINITE,
    _batch_coefficients,
    _csr_batch_margins,
    _csr_block_gradient,
    _group_by_block,
    soft_step,
    soft_step_shifted,
    task_route,
    task_server_apply,
    task_worker_step,
)


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


@dataclasses.dataclass
class SampleBundle:
    """Updates of one task for one server as their samples: update t's gradient is X[rows[o_t:o_t+1]]^T
    coefs[o_t:o_t+1] (o = offsets), of which the server forms the pairs in its own rows from its own
    columns of X (`ProxSGDAlgorithm.for_server`), the same pairs in the same order as the worker's
    kernel forms them. A pair bundle carries every entry of the batch in the server's rows; this
    carries one row number and k coefficients a sample (news20 in 2 blocks, ~77 entries a sample
    and block: ~60x fewer bytes)."""

    blocks: np.ndarray  # (n,) int64: the update's block, -1 for a full push
    offsets: np.ndarray  # (n + 1,) int64, into rows / coefs
    rows: np.ndarray  # (samples,) int64: the samples of the updates, batch after batch
    coefs: np.ndarray  # (samples, k): their coefficients (loss' less the SVRG anchor's, over the batch size)
    intercepts: np.ndarray  # (n, k): the intercept's gradient
    round_batch: int

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def select(self, updates: np.ndarray, samples: bool = True) -> SampleBundle:
        """The bundle of `updates` (increasing positions); without their samples (`samples` False: the
        intercept server, whose rule reads only the intercept gradient)."""
        if not samples:
            none = np.zeros(len(updates) + 1, dtype=np.int64)
            return SampleBundle(self.blocks[updates], none, none[:0], self.coefs[:0], self.intercepts[updates],
                                self.round_batch)  # fmt: skip
        lengths = np.diff(self.offsets)[updates]
        chosen = np.repeat(self.offsets[:-1][updates] - np.cumsum(lengths) + lengths, lengths)
        chosen += np.arange(int(lengths.sum()), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return SampleBundle(self.blocks[updates], offsets, self.rows[chosen], self.coefs[chosen],
                            self.intercepts[updates], self.round_batch)  # fmt: skip


@njit(nogil=True, inline="always")
def _apply_to_copy(server, update, staleness):
    """`update` applied to the worker's copy (the servers' arguments over it) as every server it
    goes to will apply it, with the step of `staleness`."""
    first, stop, extra, eta = task_route(server, update, staleness)
    for b in range(first, stop):
        task_server_apply(server, b, update, eta)
    if extra >= 0:
        task_server_apply(server, extra, update, eta)


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
            _apply_to_copy(server, update, staleness)
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


def _compute_samples(worker, server, rows, sizes, keys, staleness):
    """(status, blocks, coefs, intercepts) of the task's batches: as `_compute`, each update applied to
    the worker's copy before the next batch reads it, but kept as its samples' coefficients (the
    last update's pairs are not formed here: its servers form them)."""
    indptr, indices, values, Y, P = worker[0], worker[1], worker[2], worker[3], worker[4]
    code, snap_D, has_vr, bounds, block_push = worker[5], worker[6], worker[7], worker[8], worker[9]
    sw = worker[18]  # (the sample weights: task_worker_step's tuple)
    n = sizes.shape[0]
    d, k = P.shape[0] - 1, P.shape[1]
    M = bounds.shape[0] - 1
    blocks = np.empty(n, dtype=np.int64)
    coefs = np.empty((rows.shape[0], k), dtype=P.dtype)
    intercepts = np.zeros((n, k), dtype=P.dtype)
    start = 0
    for t in range(n):
        batch = rows[start : start + sizes[t]]
        j, lo, hi = -1, 0, d
        if block_push:  # (the block of task_worker_step)
            j = keys[t] % M
            lo, hi = bounds[j], bounds[j + 1]
        Z = _csr_batch_margins(indptr, indices, values, batch, P[:d])
        for r in range(Z.shape[0]):
            for c in range(k):
                Z[r, c] += P[d, c]
        intercept, finite = _batch_coefficients(Y, batch, Z, code, snap_D, has_vr, sw)
        if not finite:
            return STEP_NOT_FINITE, blocks[:0], coefs[:0], intercepts[:0]
        coefs[start : start + sizes[t]] = Z
        if t + 1 < n:  # the task's later batches read this update (the last one only its servers do)
            index, grad = _csr_block_gradient(indptr, indices, values, batch, Z, lo, hi)
            if j < 0 and M >= GROUPED_BLOCKS:  # (a full push's pairs grouped by block, as task_server_apply reads them)
                index, grad = _group_by_block(index, grad, bounds)
            _apply_to_copy(server, (j, index, grad, intercept), staleness)
        blocks[t] = j
        intercepts[t] = intercept
        start += sizes[t]
    return 0, blocks, coefs, intercepts


@njit(nogil=True, inline="always")
def _samples_block_step(
    P, indptr, indices, values, rows, coefs, eta, thr, positive, mu, has_mu, lo, hi, acc, rw, l2, prox
):
    """fast.eager_l1_apply for the gradient X[rows][:, lo:hi]^T coefs, summed into `acc` straight from
    the columns (the pairs are not formed: ~300k of them a block for a news20 batch of 4,096, formed
    and read again, cost half the server's push). The same products added in the same order as the
    pairs' (sample after sample, a sample's columns in order), so the same rows, bit for bit."""
    k = P.shape[1]
    if acc.shape[0] < hi - lo or acc.shape[1] != k:  # (numba does not check bounds)
        raise ValueError("_samples_block_step: the scratch has fewer rows than the block")
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            if lo <= c < hi:
                for j in range(k):
                    acc[c - lo, j] += values[p] * coefs[r, j]
    if sweeps(prox):  # box, group L1, the smooth regularizer (block_prox.py)
        general_sweep(P, acc, mu, has_mu, eta, lo, hi, prox)
    elif has_mu:  # the anchor's mean, the step and the prox in one pass over the block
        soft_step_shifted(P[lo:hi], acc[: hi - lo], mu[lo:hi], eta, thr, positive, rw, lo, l2)
    elif thr > 0.0 or positive or l2 != 0.0:
        soft_step(P[lo:hi], acc[: hi - lo], eta, thr, positive, rw, lo, l2)
    else:  # no prox: x - eta * 0 is x, so the untouched rows keep their bits
        for q in range(hi - lo):
            for j in range(k):
                P[lo + q, j] -= eta * acc[q, j]
    acc[: hi - lo] = 0.0


def _apply_samples(server_args, server, indptr, indices, values, blocks, offsets, rows, coefs, intercepts, staleness):
    """A SampleBundle's updates in order: a block server sums each update's gradient in its rows from
    its columns of X (indptr, indices, values: CSR over all samples, global column numbers) and takes
    the eager prox step (Ray's servers apply eagerly); the intercept server takes the intercept
    gradient."""
    (P, bounds, alpha, positive, mu, has_vr) = server_args[:6]
    acc, rw, l2, prox = server_args[21], server_args[26], server_args[27], server_args[28]
    M = bounds.shape[0] - 1
    lo, hi = 0, 0
    if server < M:
        lo, hi = bounds[server], bounds[server + 1]
    no_index = np.zeros(0, dtype=np.int64)
    no_values = np.zeros((0, intercepts.shape[1]), dtype=intercepts.dtype)
    for t in range(blocks.shape[0]):
        update = (blocks[t], no_index, no_values, intercepts[t])
        _, _, _, eta = task_route(server_args, update, staleness)
        if server < M:
            a, b = offsets[t], offsets[t + 1]
            _samples_block_step(P, indptr, indices, values, rows[a:b], coefs[a:b], eta, eta * alpha, positive, mu,
                                has_vr, lo, hi, acc, rw, l2, prox)  # fmt: skip
        else:
            task_server_apply(server_args, server, update, eta)


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


def compute_sample_bundle(worker_args, server_args, task, staleness: int) -> tuple[int, SampleBundle]:
    """(status, the task's updates as a SampleBundle): status 0, or the worker kernel's non-zero code."""
    rows, sizes, keys = (_read_only(np.asarray(a, dtype=np.int64)) for a in (task.rows, task.sizes, task.keys))
    status, blocks, coefs, intercepts = _compiled("_compute_samples")(
        worker_args, server_args, rows, sizes, keys, int(staleness)
    )
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if status:
        offsets = offsets[:1]
    return int(status), SampleBundle(blocks, offsets, np.array(rows[: offsets[-1]]), coefs, intercepts,
                                     int(task.round_batch))  # fmt: skip


def apply_sample_bundle(server_args, server: int, columns: tuple, bundle: SampleBundle, staleness: int) -> None:
    """`bundle` applied by server `server`, whose columns of X are `columns` (indptr, indices, values)."""
    arrays = (*columns, bundle.blocks, bundle.offsets, bundle.rows, bundle.coefs, bundle.intercepts)
    _compiled("_apply_samples")(server_args, server, *map(_read_only, arrays), int(staleness))
