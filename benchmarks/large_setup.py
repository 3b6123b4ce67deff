"""The ProxSGD setup's pieces on large sparse data, each against what it replaced (session 26).

    python benchmarks/large_setup.py --out benchmarks/results/large_setup.md

1. The power iteration on a sample of the rows (stepsize.POWER_ITERATION_ROWS): lambda_1 of
   A_S^T A_S / |S| over `--draws` random samples S of 2^12..2^18 rows, against all rows' (the same
   power iteration, from the column sums, rtol 1e-4), on a9a, news20 and the large problem.
2. The rows' sort into the run's feature order (fast.csr_rows_renumbered): session 26's counting sort
   into SORT_BUCKETS ranges then insertion, against session 25's comparison sort of 64-bit keys per
   row (kept below as the reference), one thread, the first `--sort-rows` rows; the outputs compared.
3. The full passes' X^T D where X^T is not built (data.TRANSPOSE_MAX_ENTRIES): the compiled scatter
   from X's rows on 1 and 2 threads (as LinearData runs it), scipy's serial product from the rows,
   and torch's product of X^T on 2 threads (what X^T would give), D of 1 and 2 columns; and what
   building X^T costs (scipy's transposition). X as a fit holds it (the run's feature order for 2
   blocks, each row's columns ascending).

Medians of `--repeats`; times in ms. The large problem is bench_proxsgd_large.py's cached file
(--large; run that script first). A shared 2-core machine: read ratios within a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit

sys.path.insert(0, str(Path(__file__).parent))
from bench_proxsgd import LOADERS  # noqa: E402
from bench_proxsgd_large import load_problem  # noqa: E402

from asyncopt.proxsgd import fast  # noqa: E402
from asyncopt.proxsgd.data import SORT_BUCKETS, LinearData, _sort_buckets, _unsigned, column_counts  # noqa: E402
from asyncopt.proxsgd.problem import feature_order  # noqa: E402
from asyncopt.proxsgd.stepsize import _top_eigenpair  # noqa: E402

LARGE = Path("/tmp/asyncopt-large/large_n2000000_d1000000_k50_p10000_s0.npz")


@njit(cache=True, nogil=True)
def comparison_sort_rows(indptr, indices, values, position, out_indices, out_values, lo, hi):
    """Session 25's kernel: each row sorted alone by one in-place sort of 64-bit keys (column << 32 | offset)."""
    keys = np.empty(64, dtype=np.uint64)
    for i in range(lo, hi):
        start, stop = indptr[i], indptr[i + 1]
        m = stop - start
        if m > keys.shape[0]:
            keys = np.empty(2 * m, dtype=np.uint64)
        for t in range(m):
            keys[t] = (np.uint64(position[indices[start + t]]) << np.uint64(32)) | np.uint64(t)
        row = keys[:m]
        row.sort()
        for t in range(m):
            out_indices[start + t] = row[t] >> np.uint64(32)
            out_values[start + t] = values[start + np.int64(row[t] & np.uint64(0xFFFFFFFF))]


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, out


def datasets(names, large: Path):
    for name in names:
        if name == "large":
            yield "large 2e6 x 1e6", sp.csr_matrix(load_problem(large)[0])
        else:
            yield name, sp.csr_matrix(LOADERS[name]()[0])


