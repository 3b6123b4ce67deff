"""Compiled (numba) kernels for a worker's step on CPU.

A ProxSGD update touches a few thousand numbers; done with torch on CPU, the ~25 tensor
operations of a step cost ~250 us of dispatch overhead for ~5 us of arithmetic. These loops do
the minibatch margins, the block gradient and the L1 prox in three calls. They are used when the
data lives on the CPU; the torch code in data.py / prox.py stays the reference (and the path on
other devices), and tests check that both give the same updates.
"""

from __future__ import annotations

import types

import llvmlite.ir as llvm_ir
import numpy as np
from numba import njit
from numba import types as numba_types
from numba.core import cgutils
from numba.extending import intrinsic

from asyncopt.proxsgd.block_prox import general_apply, listed, stepped
from asyncopt.proxsgd.scalar_prox import l2_shrink, row_weight, soft
from asyncopt.proxsgd.stepsize import delay_factor


@intrinsic
def prefetch_row(typingctx, array, row):
    """Hint the CPU to load array[row, 0] (or array[row]) into its caches (LLVM's prefetch: read,
    high locality): the gathers of a sparse product miss the caches at random rows."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array_value = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(numba_types.intp, 0)
        row_index = context.cast(builder, args[1], signature.args[1], numba_types.intp)
        where = [row_index] + [zero] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(context, builder, array_type, array_value, where, wraparound=False)
        byte_pointer = llvm_ir.IntType(8).as_pointer()
        int32 = llvm_ir.IntType(32)
        function_type = llvm_ir.FunctionType(llvm_ir.VoidType(), [byte_pointer, int32, int32, int32])
        prefetch = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0i8")
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return numba_types.void(array, row), codegen


# Dense X runs through the same kernels as "dense rows": row i's entries are values[indptr[i]:indptr[i + 1]]
# for columns 0, 1, ..., with no column indices (an empty `indices`: LinearData.row_arrays), so the
# compiled task loop serves dense data without a copy of X. Only the worker-side kernels that read X
# (csr_batch_margins, csr_block_gradient) take them; the servers see (row, value) pairs either way.


@njit(cache=True, nogil=True, inline="always")
def entry_column(indices, p, start):
    """The column of entry p of a row starting at `start`: indices[p], or p - start for dense rows."""
    return indices[p] if indices.shape[0] > 0 else p - start


# Dense rows: a batch of at least this many entries (rows x columns) is gathered into a C-ordered copy
# and multiplied by BLAS (numba's np.dot: scipy's OpenBLAS, held to the worker's threads by the engines).
# One thread, 784 columns (MNIST): 3-5x faster than the loops below at batches 32-928, 1 and 10 outputs;
# at 8 columns and 32 rows the loops win (4 against 6 us), from 26 columns BLAS (scratch timings, session 33).
DENSE_BLAS_MIN_ENTRIES = 1024


@njit(cache=True, nogil=True)
def dense_rows_gathered(values, d, rows, lo, hi, dtype_of):
    """Columns lo..hi-1 of the dense rows `rows` (each d values long) as a C-ordered (len(rows), hi - lo)
    array of `dtype_of`'s dtype: BLAS's operand."""
    out = np.empty((rows.shape[0], hi - lo), dtype=dtype_of.dtype)
    for r in range(rows.shape[0]):
        start = rows[r] * d + lo
        out[r] = values[start : start + hi - lo]
    return out


@njit(cache=True, nogil=True)
def csr_batch_margins(indptr, indices, values, rows, W):
    """Z = X[rows] @ W for CSR X (or dense rows); reads only the rows of W the batch touches (the pull)."""
    d = W.shape[0]
    if indices.shape[0] == 0 and rows.shape[0] * d >= DENSE_BLAS_MIN_ENTRIES:
        return np.dot(dense_rows_gathered(values, d, rows, 0, d, W), np.ascontiguousarray(W))
    k = W.shape[1]
    Z = np.zeros((rows.shape[0], k), dtype=W.dtype)
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = entry_column(indices, p, indptr[i])
            v = values[p]
            for j in range(k):
                Z[r, j] += v * W[c, j]
    return Z


@njit(cache=True, nogil=True)
def csr_columns_read(indptr, indices, rows, mark, d, with_last):
    """The sorted columns the CSR rows `rows` touch (and d, the intercept row, with `with_last`):
    the parameter rows a step on them reads. `mark` (at least d + 1 bools, all False) is scratch,
    False again on return. O(entries + d): marks, then one scan (a sort of the columns found cost
    2.5x more on news20's 2048-sample batches)."""
    count = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            if not mark[c]:
                mark[c] = True
                count += 1
    if with_last and not mark[d]:
        mark[d] = True
        count += 1
    out = np.empty(count, dtype=np.int64)
    q = 0
    for c in range(d + 1):
        if mark[c]:
            out[q] = c
            mark[c] = False
            q += 1
    return out


@njit(cache=True, nogil=True)
def csr_block_gradient(indptr, indices, values, rows, D, lo, hi):
    """The entries of X[rows][:, lo:hi]^T @ D as (parameter row, value) pairs (duplicates add up); for
    dense rows one pair per column lo..hi-1, summed over the batch."""
    if indices.shape[0] == 0:
        return _dense_block_gradient(indptr, values, rows, D, lo, hi)
    count = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            if lo <= indices[p] < hi:
                count += 1
    k = D.shape[1]
    index = np.empty(count, dtype=np.int64)
    out = np.empty((count, k), dtype=D.dtype)
    q = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            if lo <= c < hi:
                index[q] = c
                for j in range(k):
                    out[q, j] = values[p] * D[r, j]
                q += 1
    return index, out


@njit(cache=True, nogil=True)
def _dense_block_gradient(indptr, values, rows, D, lo, hi):
    """csr_block_gradient for dense rows: X[rows][:, lo:hi]^T @ D as the pairs (c, its sum), c = lo..hi-1."""
    k = D.shape[1]
    index = np.arange(lo, hi).astype(np.int64)
    width = hi - lo
    if rows.shape[0] * width >= DENSE_BLAS_MIN_ENTRIES:
        d = indptr[1] - indptr[0]
        return index, np.dot(dense_rows_gathered(values, d, rows, lo, hi, D).T, np.ascontiguousarray(D))
    out = np.zeros((hi - lo, k), dtype=D.dtype)
    for r in range(rows.shape[0]):
        start = indptr[rows[r]] + lo
        if k == 1:  # (one output: an axpy over the row, which LLVM vectorizes)
            a = D[r, 0]
            for c in range(width):
                out[c, 0] += values[start + c] * a
            continue
        for c in range(width):
            v = values[start + c]
            for j in range(k):
                out[c, j] += v * D[r, j]
    return index, out


@njit(cache=True, nogil=True)
def group_by_block(index, values, bounds):
    """The (row, value) pairs reordered by block (bounds: the blocks' first rows, then d), stably (a
    row's pairs keep their order, so they add up in the same order): a full push's pairs for block b
    are then one run of positions, which its server finds by bisection (block_pairs) instead of
    scanning every pair twice per block."""
    M = bounds.shape[0] - 1
    m = index.shape[0]
    block = np.empty(m, dtype=np.int64)
    starts = np.zeros(M + 1, dtype=np.int64)
    for q in range(m):
        lo, hi = 0, M  # the block b with bounds[b] <= index[q] < bounds[b + 1]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if index[q] >= bounds[mid]:
                lo = mid
            else:
                hi = mid
        block[q] = lo
        starts[lo + 1] += 1
    for b in range(M):
        starts[b + 1] += starts[b]
    out_index = np.empty_like(index)
    out_values = np.empty_like(values)
    for q in range(m):
        b = block[q]
        p = starts[b]
        out_index[p] = index[q]
        for j in range(values.shape[1]):
            out_values[p, j] = values[q, j]
        starts[b] = p + 1
    return out_index, out_values


@njit(cache=True, nogil=True, inline="always")
def _first_at_least(index, row):
    """The first position whose row is >= `row` in pairs grouped by block (rows of lower blocks first)."""
    a, b = 0, index.shape[0]
    while a < b:
        mid = (a + b) // 2
        if index[mid] < row:
            a = mid + 1
        else:
            b = mid
    return a


@njit(cache=True, nogil=True)
def block_pairs(index, lo, hi):
    """(first, stop): the positions of the pairs with lo <= row < hi in pairs grouped by block
    (group_by_block), by bisection: rows below lo all come before them, rows from hi on after."""
    return _first_at_least(index, lo), _first_at_least(index, hi)


@njit(cache=True, nogil=True)
def csr_row_sq_norms(indptr, values, out):
    """out[i] = ||x_i||^2 for CSR X, without the n-entry temporary of squares (8 ms -> 2 ms on news20)."""
    for i in range(out.shape[0]):
        s = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            s += values[p] * values[p]
        out[i] = s


@njit(cache=True, nogil=True)
def csr_column_sums(indptr, indices, values, rows, out):
    """out[c] += sum of column c's entries in the rows `rows` (X[rows]^T 1 for CSR X): on news20 3 ms
    against 6 for np.bincount, which first widens the int32 column indices."""
    for r in range(rows.shape[0]):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            out[indices[p]] += values[p]


@njit(cache=True, nogil=True)
def csr_column_counts(indices, out):
    """out[c] += the stored entries of column c (CSR indices)."""
    for p in range(indices.shape[0]):
        out[indices[p]] += 1


@njit(cache=True, nogil=True)
def csr_column_range(indptr, indices, values, lo, hi):
    """X[:, lo:hi] of a CSR X as CSR over every row, with X's column numbers and each row's entries
    in X's order: a count pass, then a copy pass. (A Ray block server's columns: on 99M entries,
    numpy's masks and cumulative sums took 4.7 s a block.)"""
    n = indptr.shape[0] - 1
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        kept = 0
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            if c >= lo and c < hi:
                kept += 1
        out_ptr[i + 1] = out_ptr[i] + kept
    out_indices = np.empty(out_ptr[n], dtype=indices.dtype)
    out_values = np.empty(out_ptr[n], dtype=values.dtype)
    for i in range(n):
        q = out_ptr[i]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            if c >= lo and c < hi:
                out_indices[q] = c
                out_values[q] = values[p]
                q += 1
    return out_ptr, out_indices, out_values


@njit(cache=True, nogil=True)
def csr_column_square_sums(indices, values, counts, out):
    """counts[c] += column c's stored entries, out[c] += the sum of their squares (CSR indices, values)."""
    for p in range(indices.shape[0]):
        c = indices[p]
        counts[c] += 1
        out[c] += values[p] * values[p]


@njit(cache=True, nogil=True)
def csr_rows_renumbered(indptr, indices, values, position, bucket, n_buckets, out_indices, out_values, lo, hi):
    """Rows lo..hi-1 of X with column c renumbered position[c], each row's columns ascending, into the
    caller's (shared) arrays at the same offsets; returns the pairs of equal columns met in a row
    (duplicate entries, which the caller sums). `bucket[c]` (0..n_buckets-1, non-decreasing in
    position[c]) cuts the new columns into ranges holding about as many entries each: a counting sort
    of each row by bucket puts its entries nearly in order (about one a bucket), and an insertion sort
    finishes (linear where nothing is out of place). On the large benchmark problem's rows (50
    entries, not sorted by the user's column) 0.33-0.35 s per 5*10^5 rows with 64 buckets, against
    0.79-0.92 s for a comparison sort of each row (session 25's kernel), the same output."""
    count = np.zeros(n_buckets + 1, dtype=np.int64)
    duplicates = 0
    for i in range(lo, hi):
        start, stop = indptr[i], indptr[i + 1]
        count[:] = 0
        for p in range(start, stop):
            count[bucket[indices[p]] + 1] += 1
        for b in range(n_buckets):
            count[b + 1] += count[b]
        for p in range(start, stop):
            c = indices[p]
            q = start + count[bucket[c]]
            count[bucket[c]] += 1
            out_indices[q] = position[c]
            out_values[q] = values[p]
        for q in range(start + 1, stop):
            key = out_indices[q]
            if key >= out_indices[q - 1]:
                duplicates += key == out_indices[q - 1]
                continue
            value = out_values[q]
            r = q
            while r > start and out_indices[r - 1] > key:
                out_indices[r] = out_indices[r - 1]
                out_values[r] = out_values[r - 1]
                r -= 1
            out_indices[r] = key
            out_values[r] = value
            duplicates += r > start and out_indices[r - 1] == key
    return duplicates


@njit(cache=True, nogil=True, inline="always")
def _row_dot(indptr, indices, values, W, i, j, ahead, last):
    """M[i] @ W[:, j], prefetching W's row of the entry `ahead` places on (none with ahead 0)."""
    s = 0.0
    if ahead:
        for p in range(indptr[i], indptr[i + 1]):
            if p + ahead < last:
                prefetch_row(W, indices[p + ahead])
            s += values[p] * W[indices[p], j]
    else:
        for p in range(indptr[i], indptr[i + 1]):
            s += values[p] * W[indices[p], j]
    return s


@njit(cache=True, nogil=True)
def csr_rows_product(indptr, indices, values, W, out, lo, hi, ahead):
    """out[lo:hi] = M[lo:hi] @ W for CSR M (X for the margins, X^T for the gradient), rows lo..hi-1: a
    drained pass's product on one of the coordinator's threads (data.pass_threads), each over its own
    rows. With `ahead` > 0 the row of W that the entry `ahead` places on gathers is prefetched (W
    beyond the caches: data.PREFETCH_MIN_BYTES). Two columns have their own loop, the sums held in
    registers."""
    last = indptr[hi]
    if W.shape[1] == 2:
        for i in range(lo, hi):
            a = b = 0.0
            if ahead:
                for p in range(indptr[i], indptr[i + 1]):
                    if p + ahead < last:
                        prefetch_row(W, indices[p + ahead])
                    c, v = indices[p], values[p]
                    a += v * W[c, 0]
                    b += v * W[c, 1]
            else:
                for p in range(indptr[i], indptr[i + 1]):
                    c, v = indices[p], values[p]
                    a += v * W[c, 0]
                    b += v * W[c, 1]
            out[i, 0], out[i, 1] = a, b
        return
    if W.shape[1] == 1:
        for i in range(lo, hi):
            out[i, 0] = _row_dot(indptr, indices, values, W, i, 0, ahead, last)
        return
    for i in range(lo, hi):
        for j in range(W.shape[1]):
            out[i, j] = _row_dot(indptr, indices, values, W, i, j, ahead, last)


@njit(cache=True, nogil=True)
def csr_transpose_product(indptr, indices, values, D, out, lo, hi, ahead=0):
    """out += X[lo:hi]^T D[lo:hi] for CSR X (D n x k, out d x k), a scatter from the rows: the full
    passes' X^T D where X^T is not built (data.TRANSPOSE_MAX_ENTRIES). One or two columns (the
    gradient, and the curvature probe) have their own loops, the row's coefficients held in
    registers: on 10^8 entries, two threads over halves of the rows match torch's product of X^T
    (0.29-0.37 s against 0.30-0.34 s for 2 columns; the generic loop took 0.49-0.84 s). With `ahead`
    > 0 the row of `out` that the entry `ahead` places on scatters to is prefetched."""
    k = D.shape[1]
    last = indptr[hi]
    if k == 1:
        for i in range(lo, hi):
            a = D[i, 0]
            for p in range(indptr[i], indptr[i + 1]):
                if ahead and p + ahead < last:
                    prefetch_row(out, indices[p + ahead])
                out[indices[p], 0] += values[p] * a
    elif k == 2:
        for i in range(lo, hi):
            a, b = D[i, 0], D[i, 1]
            for p in range(indptr[i], indptr[i + 1]):
                if ahead and p + ahead < last:
                    prefetch_row(out, indices[p + ahead])
                c, v = indices[p], values[p]
                out[c, 0] += v * a
                out[c, 1] += v * b
    else:
        for i in range(lo, hi):
            for p in range(indptr[i], indptr[i + 1]):
                if ahead and p + ahead < last:
                    prefetch_row(out, indices[p + ahead])
                c, v = indices[p], values[p]
                for j in range(k):
                    out[c, j] += v * D[i, j]


@njit(cache=True, nogil=True)
def csr_gram_product(indptr, indices, values, sw, rows, v, shift, out):
    """out += X_S^T W (X_S v + shift) for the rows S = `rows` of CSR X in one pass over them (a power
    iteration's products: each row is read once, its scatter from cache, and a sample of the rows
    needs no copy); W the sample weights `sw` (empty: all 1); returns sum_{i in S} w_i (x_i . v +
    shift), the intercept's part."""
    total = 0.0
    weighted = sw.shape[0] > 0
    for r in range(rows.shape[0]):
        i = rows[r]
        u = shift
        for p in range(indptr[i], indptr[i + 1]):
            u += values[p] * v[indices[p]]
        if weighted:
            u *= sw[i]
        for p in range(indptr[i], indptr[i + 1]):
            out[indices[p]] += u * values[p]
        total += u
    return total


@njit(cache=True, nogil=True)
def soft_step(v, a, eta, t, positive, rw, lo, l2):
    """In place: soft(v - eta a, t, positive) (times l2_shrink where the penalty has an L2 part) on
    every entry (a: the summed gradient, 0 off the pairs); v holds rows lo.. of the parameters, row
    r's threshold t * row_weight(rw, lo + r)."""
    if rw.shape[0] == 0:  # (the flat loop: one threshold)
        flat, g = v.reshape(-1), a.reshape(-1)
        shrink = l2_shrink(eta, l2, 1.0)
        for q in range(flat.shape[0]):
            flat[q] = soft(flat[q] - eta * g[q], t, positive) * shrink
        return
    for r in range(v.shape[0]):
        tr, shrink = t * rw[lo + r], l2_shrink(eta, l2, rw[lo + r])
        for j in range(v.shape[1]):
            v[r, j] = soft(v[r, j] - eta * a[r, j], tr, positive) * shrink


@njit(cache=True, nogil=True)
def soft_step_shifted(v, a, mu, eta, t, positive, rw, lo, l2):
    """In place: soft(v - eta (a + mu), t, positive) on every entry (thresholds and L2 as soft_step's)."""
    if rw.shape[0] == 0:
        flat, g, m = v.reshape(-1), a.reshape(-1), mu.reshape(-1)
        shrink = l2_shrink(eta, l2, 1.0)
        for q in range(flat.shape[0]):
            flat[q] = soft(flat[q] - eta * (g[q] + m[q]), t, positive) * shrink
        return
    for r in range(v.shape[0]):
        tr, shrink = t * rw[lo + r], l2_shrink(eta, l2, rw[lo + r])
        for j in range(v.shape[1]):
            v[r, j] = soft(v[r, j] - eta * (a[r, j] + mu[r, j]), tr, positive) * shrink


# -- lazy (just-in-time) updates for sparse data -----------------------------------------------
# Between two evaluation points the step is constant, so every server update applies the same map
# T(x) = soft(x - a, b), a = eta mu_i (the SVRG anchor's gradient, 0 without it), b = eta alpha,
# to each coordinate of its block that the minibatch does not touch. Those coordinates are left
# as they are and T is applied k times in closed form when the coordinate is next read or written
# (k = the block's update count minus the coordinate's own count), and for all at the next flush.
# An update then costs O(nnz of the minibatch), not O(block size).


@njit(cache=True, nogil=True)
def repeat_soft(x, a, b, k):
    """T^k(x) for T(x) = sign(x - a) max(|x - a| - b, 0), b >= 0, in O(1): at most three phases
    (moving at a constant rate towards 0, the step that lands on or crosses 0, the drift after)."""
    while k > 0:
        if x == 0.0:
            v = -a
            if abs(v) <= b:
                return 0.0  # 0 is a fixed point
            x = v - b if v > 0 else v + b
            k -= 1
            continue
        s = 1.0 if x > 0 else -1.0
        y, c = s * x, s * a  # mirror so that y > 0; one step maps y -> y - c - b while y - c > b
        rate = c + b
        if rate <= 0.0:
            return s * (y - k * rate)  # moving away from 0 (or standing): it never reaches it
        steps_left = y / rate - 1.0  # full steps that keep y - c > b: ceil of this
        if steps_left > k - 1:  # ceil(steps_left) >= k: every one of the k steps is a full one
            return s * (y - k * rate)
        m = int(np.ceil(steps_left)) if steps_left > 0.0 else 0
        y -= m * rate
        k -= m
        v = y - c  # now v <= b: one step lands on 0 or crosses it
        k -= 1
        if v >= -b:
            x = 0.0
        else:
            x = s * (v + b)
    return x


@njit(cache=True, nogil=True)
def lazy_batch_margins(indptr, indices, values, rows, W, mu, eta, thr, ticks, last, block_of, has_mu, one_block, rw):
    """Z = X[rows] @ W where each W row read is first brought up to date (not written back). Lazy
    updates are for wide data, where W, `last` and mu exceed the caches and a batch's rows lie far
    apart: two rows ahead the row's entries are prefetched, one row ahead the rows of W, last and mu
    they will read (on the 2*10^6 x 10^6 problem, a worker's update 209-220 us against 250 us with one
    worker, 153-201 against 232-254 with two: benchmarks/proxsgd_large_update_cost.py)."""
    k = W.shape[1]
    Z = np.zeros((rows.shape[0], k), dtype=W.dtype)
    row = np.empty(k, dtype=W.dtype)
    m = rows.shape[0]
    for r in range(m):
        i = rows[r]
        if r + 2 < m:  # (the batch's rows are far apart: their entries, then what they read, ahead)
            far = rows[r + 2]
            for p in range(indptr[far], indptr[far + 1], 8):
                prefetch_row(indices, p)
                prefetch_row(values, p)
        if r + 1 < m:
            near = rows[r + 1]
            for p in range(indptr[near], indptr[near + 1]):
                c = indices[p]
                prefetch_row(W, c)
                prefetch_row(last, c)
                if has_mu:
                    prefetch_row(mu, c)
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            for j in range(k):  # the row before its tick (lazy_apply writes them in the other order)
                row[j] = W[c, j]
            behind = ticks[block_of[c] if one_block == 0 else 0] - last[c]
            v = values[p]
            for j in range(k):
                w = row[j]
                if behind > 0 and (w != 0.0 or has_mu):  # 0 stays 0 under T when there is no mu
                    w = repeat_soft(w, eta * mu[c, j] if has_mu else 0.0, thr * row_weight(rw, c), behind)
                Z[r, j] += v * w
    return Z


@njit(cache=True, nogil=True)
def lazy_apply(P, index, values, eta, thr, mu, ticks, last, block_of, first_block, last_block, slot, rw):
    """One server update of blocks first_block..last_block: for each touched row, catch up, then
    x <- soft(x - eta (g + mu), eta alpha); untouched rows fall one more tick behind.

    Each touched row is computed aside and written once, its final value, its tick marked current
    just before: a lock-free reader never sees a half-updated row (stepped, prox pending) nor a
    marker in `last` (the old code's, which a reader took as ~2t ticks behind). `slot` (-1 for
    every row; the server's scratch, never read by workers) gives a row its place in the update;
    duplicate rows of `index` are taken in their order, the arithmetic of one-by-one pairs. With
    first_block == last_block every pair must lie in that block (as a server applies its part): its
    count is used without reading block_of at each row (5-8% of a lazy update with one block)."""
    k = P.shape[1]
    m = index.shape[0]
    rows = np.empty(m, dtype=np.int64)
    x = np.empty((m, k), dtype=P.dtype)
    n = 0
    one = first_block == last_block  # (every pair in one block, as servers apply: its count, no row lookup)
    for q in range(m):
        c = index[q]
        s = slot[c]
        if s < 0:  # first pair of this row: catch it up
            s = n
            slot[c] = s
            rows[s] = c
            n += 1
            behind = ticks[first_block if one else block_of[c]] - last[c]
            tc = thr * row_weight(rw, c)
            for j in range(k):
                x[s, j] = repeat_soft(P[c, j], eta * mu[c, j], tc, behind) if behind > 0 else P[c, j]
        for j in range(k):
            x[s, j] -= eta * values[q, j]
    for s in range(n):  # the prox of this tick, then the row, once
        c = rows[s]
        # its tick before the row: a reader that sees the new row then sees its tick (x86-TSO); one
        # that sees the new tick and the old row reads it stale, as held
        last[c] = ticks[first_block if one else block_of[c]] + 1
        tc = thr * row_weight(rw, c)
        for j in range(k):
            P[c, j] = soft(x[s, j] - eta * mu[c, j], tc, False)
        slot[c] = -1
    for b in range(first_block, last_block + 1):
        ticks[b] += 1


@njit(cache=True, nogil=True)
def lazy_flush(P, mu, eta, thr, ticks, last, block_of, rw):
    """Bring every row up to date and restart the counts (with no update in flight)."""
    k = P.shape[1]
    for c in range(block_of.shape[0]):
        behind = ticks[block_of[c]] - last[c]
        if behind > 0:
            for j in range(k):
                P[c, j] = repeat_soft(P[c, j], eta * mu[c, j], thr * row_weight(rw, c), behind)
        last[c] = 0
    ticks[:] = 0


# -- the whole step in two calls (sparse data or dense rows; elementwise losses and softmax) -----
# With the margins, the loss derivative, the SVRG correction, the block gradient and the intercept
# in one kernel, and the server's rule (anchor mean, gradient step, L1 prox, intercept) in another,
# a step costs a few microseconds of dispatch instead of the ~300 us of ~25 torch operations.

# losses.py's losses: the first four elementwise, the multinomial (softmax cross-entropy) on a sample's row
LOSS_CODES = {"logistic": 0, "squared": 1, "smoothed_hinge": 2, "sigmoid": 3, "multinomial": 4}
SOFTMAX = 4


@njit(cache=True, nogil=True)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@njit(cache=True, nogil=True)
def loss_derivative(z, y, code):
    """d loss / d z for the elementwise losses of losses.py (same formulas)."""
    if code == 0:  # logistic
        return -y * _sigmoid(-y * z)
    if code == 1:  # squared
        return z - y
    if code == 2:  # smoothed hinge
        m = 1.0 - y * z
        return -y * (0.0 if m < 0.0 else (1.0 if m > 1.0 else m))
    s = _sigmoid(-y * z)  # sigmoid loss
    return -y * s * (1.0 - s)


@njit(cache=True, nogil=True)
def batch_coefficients(Y, rows, Z, code, snap_D, has_vr, sw):
    """From the batch margins Z (intercept included): the samples' coefficients D = w (loss'(Z) -
    D~[rows]) / N, written over Z (the batch's gradient is X[rows]^T D), the intercept gradient sum(D),
    and whether Z was finite. loss' is elementwise, or softmax(Z's row) - Y's row for the multinomial;
    w: the sample weights `sw` (empty: all 1)."""
    N, k = Z.shape
    finite = True
    weighted = sw.shape[0] > 0
    for r in range(N):
        i = rows[r]
        scale = (sw[i] if weighted else 1.0) / N
        total = 1.0
        if code == SOFTMAX:  # softmax(z) - y over the row, shifted by its largest margin (no overflow)
            top = Z[r, 0]
            for j in range(k):
                if not np.isfinite(Z[r, j]):
                    finite = False
                top = max(top, Z[r, j])
            total = 0.0
            for j in range(k):  # (Z's row holds exp(z - top) until the next loop)
                Z[r, j] = np.exp(Z[r, j] - top)
                total += Z[r, j]
        for j in range(k):
            z = Z[r, j]
            if code == SOFTMAX:
                g = z / total - Y[i, j]
            else:
                if not np.isfinite(z):
                    finite = False
                g = loss_derivative(z, Y[i, j], code)
            if has_vr:
                g -= snap_D[i, j]
            Z[r, j] = g * scale
    intercept = np.zeros(k, dtype=Z.dtype)
    for r in range(N):
        for j in range(k):
            intercept[j] += Z[r, j]
    return intercept, finite


@njit(cache=True, nogil=True)
def sparse_block_step(indptr, indices, values, Y, rows, Z, code, snap_D, has_vr, lo, hi, sw):
    """From the batch margins Z (intercept included): the coefficients D (batch_coefficients, over
    Z; sw the sample weights), the block gradient as (row, value) pairs of X[rows][:, lo:hi]^T D,
    the intercept gradient sum(D), and whether Z was finite."""
    intercept, finite = batch_coefficients(Y, rows, Z, code, snap_D, has_vr, sw)
    index, out = csr_block_gradient(indptr, indices, values, rows, Z, lo, hi)
    return index, out, intercept, finite


@njit(cache=True, nogil=True)
def sparse_step(indptr, indices, values, Y, rows, P, code, snap_D, has_vr, lo, hi, sw):
    """sparse_block_step from the parameters P (coefficient rows, then the intercept row): the pull,
    the margins and the block gradient in one call."""
    d = P.shape[0] - 1
    Z = csr_batch_margins(indptr, indices, values, rows, P[:d])
    for r in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[r, j] += P[d, j]
    return sparse_block_step(indptr, indices, values, Y, rows, Z, code, snap_D, has_vr, lo, hi, sw)


@njit(cache=True, nogil=True)
def dense_blas_step(values, Y, rows, P, code, snap_D, has_vr, lo, hi, sw):
    """sparse_step for a batch of dense rows by BLAS, the rows gathered once for both products (the
    margins, then the gradient: gathering them twice cost MNIST's batches of 928 x 784 about 1.5 ms of
    4-7): (index lo..hi-1, X[rows][:, lo:hi]^T D, the intercept gradient, finite)."""
    d = P.shape[0] - 1
    Xb = dense_rows_gathered(values, d, rows, 0, d, P)
    Z = np.dot(Xb, np.ascontiguousarray(P[:d]))
    for r in range(Z.shape[0]):
        for c in range(Z.shape[1]):
            Z[r, c] += P[d, c]
    intercept, finite = batch_coefficients(Y, rows, Z, code, snap_D, has_vr, sw)
    index = np.arange(lo, hi).astype(np.int64)
    if lo == 0 and hi == d:
        return index, np.dot(Xb.T, Z), intercept, finite
    return index, np.dot(np.ascontiguousarray(Xb[:, lo:hi]).T, Z), intercept, finite


@njit(cache=True, nogil=True, inline="always")
def intercept_step(P, intercept, eta, mu, has_mu):
    """The intercept server's rule: the last row of P (unpenalized) takes eta (its gradient + its mu)."""
    d = P.shape[0] - 1
    for j in range(P.shape[1]):
        P[d, j] -= eta * (intercept[j] + (mu[d, j] if has_mu else 0.0))


@njit(cache=True, nogil=True)
def eager_l1_apply(P, index, values, eta, thr, positive, mu, has_mu, lo, hi, intercept, has_intercept, acc, rw, l2):
    """The server's rule on rows lo..hi of P: x <- soft(x - eta (g + mu), thr) (thr = eta alpha; 0
    for no penalty; row c's times row_weight(rw, c); times l2_shrink with an L2 part, l2 its weight:
    elastic net, L2), g given as (row, value) pairs (those outside
    lo..hi are skipped; duplicates add up); rows without a pair take only mu and the prox. The
    intercept (the last row, unpenalized) takes eta (its gradient + its mu).

    Each row is written once, its final value, so a lock-free reader sees a row as held before or
    after the update, never stepped and not yet proxed: the pairs are summed aside in `acc` (the
    applying worker's scratch, at least hi - lo rows, zero between updates: row c's sum in acc[c -
    lo]), then one pass writes soft(x - eta (acc + mu)) and the touched rows of acc are cleared."""
    k = P.shape[1]
    if acc.shape[0] < hi - lo or acc.shape[1] != k:  # (numba does not check bounds: a small one would corrupt memory)
        raise ValueError("eager_l1_apply: the scratch has fewer rows than the block")
    if has_intercept:
        intercept_step(P, intercept, eta, mu, has_mu)
    for q in range(index.shape[0]):
        c = index[q]
        if lo <= c < hi:  # a full push's pairs go to each block's server in turn
            for j in range(k):
                acc[c - lo, j] += values[q, j]
    if has_mu:  # the anchor's mean, the step and the prox in one pass over the block
        soft_step_shifted(P[lo:hi], acc[: hi - lo], mu[lo:hi], eta, thr, positive, rw, lo, l2)
    elif thr > 0.0 or positive or l2 != 0.0:
        soft_step(P[lo:hi], acc[: hi - lo], eta, thr, positive, rw, lo, l2)
    else:  # no prox: only the touched rows change (each written once: later pairs of a row find 0)
        for q in range(index.shape[0]):
            c = index[q]
            if lo <= c < hi:
                for j in range(k):
                    P[c, j] -= eta * acc[c - lo, j]
                    acc[c - lo, j] = 0.0
        return
    for q in range(index.shape[0]):
        c = index[q]
        if lo <= c < hi:
            for j in range(k):
                acc[c - lo, j] = 0.0


# -- eager updates over a block's support (sparse data, L1 or no penalty) ---------------------------
# soft(0 - eta (0 + mu_c), eta alpha) is exactly 0 when |mu_c| <= alpha (mu_c >= -alpha with
# positive): rounding is monotone and symmetric, so for every step eta. A row at 0 that no pair
# touches then stays at 0, and an eager update needs to visit only the block's support: the rows
# that may be non-zero, or that the anchor's mean moves off 0, and the pairs' rows. The support is
# block state (written under the block server's lock, shared like the parameters): `rows` lists
# it in the block's own range of positions, `member` marks its rows, and the block's line of
# `state` holds [count, mode]. On news20 (130k columns, ~300-3,500 non-zero) the sweep was ~80% of
# an update. Mode SUPPORT_REBUILD (set at drained points: `invalidate_support`, when the anchor or
# the parameters change outside the kernel) sweeps the block and lists its support; a support over
# SUPPORT_DENSE_FRACTION of the block sweeps (SUPPORT_DENSE) until the next drained point.
SUPPORT_REBUILD, SUPPORT_SPARSE, SUPPORT_DENSE = 0, 1, 2
SUPPORT_DENSE_FRACTION = 0.25  # a visit of a listed row costs a few sweep entries (random access)


@njit(cache=True, nogil=True, inline="always")
def _anchor_moves(mu, c, k, alpha, positive):
    """The anchor's mean alone moves row c off 0 (a NaN counts as moving)."""
    for j in range(k):
        m = mu[c, j]
        if positive:
            if not (-m <= alpha):
                return True
        elif not (abs(m) <= alpha):
            return True
    return False


@njit(cache=True, nogil=True)
def eager_support_apply(
    P, index, values, eta, thr, alpha, positive, mu, has_mu, lo, hi, acc, mark, rows, member, state, rw, l2, prox
):
    """eager_l1_apply on rows lo..hi (no intercept) visiting only the block's support (rows, member:
    the block's list and marks; state: its [count, mode] line); the same arithmetic on each row it
    writes, and each row written once. thr must be eta * alpha (alpha: the L1 weight, 0 for none); l2
    the L2 weight (a row at 0 stays at 0 under the L2 factor too, so the support's rule is the L1's).
    mark: the applying worker's scratch beside acc (hi - lo flags, False between updates). prox:
    block_prox.py's tuple, for its smooth regularizer r (its gradient is 0 at 0: the same rule; its
    sweeps are block_prox.general_apply's)."""
    k = P.shape[1]
    mode, reg = state[1], prox[9]
    if mode != SUPPORT_SPARSE or not (thr > 0.0 or positive or has_mu or l2 != 0.0 or reg != 0.0):
        # (no prox, no mu: pairs only; no intercept)
        if reg != 0.0:
            general_apply(P, index, values, eta, mu, has_mu, lo, hi, acc, prox)
        else:
            eager_l1_apply(P, index, values, eta, thr, positive, mu, has_mu, lo, hi, acc[0], False, acc, rw, l2)
        if mode == SUPPORT_REBUILD:
            count = 0
            for c in range(lo, hi):
                listed = (has_mu and _anchor_moves(mu, c, k, alpha * row_weight(rw, c), positive)) or P[c].any()
                member[c] = listed
                if listed:
                    rows[lo + count] = c
                    count += 1
            state[0] = count
            state[1] = SUPPORT_SPARSE if count <= SUPPORT_DENSE_FRACTION * (hi - lo) else SUPPORT_DENSE
        return
    # (only rows whose value changes are written: a row another worker reads is moved out of its cache
    # by a write, and most pairs' rows stay at 0, so they are not written at all)
    count, touched, m = state[0], np.empty(index.shape[0], dtype=np.int64), 0
    for q in range(index.shape[0]):
        c = index[q]
        if lo <= c < hi:
            for j in range(k):
                acc[c - lo, j] += values[q, j]
            if not mark[c - lo]:
                mark[c - lo] = True
                touched[m] = c
                m += 1
    i = lo  # the listed rows, their pairs' sums included
    while i < lo + count:
        c = rows[i]
        w = row_weight(rw, c)
        nonzero = _support_row_step(P, c, acc, mu, has_mu, eta, thr * w, positive, lo, k, l2_shrink(eta, l2, w), reg)
        if nonzero or (has_mu and _anchor_moves(mu, c, k, alpha * w, positive)):
            i += 1
        else:  # at 0 and staying there: off the list (the last listed row takes its place)
            member[c] = False
            count -= 1
            rows[i] = rows[lo + count]
    for t in range(m):  # the pairs' rows off the list: at 0 (or just taken off it, their sum used)
        c = touched[t]
        mark[c - lo] = False
        w = row_weight(rw, c)
        shrink = l2_shrink(eta, l2, w)
        if not member[c] and _support_row_step(P, c, acc, mu, has_mu, eta, thr * w, positive, lo, k, shrink, reg):
            member[c] = True
            rows[lo + count] = c
            count += 1
    state[0] = count
    if count > SUPPORT_DENSE_FRACTION * (hi - lo):
        state[1] = SUPPORT_DENSE


@njit(cache=True, nogil=True, inline="always")
def _support_row_step(P, c, acc, mu, has_mu, eta, thr, positive, lo, k, shrink, reg):
    """Row c's eager step (the sweep's expressions, for the same rounding), written where it changes;
    its sum in acc cleared. Whether the row is non-zero now."""
    nonzero = False
    for j in range(k):
        if reg != 0.0:  # (block_prox.general_sweep's expression)
            x = soft(stepped(P[c, j], acc[c - lo, j] + (mu[c, j] if has_mu else 0.0), eta, reg), thr, positive) * shrink
        elif has_mu:
            x = soft(P[c, j] - eta * (acc[c - lo, j] + mu[c, j]), thr, positive) * shrink
        else:
            x = soft(P[c, j] - eta * acc[c - lo, j], thr, positive) * shrink
        if x != P[c, j]:
            P[c, j] = x
        acc[c - lo, j] = 0.0
        nonzero = nonzero or x != 0.0
    return nonzero


def invalidate_support(state) -> None:
    """Every block rebuilds its support at its next update (after the parameters or the anchor changed
    outside the kernels: at drained points)."""
    state[:, 1] = SUPPORT_REBUILD


# -- the kernels of the engine's compiled task loop (engines/compiled.py) ------------------------
# The engine's loop reads the version, calls task_worker_step (the pull, margins, loss derivative,
# SVRG correction, block gradient: a pure function of the parameters as read), then for each server
# task_route routes it to (with its step) takes its lock and calls task_server_apply (the block's prox step, or the
# intercept server's row d: its one owner, so pushes to different blocks never write it under two
# locks). Python is entered once per task instead of ~10 times per batch: a step costs its arithmetic.

STEP_NOT_FINITE = 1  # task_worker_step's status when the margins are not finite (divergence)
# A full push over this many blocks or more has its pairs grouped by block (group_by_block), so that
# each block's server reads only its own instead of filtering all of them twice (2 workers on news20,
# 8 blocks: 369-387 -> 311-350 us an update; 1 worker in 8 blocks 268-371 -> 211-294). With 2 blocks the
# grouping pass costs about what it saves (2 workers, 2 blocks: 290-300 against 345-352 us, in runs too
# noisy to call), so the default of 2 workers keeps the filter.
GROUPED_BLOCKS = 4
_delay_factor = njit(cache=True, nogil=True)(delay_factor)


# The task kernels call inlined copies of the kernels above (and those of the kernels they call), so
# that the engine's loop compiles into one function as the old single-module kernel did: LLVM does
# not inline across separately compiled functions, which cost ~0.3 us an update on a9a (batch 4).
def _inlined_copies(names):
    scope = dict(globals())
    for name in names:
        f = globals()[name].py_func
        scope[name] = njit(nogil=True, inline="always")(types.FunctionType(f.__code__, scope, name))
    return [scope[name] for name in names]


# (The passes over a block, soft_step and soft_step_shifted, stay calls: inlined, the eager
# prox pass lost half its speed on news20.)
# The eager server rule (eager_support_apply, with the sweep it falls back to) stays a call too: inlined,
# it doubled the cold compile of the task loop (19.5 -> 41 s), paid by every first fit after a change.
(_csr_batch_margins, _lazy_batch_margins, _sparse_block_step, _lazy_apply, _csr_block_gradient,
 _batch_coefficients, _group_by_block, _block_pairs) = _inlined_copies(
    ["csr_batch_margins", "lazy_batch_margins", "sparse_block_step", "lazy_apply",
     "csr_block_gradient", "batch_coefficients", "group_by_block", "block_pairs", "_first_at_least",
     "loss_derivative", "_sigmoid", "repeat_soft", "row_weight"]
)[:8]  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def task_worker_step(w, batch, key):
    """One batch's update from the parameters as read: (status, (block j or -1, pair rows, pair
    values, intercept gradient)); j = key % M with block pushes, every block (-1) otherwise."""
    (indptr, indices, values, Y, P, code, snap_D, has_vr, bounds, block_push,
     lazy, lazy_mu, lazy_eta, lazy_thr, ticks, last, block_of, rw, sw) = w  # fmt: skip
    M = bounds.shape[0] - 1
    d, k = P.shape[0] - 1, P.shape[1]
    j, lo, hi = -1, 0, d
    if block_push:
        j = key % M
        lo, hi = bounds[j], bounds[j + 1]
    if indices.shape[0] == 0 and batch.shape[0] * d >= DENSE_BLAS_MIN_ENTRIES:  # (dense rows: never lazy)
        index, grad, intercept, finite = dense_blas_step(values, Y, batch, P, code, snap_D, has_vr, lo, hi, sw)
    else:
        if lazy:
            Z = _lazy_batch_margins(
                indptr, indices, values, batch, P[:d], lazy_mu, lazy_eta, lazy_thr, ticks, last, block_of, has_vr,
                M == 1, rw,
            )  # fmt: skip
        else:
            Z = _csr_batch_margins(indptr, indices, values, batch, P[:d])
        for r in range(Z.shape[0]):
            for c in range(k):
                Z[r, c] += P[d, c]
        index, grad, intercept, finite = _sparse_block_step(
            indptr, indices, values, Y, batch, Z, code, snap_D, has_vr, lo, hi, sw
        )
    if j < 0 and M >= GROUPED_BLOCKS and not lazy:  # a full push: each block's server finds its pairs (block_pairs)
        index, grad = _group_by_block(index, grad, bounds)
    return (0 if finite else STEP_NOT_FINITE), (j, index, grad, intercept)


@njit(cache=True, nogil=True, inline="always")
def task_route(s, update, staleness):
    """(first, stop, extra, step): the update goes to block servers first..stop-1 (its block, or every
    block for a full push), then to the intercept server (extra = M, or -1 without an intercept),
    with the step min(step, unit factor(tau)) * weight (unit: the delay bound's scale, stepsize.delay_unit;
    tau the measured staleness when adaptive, else the delay bound). (Reads single fields: unpacking the
    tuple would count references to every array in it, atomically, on each batch.)"""
    M = s[1].shape[0] - 1
    j = update[0]
    first, stop = (j, j + 1) if j >= 0 else (0, M)
    if s[13]:  # lazy: one constant step
        eta = s[15]
    else:
        step, unit, delay, adaptive, delay_blocks, weight = s[7], s[8], s[9], s[10], s[11], s[12]
        eta = min(step, unit * _delay_factor(staleness if adaptive else delay, delay_blocks)) * weight
    return first, stop, (M if s[6] else -1), eta


@njit(cache=True, nogil=True, inline="always")
def task_server_apply(s, server, update, eta):
    """Server `server`'s rule with the routed step: block b's prox step, eager or lazy (lazy updates
    take the constant lazy step); or, for the intercept server (index M), row d."""
    (P, bounds, alpha, positive, mu, has_vr, fit_intercept, step, unit, delay, adaptive, delay_blocks, weight,
     lazy, lazy_mu, lazy_eta, lazy_thr, ticks, last, block_of, slot, acc, mark, support_rows, support_member,
     support_state, rw, l2, prox) = s  # fmt: skip
    _, index, grad, intercept = update
    M = bounds.shape[0] - 1
    if server == M:  # row d has one owner: the intercept server
        intercept_step(P, intercept, eta, lazy_mu if lazy else mu, lazy or has_vr)
    elif lazy:
        _lazy_apply(P, index, grad, eta, lazy_thr, lazy_mu, ticks, last, block_of, server, server, slot, rw)
    elif not listed(prox):  # box, group L1: the whole block (block_prox.py)
        general_apply(P, index, grad, eta, mu, has_vr, bounds[server], bounds[server + 1], acc, prox)
    else:
        lo, hi = bounds[server], bounds[server + 1]
        # (two calls, not the slices rebound to index / grad: numba would unify the 2-d slice's layout
        # with grad's, and compile the kernel for non-contiguous arrays: 13% slower an update)
        if update[0] < 0 and M >= GROUPED_BLOCKS:  # a full push's pairs come grouped by block (task_worker_step)
            first, stop = _block_pairs(index, lo, hi)
            eager_support_apply(P, index[first:stop], grad[first:stop], eta, eta * alpha, alpha, positive, mu,
                                has_vr, lo, hi, acc, mark, support_rows, support_member, support_state[server], rw,
                                l2, prox)  # fmt: skip
        else:
            eager_support_apply(P, index, grad, eta, eta * alpha, alpha, positive, mu, has_vr, lo, hi, acc, mark,
                                support_rows, support_member, support_state[server], rw, l2, prox)  # fmt: skip
