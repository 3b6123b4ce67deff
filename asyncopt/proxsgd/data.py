"""Training data for linear models as torch tensors: dense, or CSR kept sparse (never densified).

A worker's minibatch of a CSR matrix is gathered row by row into (row, column, value) triplets;
the margins of the minibatch then read only the parameters at the columns it touches: the
"pull" of AsyB-ProxSGD, which for sparse data is a small fraction of the model.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from asyncopt.pickling import arrays_of


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread inside the block: around the setup's serial products, so that no OpenMP thread
    of torch's, spinning after a parallel operation, competes with them and with the transposing thread."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# the threads of the full passes inside `pass_threads` (None outside: torch's products)
_PASS_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("asyncopt_pass_threads", default=None)


@contextlib.contextmanager
def pass_threads():
    """Drained work (the SVRG anchor's pass, an evaluation): torch's thread count, as the engine raised
    it to the idle workers' cores, goes to the CPU passes' own helper threads, and torch runs on one.
    After a parallel operation torch's OpenMP threads spin for a few ms; the workers, restarting
    right after, then found a core taken: the second of two worker threads started 2-3 ms after the
    first at every evaluation point on news20. The helper threads sleep when idle."""
    threads = torch.get_num_threads()
    token = _PASS_THREADS.set(threads)
    try:
        with one_torch_thread():
            yield
    finally:
        _PASS_THREADS.reset(token)


@functools.cache
def _pass_helpers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that take parts of a drained pass's products beside the caller's (`pass_threads`)."""
    return concurrent.futures.ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="asyncopt-pass")


# a full pass's gathers from W (X @ W) and scatters into X^T D's output are prefetched PREFETCH_AHEAD
# entries ahead when that array has at least PREFETCH_MIN_BYTES: X @ W on 10^8 entries, W 10^6 x 1
# (8 MB): 220-260 ms against 630-720 without (torch's: 410-520); on news20, W 1 MB (in the caches),
# 30% slower with than without
PREFETCH_AHEAD = 64
PREFETCH_MIN_BYTES = 4 * 2**20


def _rows_product(
    indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, W: torch.Tensor, shape, threads: int
):
    """M @ W for a CSR M (its torch arrays; rows x columns `shape`) on `threads` threads, each over rows
    holding about as many entries (fast.csr_rows_product), this one taking the first part; torch's
    own product on one thread where W fits the caches (no prefetch to gain). (torch's product holds
    the GIL for most of its time: two Python threads gained 1.2x with it, 1.8-2x with these.)"""
    from asyncopt.proxsgd import fast

    rows = shape[0]
    threads = max(1, min(threads, rows))
    ahead = PREFETCH_AHEAD if W.element_size() * W.numel() >= PREFETCH_MIN_BYTES else 0
    if threads == 1 and not ahead:
        return LinearData._csr(indptr, indices, values, shape) @ W
    indptr, values = indptr.numpy(), values.numpy()
    out = np.empty((rows, W.shape[1]), dtype=values.dtype)
    cuts = [0, *np.searchsorted(indptr, np.linspace(0, indptr[-1], threads + 1)[1:-1]).tolist(), rows]
    args = (indptr, _unsigned(indices.numpy()), values, np.ascontiguousarray(W.numpy()), out)
    jobs = [
        _pass_helpers().submit(fast.csr_rows_product, *args, cuts[t], cuts[t + 1], ahead) for t in range(1, threads)
    ]
    fast.csr_rows_product(*args, cuts[0], cuts[1], ahead)
    for job in jobs:
        job.result()
    return torch.from_numpy(out)


def _unsigned(index: np.ndarray) -> np.ndarray:
    """Non-negative int32 indices viewed as uint32: numba then indexes without the negative-index
    check (the compiled passes over X: 2x faster on news20). int64 stays (numba mixes uint64 and
    int64 into floats)."""
    return index.view(np.uint32) if index.dtype == np.int32 else index


# the share of the rows' entries the setup's thread renumbers and sorts (`LinearData._in_order`); the
# calling thread sorts the rest at the same time
THREAD_SORT_SHARE = 0.5