def eigenvalue_table(sets, draws):
    lines = ["## 1. lambda_1 from a sample of the rows, against all rows", "",
             "| data | rows | all rows: lambda_1 | sample rows | sample / all: min | max |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, X in sets:
        data = LinearData.from_array(X, np.ones((X.shape[0], 1)))
        intercept = not label.startswith("large")  # (the benchmarks fit news20 and a9a either way)
        gen = torch.Generator().manual_seed(0)
        full, _ = _top_eigenpair(data, None, intercept, 100, gen, 1e-4)
        for m in (2**12, 2**14, 2**16, 2**18):
            if m >= X.shape[0]:
                break
            ratios = []
            for s in range(draws):
                rows = torch.as_tensor(np.sort(np.random.default_rng(s).choice(X.shape[0], m, replace=False)))
                lam, _ = _top_eigenpair(data, rows, intercept, 100, torch.Generator().manual_seed(0), 1e-4)
                ratios.append(lam / full)
            lines.append(f"| {label} | {X.shape[0]:,} | {full:.5g} | 2^{int(np.log2(m))} | {min(ratios):.4f} | "
                         f"{max(ratios):.4f} |")  # fmt: skip
            print(lines[-1], flush=True)
    return lines + [""]


def sort_table(sets, rows, repeats):
    lines = ["## 2. The rows' sort into the feature order (one thread)", "",
             f"| data | rows sorted | comparison sort ms | {SORT_BUCKETS} buckets, insertion ms | ratio | same rows |",
             "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for label, X in sets:
        n, d = X.shape
        hi = min(rows, n)
        counts = column_counts(X)
        order = feature_order(counts, 2)
        position = np.empty(d, dtype=np.uint32)
        position[order] = np.arange(d, dtype=np.uint32)
        bucket = _sort_buckets(counts, order)
        src = (X.indptr, _unsigned(X.indices), X.data, position)
        a = (np.empty(X.nnz, np.uint32), np.empty(X.nnz))
        b = (np.empty(X.nnz, np.uint32), np.empty(X.nnz))
        comparison_sort_rows(*src, *a, 0, 2)
        fast.csr_rows_renumbered(*src, bucket, SORT_BUCKETS, *b, 0, 2)  # (compiled code loaded)
        old, _ = timed(lambda: comparison_sort_rows(*src, *a, 0, hi), repeats)  # noqa: B023
        new, _ = timed(lambda: fast.csr_rows_renumbered(*src, bucket, SORT_BUCKETS, *b, 0, hi), repeats)  # noqa: B023
        end = X.indptr[hi]
        same = np.array_equal(a[0][:end], b[0][:end]) and np.array_equal(a[1][:end], b[1][:end])
        lines.append(f"| {label} | {hi:,} | {old:.0f} | {new:.0f} | {old / new:.2f}x | {same} |")
        print(lines[-1], flush=True)
    return lines + [""]


def transpose_table(sets, repeats):
    lines = ["## 3. X^T D without X^T, and what X^T costs", "",
             "| data | entries | columns of D | compiled, 1 thread | compiled, 2 threads | scipy from the rows | "
             "torch X^T, 2 threads | transposition |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for label, X in sets:
            n, d = X.shape
            # (as a fit holds it: in the run's feature order, each row's columns ascending)
            data = LinearData.from_array(X, np.ones((n, 1)), column_order=feature_order(column_counts(X), 2))
            rows = data._scipy()
            transposition, XT = timed(lambda: rows.T.tocsr(), 1)  # noqa: B023
            arrays = (XT.indptr.astype(XT.indices.dtype), XT.indices, XT.data)
            tXT = data._csr(*(torch.from_numpy(a) for a in arrays), (d, n))
            for k in (1, 2):
                D = torch.as_tensor(np.random.default_rng(k).normal(size=(n, k)))
                one, r1 = timed(lambda: data._rows_transpose_product(D, serial=True), repeats)  # noqa: B023
                two, r2 = timed(lambda: data._rows_transpose_product(D, serial=False), repeats)  # noqa: B023
                sci, _ = timed(lambda: data._serial(data._scipy().T, D), repeats)  # noqa: B023
                tor, r3 = timed(lambda: tXT @ D, repeats)  # noqa: B023
                assert np.allclose(r1.numpy(), r3.numpy()) and np.allclose(r2.numpy(), r3.numpy())
                lines.append(f"| {label} | {X.nnz:,} | {k} | {one:.1f} | {two:.1f} | {sci:.1f} | {tor:.1f} | "
                             f"{transposition:.0f} |")  # fmt: skip
                print(lines[-1], flush=True)
    finally:
        torch.set_num_threads(before)
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["a9a", "news20", "large"])
    parser.add_argument("--large", type=Path, default=LARGE)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--sort-rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", nargs="+", type=int, default=[1, 2, 3], help="which of the 3 tables")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if "large" in args.sets and not args.large.exists():
        raise SystemExit(f"{args.large}: run bench_proxsgd_large.py first (it caches the problem)")
    sets = list(datasets(args.sets, args.large))
    argv = " ".join(sys.argv[1:])
    lines = ["# The ProxSGD setup on large sparse data", "", f"Command: `python benchmarks/large_setup.py {argv}`", ""]
    if 1 in args.parts:
        lines += eigenvalue_table(sets, args.draws)
    if 2 in args.parts:
        lines += sort_table(sets, args.sort_rows, args.repeats)
    if 3 in args.parts:
        lines += transpose_table(sets, args.repeats)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
