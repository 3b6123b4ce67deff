"""Atomic operations on shared int64 words for compiled (numba) worker code.

Python locks cannot be taken inside a compiled loop, so a task that runs its steps compiled
synchronizes through a small int64 array in shared memory instead (`new_sync`): word 0 counts
the applied updates (the version staleness is measured against), word CURSOR_WORD hands out
the batches of a shared task (each worker takes the next one with a fetch-add, so a round of
batches splits itself evenly between workers), word `lock_word(b)` is the spinlock of server b
and the next word its clock.
Each word sits on its own 64-byte cache line, so workers that update different blocks do not
slow each other down by writing to one line.

numba exposes no CPU atomics; the three below are single LLVM instructions (cmpxchg,
atomicrmw add, load atomic), all sequentially consistent, so a lock's release publishes the
block's writes to the next holder in any thread or process that maps the same memory.
"""

from __future__ import annotations

import torch
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

WORDS_PER_LINE = 8  # 8 int64 = one 64-byte cache line
VERSION_WORD = 0
BEGIN_WORD = 1  # writes begun (snapshots.py: a logged write counts here first, then in VERSION_WORD)
CURSOR_WORD = WORDS_PER_LINE
CLOCK_OFFSET = 1  # a server's clock (updates it applied) sits next to its lock word, written under the lock


@njit(cache=True, nogil=True)
def lock_word(server):
    return (2 + server) * WORDS_PER_LINE


def new_sync(n_locks: int) -> torch.Tensor:
    """Zeroed words for the version counter, the cursor and `n_locks` spinlocks (share it with the workers)."""
    return torch.zeros((2 + n_locks) * WORDS_PER_LINE, dtype=torch.int64)


def _is_int64_vector(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.int64 and array.ndim == 1


def _pointer(context, builder, signature, args):
    array_t, index_t = signature.args[0], signature.args[1]
    array = context.make_array(array_t)(context, builder, args[0])
    index = context.cast(builder, args[1], index_t, types.intp)
    return cgutils.get_item_pointer(context, builder, array_t, array, [index], wraparound=False)


@intrinsic
def compare_and_swap(typingctx, array, index, expected, new):
    """array[index] = new if it was `expected`; returns what it was (atomically)."""
    if not (_is_int64_vector(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_pointer(context, builder, signature, args), args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return types.int64(array, index, types.int64, types.int64), codegen


@intrinsic
def fetch_add(typingctx, array, index, value):
    """array[index] += value atomically; returns the value before."""
    if not (_is_int64_vector(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _pointer(context, builder, signature, args), args[2], "seq_cst")

    return types.int64(array, index, types.int64), codegen


@intrinsic
def load(typingctx, array, index):
    """array[index], read atomically (never hoisted out of a loop or torn)."""
    if not (_is_int64_vector(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_pointer(context, builder, signature, args), "seq_cst", 8)

    return types.int64(array, index), codegen


@njit(cache=True, nogil=True)
def acquire(sync, word, max_spins):
    """Spin until the lock at sync[word] is taken; False after max_spins tries (a holder died)."""
    for _ in range(max_spins):
        if load(sync, word) == 0 and compare_and_swap(sync, word, 0, 1) == 0:
            return True
    return False


@njit(cache=True, nogil=True)
def release(sync, word):
    compare_and_swap(sync, word, 1, 0)


@intrinsic
def _fence(typingctx):
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def fence():
    """A full memory fence: loads and stores before it complete before any after it (a seqlock
    reader's copy must not move past its reads of the counters on weakly ordered CPUs)."""
    _fence()