# the rows' sort (`fast.csr_rows_renumbered`) first deals each row's entries into this many ranges of
# the new columns, each holding about as many of X's entries (64 to 128: fastest on 10^8 entries)
SORT_BUCKETS = 64


def _sort_buckets(counts: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The bucket of each of the user's columns: the new columns (order) cut into SORT_BUCKETS ranges of
    about equal entries (X's column counts)."""
    per_position = counts[order]
    before = np.cumsum(per_position) - per_position
    at = np.minimum(before * SORT_BUCKETS // max(int(per_position.sum()), 1), SORT_BUCKETS - 1)
    bucket = np.empty(order.shape[0], dtype=np.uint8)
    bucket[order] = at
    return bucket


# X^T (for the full passes' X^T D) is built, beside the setup, only up to this many stored entries.
# Beyond, X^T D is a compiled scatter from X's rows (`_rows_transpose_product`). Measured on the large
# benchmark problem (9.9*10^7 entries, D one column): the transposition takes 4.9 s of a core and
# saves 45 ms a pass against scipy's serial product from the rows (torch's product of X^T on 2 threads
# 0.14 s, scipy's 0.19 s; the compiled scatter on 2 threads 0.15-0.17 s): ~100 passes to pay it back, and
# the first anchor move waited for it (the first quarter epoch took 5.2 s with 1 or 2 workers, the
# next ones 4.4 and 2.3 s). news20 (2.3*10^6): 18 ms, and 2.0 ms saved a pass (2.4 against 4.4 ms).
# Above the bound X^T's memory (12 bytes an entry) is saved too.
TRANSPOSE_MAX_ENTRIES = 2**24


@functools.cache
def _transposer() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that builds X^T beside the setup (one: transpositions are memory-bound)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asyncopt-transpose")


def _shared_block(layout: dict[str, tuple[torch.dtype, tuple]]) -> dict[str, torch.Tensor]:
    """Empty (CPU) tensors of these dtypes and shapes in one shared-memory block, each on its own cache lines."""
    places, total = {}, 0
    for name, (dtype, shape) in layout.items():
        size = torch.empty(0, dtype=dtype).element_size()
        places[name] = (total, size)
        total += -(-math.prod(shape) * size // 64) * 64
    block = torch.UntypedStorage._new_shared(max(total, 1))
    return {
        name: torch.empty(0, dtype=dtype).set_(block, places[name][0] // places[name][1], shape)
        for name, (dtype, shape) in layout.items()
    }


def _shared_copies(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the (CPU) tensors in one shared-memory block, each on its own cache lines."""
    copies = _shared_block({name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()})
    for name, t in tensors.items():
        copies[name].copy_(t)
    return copies


def _sort_target(fields: dict[str, torch.Tensor], shared: bool) -> dict[str, torch.Tensor]:
    """Empty arrays for the workers' fields (in one shared-memory block with `shared`), the ones a
    row sort leaves alone already copied in."""
    layout = {name: (t.dtype, tuple(t.shape)) for name, t in fields.items()}
    if shared:
        out = _shared_block(layout)
    else:
        out = {name: torch.empty(shape, dtype=dtype) for name, (dtype, shape) in layout.items()}
    for name in fields.keys() - {"indices", "values"}:
        out[name].copy_(fields[name])
    return out


def _writable(a) -> np.ndarray:
    """torch cannot wrap read-only arrays (e.g. a memmap): copy those, share the rest."""
    return np.require(np.asarray(a), requirements="W")


def _float64_or_empty(w: torch.Tensor | None) -> np.ndarray:
    """Per-sample weights as the compiled kernels take them: float64, empty for None (all 1)."""
    return np.zeros(0, dtype=np.float64) if w is None else w.cpu().numpy().astype(np.float64, copy=False)


def sample_weights(sample_weight, n: int) -> np.ndarray | None:
    """The run's weights from a user's (validated: finite, >= 0, not all 0): scaled to mean 1, so that
    F keeps its scale and integer weights mean repeated samples; None when all are equal (no weights)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if n == 0 or np.all(w == w[0]):
        return None
    return w * (n / w.sum())


def column_counts(X) -> np.ndarray:
    """The stored entries of each column of sparse X (CSR or CSC)."""
    if X.format == "csc":
        return np.diff(X.indptr).astype(np.int64)
    from asyncopt.proxsgd import fast

    X = sp.csr_matrix(X)
    counts = np.zeros(X.shape[1], dtype=np.int64)
    fast.csr_column_counts(_unsigned(X.indices), counts)
    return counts


def _positions(order: np.ndarray, d: int, dtype) -> np.ndarray:
    """position[c]: where the user's column c goes in `order` (a permutation of 0..d-1, checked)."""
    if order.shape != (d,) or not np.array_equal(np.bincount(order, minlength=d), np.ones(d, dtype=np.int64)):
        raise ValueError(f"column_order must be a permutation of 0..{d - 1}")
    position = np.empty(d, dtype=dtype)
    position[order] = np.arange(d, dtype=dtype)
    return position


@dataclasses.dataclass
class MiniBatch:
    rows: torch.Tensor  # sample indices (N,)
    local_row: torch.Tensor | None = None  # sparse: for each stored entry, its row within the batch
    cols: torch.Tensor | None = None  # sparse: column of each entry
    vals: torch.Tensor | None = None  # sparse: value of each entry
    dense: torch.Tensor | None = None  # dense: X[rows] (N, d)

    @property
    def size(self) -> int:
        return len(self.rows)


@dataclasses.dataclass
class LinearData:
    """X (n x d) and targets Y (n x k). Sparse X is held as CSR arrays, and X^T as CSR for full gradients."""

    n: int
    d: int
    Y: torch.Tensor
    dense: torch.Tensor | None = None
    indptr: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    values: torch.Tensor | None = None
    t_indptr: torch.Tensor | None = None  # CSR arrays of X^T (d x n), int32 indices where they fit
    t_indices: torch.Tensor | None = None
    t_values: torch.Tensor | None = None
    # X's row pointers in the dtype of `indices` (int32 where they fit), for the full-data products: torch's
    # sparse product wants both in one dtype, and converts int64 ones on every call (2.2 of 8.7 ms a pass
    # pair on news20). The workers' kernels read `indptr` (int64: offsets into the entries) and `indices`.
    product_indptr: torch.Tensor | None = None
    # X^T is built on a thread beside the rest of the setup (scipy's transposition releases the GIL; 31 ms
    # on news20, seconds on 10^8 entries): the products that need it wait for it (`_transposed`), the
    # setup's own products do without it (`serial=True`)
    transposing: concurrent.futures.Future | None = dataclasses.field(default=None, repr=False, compare=False)
    # with `from_array(shared=True)` the arrays a worker reads are copied into shared memory on the same
    # thread, before X^T, while the setup goes on (15-20 ms on news20, seconds on 10^8 entries):
    # `share_memory` puts the copies in place of the originals
    sharing: concurrent.futures.Future | None = dataclasses.field(default=None, repr=False, compare=False)
    # each sample's weight in F = (1/n) sum_i w_i f_i + h (n,), of mean 1 (`sample_weights`); None: all 1
    weights: torch.Tensor | None = None
    # heavy rows drawn k_i times an epoch (proxsgd/row_splits.py, `set_draws`): the rows an epoch
    # draws (n_draws of them; the coordinator's, not the workers'), r_i = (n_draws / n) / k_i (n,),
    # and a draw's weight in its batch w_i r_i (n,), so that a batch's mean stays unbiased for F's
    # gradient; None: each row drawn once, with its weight
    draws: np.ndarray | None = None
    draw_factors: torch.Tensor | None = None
    draw_weights: torch.Tensor | None = None

    @classmethod
    def from_array(
        cls,
        X,
        Y: np.ndarray,
        dtype=torch.float64,
        device="cpu",
        shared: bool = False,
        column_order=None,
        counts=None,
        weights: np.ndarray | None = None,
    ) -> LinearData:
        """X (dense, or sparse: kept CSR) and Y as tensors. `shared`: the arrays the workers read are
        also copied into shared memory beside the setup (for worker processes: `share_memory`).
        `column_order`: X's columns in this order (problem.feature_order; column j is X[:, order[j]]).
        `counts`: X's `column_counts` where the caller has them (the order was made from them).
        `weights`: the samples' weights (`sample_weights`), or None."""
        share = shared and torch.device(device).type == "cpu"
        data, transpose = cls._from_array(X, Y, dtype, device, column_order, share, counts)
        if weights is not None:
            data.weights = torch.as_tensor(_writable(weights), dtype=dtype, device=device)
        # (the copies first: the workers start after the setup, X^T is needed at the first evaluation;
        # sparse data in a column order on the CPU was written straight into shared arrays)
        if share and not (column_order is not None and sp.issparse(X)):
            data.sharing = _transposer().submit(_shared_copies, data._worker_fields())
        if transpose is not None:
            data.transposing = _transposer().submit(transpose)
        return data

    @classmethod
    def _from_array(
        cls, X, Y: np.ndarray, dtype, device, column_order=None, shared: bool = False, counts=None
    ) -> tuple[LinearData, Callable | None]:
        """The data, and what builds X^T's arrays when that is left to the setup's thread."""
        n, d = X.shape
        Yt = torch.as_tensor(_writable(Y), dtype=dtype, device=device)
        if not sp.issparse(X):
            X = X if column_order is None else np.asarray(X)[:, column_order]
            # (C order: the compiled kernels read its rows as one run of values, `row_arrays`)
            X = np.ascontiguousarray(_writable(X))
            return cls(n, d, Yt, torch.as_tensor(X, dtype=dtype, device=device)), None
        X = sp.csr_matrix(X)  # CSC arrives as CSR: a format change, still sparse
        narrow = np.int32 if max(X.nnz, n, d) <= np.iinfo(np.int32).max else np.int64
        if column_order is not None and torch.device(device).type == "cpu":
            return cls._in_order(X, Yt, np.asarray(column_order), dtype, narrow, shared, counts)
        X.sum_duplicates()
        if column_order is not None:  # (torch's products on other devices may want each row's columns in order)
            X = X[:, column_order].tocsr()

        def arrays(M, indptr=narrow):  # (the column indices narrow where they fit: 4 bytes an entry less)
            return (
                torch.as_tensor(M.indptr.astype(indptr, copy=False), device=device),
                torch.as_tensor(M.indices.astype(narrow, copy=False), device=device),
                torch.as_tensor(_writable(M.data), dtype=dtype, device=device),
            )

        rows = arrays(X, np.int64)
        product = None if narrow is np.int64 else torch.as_tensor(X.indptr.astype(narrow), device=device)
        if torch.device(device).type != "cpu":
            return cls(n, d, Yt, None, *rows, *arrays(X.T.tocsr()), product), None
        data = cls(n, d, Yt, None, *rows, None, None, None, product)
        return data, (lambda: arrays(X.T.tocsr())) if X.nnz <= TRANSPOSE_MAX_ENTRIES else None

    @classmethod
    def _in_order(cls, X: sp.csr_matrix, Yt: torch.Tensor, order: np.ndarray, dtype, narrow, shared: bool, counts=None):
        """X[:, order] with each row's columns ascending, written straight into the workers' arrays (in
        one shared-memory block with `shared`) by the compiled row sort, half the rows on the setup's
        thread and half here; and what builds X^T from it. The user's X is only read: duplicate
        entries, found by the sort, are summed on a copy. (Until session 25 the rows were sorted from
        X^T by a counting sort: X^T's transposition then held up the workers' start by ~5 s on 10^8
        entries; it now runs while the setup goes on and the workers start.)"""
        from asyncopt.proxsgd import fast

        n, d = X.shape
        position = _positions(order, d, narrow)
        fields = {
            "Y": Yt,
            "indptr": torch.as_tensor(X.indptr.astype(np.int64)),
            "indices": torch.empty(X.nnz, dtype=torch.int32 if narrow is np.int32 else torch.int64),
            "values": torch.empty(X.nnz, dtype=dtype),
        }
        out = _sort_target(fields, shared)
        bucket = _sort_buckets(column_counts(X) if counts is None else counts, order)
        rows = (X.indptr, _unsigned(X.indices), X.data, _unsigned(position), bucket, SORT_BUCKETS)
        into = (_unsigned(out["indices"].numpy()), out["values"].numpy())
        half = int(np.searchsorted(X.indptr, THREAD_SORT_SHARE * X.nnz))  # (rows split by entries)
        thread = _transposer().submit(fast.csr_rows_renumbered, *rows, *into, 0, half)
        duplicates = fast.csr_rows_renumbered(*rows, *into, half, n) + thread.result()
        if duplicates:
            X = X.copy()
            X.sum_duplicates()
            return cls._in_order(X, Yt, order, dtype, narrow, shared)
        product = None if narrow is np.int64 else torch.as_tensor(X.indptr.astype(narrow))
        data = cls(n, d, out["Y"], None, out["indptr"], out["indices"], out["values"], None, None, None, product)
        in_order = sp.csr_matrix((out["values"].numpy(), out["indices"].numpy(), X.indptr), shape=(n, d), copy=False)

        def transpose():
            T = in_order.T.tocsr()
            return (
                torch.as_tensor(T.indptr.astype(narrow, copy=False)),
                torch.as_tensor(T.indices.astype(narrow, copy=False)),
                torch.as_tensor(T.data),
            )

        return data, transpose if X.nnz <= TRANSPOSE_MAX_ENTRIES else None

    def _transposed(self) -> LinearData:
        """Self, with X^T in place (waits for the thread building it)."""
        if self.transposing is not None:
            self.t_indptr, self.t_indices, self.t_values = self.transposing.result()
            self.transposing = None
        return self

    def _scipy(self) -> sp.csr_matrix:
        """X as a scipy CSR matrix over the same arrays (no copy): the serial products'."""
        indptr, indices = self._product_index()
        return sp.csr_matrix((self.values.numpy(), indices.numpy(), indptr.numpy()), shape=(self.n, self.d), copy=False)

    def _serial(self, M: sp.spmatrix, B: torch.Tensor) -> torch.Tensor:
        """M @ B with scipy (one thread, no torch parallel region)."""
        out = M @ (B.numpy()[:, 0] if B.shape[1] == 1 else B.numpy())
        return torch.from_numpy(np.ascontiguousarray(out).reshape(M.shape[0], B.shape[1]))

    @staticmethod
    def _csr(indptr, indices, values, shape):
        with warnings.catch_warnings():  # torch notes that sparse CSR support is in beta
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(indptr, indices, values, shape, check_invariants=False)

    @property
    def nnz(self) -> int:
        """Stored entries of the data (n d when dense)."""
        return int(self.values.shape[0]) if self.sparse else self.n * self.d

    @property
    def sparse(self) -> bool:
        return self.dense is None

    @property
    def dtype(self) -> torch.dtype:
        return self.Y.dtype

    @property
    def device(self) -> torch.device:
        return self.Y.device

    def _worker_fields(self) -> dict[str, torch.Tensor]:
        names = ("Y", "dense", "indptr", "indices", "values", "weights", "draw_factors", "draw_weights")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def share_memory(self) -> None:
        """The arrays a worker reads moved to shared memory: the copies `from_array(shared=True)` made
        beside the setup when there are (numpy views of the old arrays keep reading the old arrays)."""
        if self.sharing is not None:
            for name, copy in self.sharing.result().items():
                setattr(self, name, copy)
            self.sharing = None
        for t in self.worker_tensors():
            t.share_memory_()  # (a no-op for the copies)

    def tensors(self) -> list[torch.Tensor]:
        self._transposed()
        fields = (
            self.Y,
            self.dense,
            self.indptr,
            self.indices,
            self.values,
            self.t_indptr,
            self.t_indices,
            self.t_values,
            self.product_indptr,
            self.weights,
            self.draw_factors,
            self.draw_weights,
        )
        return [t for t in fields if t is not None]

    def for_workers(self) -> LinearData:
        """What a worker reads (the minibatches' rows): X^T and the products' row pointers serve the
        coordinator's full passes only, so they are neither shared nor sent to worker processes."""
        return dataclasses.replace(
            self, t_indptr=None, t_indices=None, t_values=None, product_indptr=None, transposing=None, sharing=None,
            draws=None,
        )  # fmt: skip

    def worker_tensors(self) -> list[torch.Tensor]:
        return self.for_workers().tensors()

    def for_object_store(self) -> LinearData:
        """This data for pickling into Ray's object store: its CPU tensors travel as numpy arrays,
        which the actors of a node read in place (pickling.py). Read-only there: nothing writes
        into the data after the setup."""
        names = [f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]
        return arrays_of(self, names)

    def rows_subset(self, rows: torch.Tensor) -> LinearData:
        """Samples `rows` as data of their own (X's and Y's rows; no X^T): the power iteration's sample
        where the compiled passes, which read the rows in place, do not serve (dense data, GPUs)."""
        rows = rows.to(self.device)
        weights = None if self.weights is None else self.weights[rows]
        if not self.sparse:
            return LinearData(len(rows), self.d, self.Y[rows], self.dense[rows], weights=weights)
        batch = self.minibatch(rows)
        indptr = torch.zeros(len(rows) + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(self.indptr[rows + 1] - self.indptr[rows], 0, out=indptr[1:])
        product = indptr.to(torch.int32) if batch.cols.dtype == torch.int32 else None
        return LinearData(len(rows), self.d, self.Y[rows], None, indptr, batch.cols, batch.vals,
                          product_indptr=product, weights=weights)  # fmt: skip

    def minibatch(self, rows: torch.Tensor) -> MiniBatch:
        rows = rows.to(self.device)
        if not self.sparse:
            return MiniBatch(rows, dense=self.dense[rows])
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        local_row = torch.repeat_interleave(torch.arange(len(rows), device=self.device), lengths)
        # position of every stored entry: its row's start plus its offset within the row
        offsets = torch.arange(len(local_row), device=self.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        pos = starts[local_row] + offsets
        return MiniBatch(rows, local_row, self.indices[pos], self.values[pos])

    def batch_margins(self, batch: MiniBatch, weights: torch.Tensor) -> torch.Tensor:
        """X_batch @ weights (N x k), reading only the weight rows the batch touches."""
        if not self.sparse:
            return batch.dense @ weights
        pulled = weights[batch.cols]  # the pull: only the touched coordinates
        out = torch.zeros(batch.size, weights.shape[1], dtype=weights.dtype, device=weights.device)
        return out.index_add_(0, batch.local_row, batch.vals.unsqueeze(1) * pulled)

    def _product_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.product_indptr is None:  # (indices as wide as the row pointers)
            return self.indptr, self.indices
        return self.product_indptr, self.indices

    def margins(self, weights: torch.Tensor, serial: bool = False) -> torch.Tensor:
        """X @ weights on all samples; `serial`: on one thread (the setup's, beside X^T's transposition)."""
        if not self.sparse:
            return self.dense @ weights
        if serial and self.device.type == "cpu":
            return self._serial(self._scipy(), weights)
        threads = _PASS_THREADS.get()
        if threads is not None and self.device.type == "cpu":
            return _rows_product(*self._product_index(), self.values, weights, (self.n, self.d), threads)
        return self._csr(*self._product_index(), self.values, (self.n, self.d)) @ weights

    def transpose_product(self, D: torch.Tensor, serial: bool = False) -> torch.Tensor:
        """X^T @ D (d x k) on all samples; `serial`: a setup product, before the workers start: from X's
        rows on this thread, without waiting for X^T. Without X^T (above TRANSPOSE_MAX_ENTRIES on the
        CPU) always from X's rows, the setup's thread taking half unless torch is held to one thread
        at a drained point (the coordinator takes the workers' cores: one with one worker)."""
        if not self.sparse:  # (D^T X: a row-major product; X^T D took 4.7x longer on MNIST with 10 columns)
            return (D.T @ self.dense).T.contiguous()
        threads = _PASS_THREADS.get()
        if self.device.type == "cpu" and self._without_transpose():
            return self._rows_transpose_product(D, two_threads=serial or (threads or torch.get_num_threads()) >= 2)
        if self.device.type == "cpu" and serial:
            return self._serial(self._scipy().T, D)
        self._transposed()
        if threads is not None and self.device.type == "cpu":
            return _rows_product(self.t_indptr, self.t_indices, self.t_values, D, (self.d, self.n), threads)
        return self._csr(self.t_indptr, self.t_indices, self.t_values, (self.d, self.n)) @ D

    def _without_transpose(self) -> bool:
        """No X^T is built, nor being built (then the setup's thread is free for half of a product)."""
        return self.t_indptr is None and self.transposing is None

    def _rows_transpose_product(self, D: torch.Tensor, two_threads: bool) -> torch.Tensor:
        """X^T @ D by a compiled scatter from X's rows (no X^T): with `two_threads`, the setup's (idle
        without X^T) and this one over halves of the rows' entries, each into its own output."""
        from asyncopt.proxsgd import fast

        D = np.ascontiguousarray(D.numpy())
        args = (self.indptr.numpy(), _unsigned(self.indices.numpy()), self.values.numpy(), D)
        out = np.zeros((self.d, D.shape[1]), dtype=args[2].dtype)
        ahead = PREFETCH_AHEAD if out.nbytes >= PREFETCH_MIN_BYTES else 0
        if not two_threads:
            fast.csr_transpose_product(*args, out, 0, self.n, ahead)
            return torch.from_numpy(out)
        half = int(np.searchsorted(args[0], args[0][-1] // 2))
        other = np.zeros_like(out)
        job = _transposer().submit(fast.csr_transpose_product, *args, other, half, self.n, ahead)
        fast.csr_transpose_product(*args, out, 0, half, ahead)
        job.result()
        out += other
        return torch.from_numpy(out)

    def _row_list(self, rows: torch.Tensor | None) -> np.ndarray:
        """All samples, or the sorted `rows`, as the compiled setup passes take them."""
        return np.arange(self.n, dtype=np.int64) if rows is None else rows.numpy().astype(np.int64, copy=False)

    def column_sums(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """X^T 1 (d,), or X[rows]^T 1."""
        if rows is not None and not (self.sparse and self.device.type == "cpu"):
            return self.rows_subset(rows).column_sums()
        if not self.sparse:
            return self.dense.sum(0)
        if self.device.type == "cpu":  # (one compiled pass over the entries: no product)
            from asyncopt.proxsgd import fast

            sums = np.zeros(self.d, dtype=self.values.numpy().dtype)
            indices = _unsigned(self.indices.numpy())
            fast.csr_column_sums(self.indptr.numpy(), indices, self.values.numpy(), self._row_list(rows), sums)
            return torch.from_numpy(sums)
        return self.transpose_product(torch.ones(self.n, 1, dtype=self.dtype, device=self.device)).squeeze(1)

    def gram_product(
        self, v: torch.Tensor, shift: float = 0.0, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, float]:
        """(X^T u, sum(u)) for u = W (X v + shift) (v: d x 1; W the sample weights), over the samples
        `rows` (sorted) when given:
        a power iteration's two products. On the CPU one compiled pass over X's rows (those `rows`, read
        in place), without X^T: on this thread while X^T is being built on the setup's, else on both
        (halves of the rows, each into its own output)."""
        if rows is not None and not (self.sparse and self.device.type == "cpu"):
            return self.rows_subset(rows).gram_product(v, shift)
        if self.sparse and self.device.type == "cpu":
            from asyncopt.proxsgd import fast

            out = np.zeros(self.d, dtype=self.values.numpy().dtype)
            vec = np.ascontiguousarray(v.numpy()[:, 0], dtype=out.dtype)
            indptr, indices = self._product_index()
            arrays = (_unsigned(indptr.numpy()), _unsigned(indices.numpy()), self.values.numpy())
            arrays += (_float64_or_empty(self.weights),)
            row_list = self._row_list(rows)
            if not self._without_transpose() or len(row_list) < 2:
                total = fast.csr_gram_product(*arrays, row_list, vec, shift, out)
                return torch.from_numpy(out).reshape(-1, 1), float(total)
            half = len(row_list) // 2
            other = np.zeros_like(out)
            job = _transposer().submit(fast.csr_gram_product, *arrays, row_list[half:], vec, shift, other)
            total = fast.csr_gram_product(*arrays, row_list[:half], vec, shift, out) + job.result()
            out += other
            return torch.from_numpy(out).reshape(-1, 1), float(total)
        u = self.margins(v, serial=True) + shift
        if self.weights is not None:
            u = u * self.weights.unsqueeze(1)
        return self.transpose_product(u, serial=True), float(u.sum())

    def row_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, values) of X's rows for the compiled kernels (CPU): the CSR arrays, or for
        dense X its values as rows of d, with row pointers and no column indices (fast.py: dense rows)."""
        if self.sparse:
            return self.indptr.numpy(), self.indices.numpy(), self.values.numpy()
        dense = self.dense.numpy()
        if not dense.flags.c_contiguous:
            raise ValueError("dense data must be C-ordered for the compiled kernels")
        indptr = np.arange(self.n + 1, dtype=np.int64) * self.d
        return indptr, np.zeros(0, dtype=np.int32), dense.reshape(-1)

    @property
    def n_draws(self) -> int:
        """Rows an epoch draws: n, or more where heavy rows are drawn more than once (`draws`)."""
        return self.n if self.draws is None else len(self.draws)

    def set_draws(self, draws: np.ndarray, counts: np.ndarray) -> None:
        """Draw row i counts[i] times an epoch (`draws`: those rows), each draw weighted w_i r_i."""
        factors = (len(draws) / self.n) / counts.astype(np.float64)
        self.draws = draws
        self.draw_factors = torch.as_tensor(factors, dtype=self.dtype, device=self.device)
        self.draw_weights = self.weighted(self.draw_factors)

    @property
    def batch_weights(self) -> torch.Tensor | None:
        """A draw's weight in its batch (n,): w_i r_i, w_i without draws; None when all are 1."""
        return self.draw_weights if self.draw_weights is not None else self.weights

    def draw_weights_array(self) -> np.ndarray:
        """`batch_weights` as the compiled kernels take them: float64, empty when all are 1."""
        return _float64_or_empty(self.batch_weights)

    def draw_factored(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sample values (n,) times the draws' factors r_i (the values themselves without them)."""
        return values if self.draw_factors is None else values * self.draw_factors.to(values.dtype)

    def weighted(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sample values (n, ...) times the sample weights (the values themselves when all are 1)."""
        if self.weights is None:
            return values
        w = self.weights.to(values.dtype)
        return values * (w if values.dim() == 1 else w.reshape(-1, *([1] * (values.dim() - 1))))

    def row_sq_norms(self) -> torch.Tensor:
        """||a_i||^2 per sample (unweighted)."""
        if not self.sparse:  # (no n x d temporary of squares: 0.41 -> 0.03 s on MNIST's 60,000 x 784)
            return torch.einsum("ij,ij->i", self.dense, self.dense)
        if self.device.type == "cpu":
            from asyncopt.proxsgd import fast  # (the compiled kernels, loaded on first use)

            out = np.empty(self.n, dtype=self.values.numpy().dtype)
            fast.csr_row_sq_norms(self.indptr.numpy(), self.values.numpy(), out)
            return torch.from_numpy(out)
        # the squares times a column of ones: one sparse product (4x faster than a scatter over the rows)
        squares = self._csr(*self._product_index(), self.values * self.values, (self.n, self.d))
        return (squares @ torch.ones(self.d, 1, dtype=self.dtype, device=self.device)).squeeze(1)
