"""The run's own feature order on sparse data (popular features first, dealt over the blocks): the
order itself, the renumbered data's products, and fits that give the user's coefficients back."""

import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from asyncopt import ProxSGDClassifier, ProxSGDRegressor
from asyncopt.estimators.proxsgd import users_order
from asyncopt.proxsgd.data import LinearData, column_counts
from asyncopt.proxsgd.problem import block_bounds, feature_order


def _skewed(n=600, d=300, seed=0):
    """Sparse rows whose columns follow a Zipf-like popularity scattered over the column numbers."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, d + 1) ** 0.8
    p = weights[rng.permutation(d)]
    p /= p.sum()
    rows = np.repeat(np.arange(n), 12)
    cols = rng.choice(d, size=rows.size, p=p)
    X = sp.csr_matrix((rng.uniform(0.5, 1.5, rows.size), (rows, cols)), shape=(n, d))
    X.sum_duplicates()
    w = rng.normal(size=d) * (rng.random(d) < 0.2)
    return X, X @ w + 0.05 * rng.normal(size=n)


@pytest.mark.parametrize("n_blocks", [1, 2, 3, 5])
def test_popular_features_come_first_in_every_block_and_blocks_share_them(n_blocks):
    X, _ = _skewed()
    counts = column_counts(X)
    order = feature_order(counts, n_blocks)
    assert sorted(order) == list(range(X.shape[1]))
    cuts = block_bounds(X.shape[1], n_blocks)
    per_block = [counts[order[a:b]] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    for c in per_block:
        assert np.all(np.diff(c) <= 0)  # most entries first within each block
    totals = [int(c.sum()) for c in per_block]
    assert max(totals) - min(totals) <= 2 * counts.max()  # dealt in turn: no block holds the popular ones
    if n_blocks == 1:
        np.testing.assert_array_equal(order, np.argsort(-counts, kind="stable"))


def test_groups_stay_contiguous_with_their_features_by_count():
    X, _ = _skewed(d=40)
    counts = column_counts(X)
    codes = np.arange(40) % 7
    order = feature_order(counts, 3, codes)
    ordered = codes[order]
    assert np.all(np.diff(ordered) >= 0)
    for g in range(7):
        assert np.all(np.diff(counts[order][ordered == g]) <= 0)


def test_csc_and_csr_counts_agree():
    X, _ = _skewed()
    np.testing.assert_array_equal(column_counts(X), column_counts(X.tocsc()))
    np.testing.assert_array_equal(column_counts(X), np.diff(X.tocsc().indptr))


def _check_products(data, ref):
    v = torch.from_numpy(np.random.default_rng(1).normal(size=(ref.shape[1], 2)))
    u = torch.from_numpy(np.random.default_rng(2).normal(size=(ref.shape[0], 2)))
    for serial in (False, True):  # torch's CPU product over rows whose columns are out of order, and scipy's
        np.testing.assert_allclose(data.margins(v, serial=serial).numpy(), ref @ v.numpy(), atol=1e-12)
        np.testing.assert_allclose(data.transpose_product(u, serial=serial).numpy(), ref.T @ u.numpy(), atol=1e-12)
    np.testing.assert_allclose(data.column_sums().numpy(), ref.sum(0), atol=1e-12)
    np.testing.assert_allclose(data.row_sq_norms().numpy(), (ref**2).sum(1), atol=1e-12)


def test_renumbered_data_has_the_products_of_the_permuted_matrix():
    X, y = _skewed()
    before = X.copy()
    order = feature_order(column_counts(X), 2)
    permuted = X[:, order].toarray()
    data = LinearData.from_array(X, y.reshape(-1, 1), column_order=order, shared=True)
    _check_products(data, permuted)  # the setup's view: the rows sorted, in shared memory from the start
    data.share_memory()
    _check_products(data, permuted)
    rows = sp.csr_matrix((data.values.numpy(), data.indices.numpy(), data.indptr.numpy()), shape=(data.n, data.d))
    np.testing.assert_array_equal(rows.toarray(), permuted)
    canonical = sp.csr_matrix(permuted)  # (the workers' rows: each row's columns ascending, as scipy keeps them)
    np.testing.assert_array_equal(data.indices.numpy(), canonical.indices)
    np.testing.assert_array_equal(data.values.numpy(), canonical.data)
    assert data.indices.is_shared() and data.values.is_shared() and data.Y.is_shared()
    np.testing.assert_array_equal(data.t_indices.numpy(), sp.csr_matrix(permuted).T.tocsr().indices)
    for name in ("indices", "data", "indptr"):  # the user's X is untouched
        np.testing.assert_array_equal(getattr(X, name), getattr(before, name))


def test_float32_and_dense_data_in_a_column_order():
    X, y = _skewed()
    order = feature_order(column_counts(X), 3)
    data = LinearData.from_array(X, y.reshape(-1, 1), dtype=torch.float32, column_order=order)
    assert data.values.dtype == torch.float32 and not data.values.is_shared()  # (not shared: plain tensors)
    np.testing.assert_array_equal(data.indices.numpy(), sp.csr_matrix(X.toarray()[:, order]).indices)
    _check_products(LinearData.from_array(X, y.reshape(-1, 1), column_order=order), X[:, order].toarray())
    dense = LinearData.from_array(X.toarray(), y.reshape(-1, 1), column_order=order)
    np.testing.assert_array_equal(dense.dense.numpy(), X.toarray()[:, order])


def test_a_column_order_that_is_no_permutation_is_refused():
    X, y = _skewed()
    with pytest.raises(ValueError, match="permutation"):
        LinearData.from_array(X, y.reshape(-1, 1), column_order=np.zeros(X.shape[1], dtype=np.int64))


def test_users_order_inverts_the_runs_order():
    order = np.array([2, 0, 3, 1])
    run = np.array([20.0, 0.0, 30.0, 10.0])  # row j holds the user's feature order[j]
    np.testing.assert_array_equal(users_order(run, order), [0.0, 10.0, 20.0, 30.0])
    np.testing.assert_array_equal(users_order(run, None), run)


@pytest.mark.parametrize(
    "kw",
    [
        dict(penalty="l1", alpha=1e-3),
        dict(penalty="elasticnet", alpha=1e-3, n_blocks=2),
        dict(penalty="group_l1", alpha=1e-3, groups=np.arange(300) % 11, n_blocks=2),
    ],
    ids=["l1", "elasticnet", "group_l1"],
)
def test_serial_fits_in_either_order_give_the_same_coefficients(kw, monkeypatch):
    X, y = _skewed()
    X_val, y_val = X[:100], y[:100]
    fits = {}
    for kind in ("given", "frequency"):
        monkeypatch.setenv("ASYNCOPT_FEATURE_ORDER", kind)
        fits[kind] = ProxSGDRegressor(max_epochs=4, random_state=0, **kw).fit(X, y, X_val=X_val, y_val=y_val)
    a, b = fits["given"], fits["frequency"]
    assert np.count_nonzero(a.coef_) > 10
    # the same run up to rounding: the power iteration's random start is drawn in the run's order, so
    # the step differs in its 7th digit, and sums add in another order
    np.testing.assert_allclose(b.step_size_, a.step_size_, rtol=1e-5)
    np.testing.assert_allclose(b.coef_, a.coef_, atol=1e-6)
    np.testing.assert_allclose(b.intercept_, a.intercept_, atol=1e-6)
    np.testing.assert_allclose([h["val_metric"] for h in b.history_], [h["val_metric"] for h in a.history_], rtol=1e-6)


def test_a_block_push_in_the_runs_order_converges_as_in_the_users():
    # (a block holds other features in the run's order, so the block draws differ: another sample path)
    X, y = _skewed()
    fits = {}
    for kind in ("given", "frequency"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ASYNCOPT_FEATURE_ORDER", kind)
            kw = dict(penalty="l1", alpha=1e-3, n_blocks=3, push="block", max_epochs=60, random_state=0)
            fits[kind] = ProxSGDRegressor(**kw).fit(X, y)
    F = {k: m.history_[-1]["objective"] for k, m in fits.items()}
    assert abs(F["frequency"] - F["given"]) < 0.03 * F["given"], F  # (1.3% apart here)
    assert np.corrcoef(fits["frequency"].coef_, fits["given"].coef_)[0, 1] > 0.99


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_parallel_fit_in_the_runs_order_predicts_in_the_users_order(backend, monkeypatch):
    X, y = _skewed(n=1500)
    labels = (y > np.median(y)).astype(int)
    kw = dict(penalty="l1", alpha=1e-4, max_epochs=15, random_state=0)
    reference = ProxSGDClassifier(backend="serial", **kw).fit(X, labels)  # (the user's order: 300 columns)
    monkeypatch.setenv("ASYNCOPT_FEATURE_ORDER", "frequency")
    model = ProxSGDClassifier(backend=backend, n_workers=2, **kw).fit(X, labels)
    assert model.score(X, labels) > 0.85
    # the same model up to the asynchronous runs' noise: coefficients in the user's order
    assert np.corrcoef(model.coef_.ravel(), reference.coef_.ravel())[0, 1] > 0.99


def test_a_serial_resume_in_the_runs_order_is_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYNCOPT_FEATURE_ORDER", "frequency")
    X, y = _skewed()
    kw = dict(penalty="l1", alpha=1e-3, max_epochs=4, evals_per_epoch=2, tol=None, random_state=0)
    whole = ProxSGDRegressor(**kw).fit(X, y)
    seen = []
    stopped = ProxSGDRegressor(**kw, checkpoint_dir=tmp_path, callback=lambda e: seen.append(1) or len(seen) == 3)
    stopped.fit(X, y)
    resumed = ProxSGDRegressor(**kw, checkpoint_dir=tmp_path).fit(X, y, resume=True)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    assert resumed.history_[-1]["objective"] == whole.history_[-1]["objective"]
    monkeypatch.setenv("ASYNCOPT_FEATURE_ORDER", "given")  # the same checkpoint, in the user's order: refused
    with pytest.raises(ValueError, match="feature_order"):
        ProxSGDRegressor(**kw, checkpoint_dir=tmp_path).fit(X, y, resume=True)


def test_a_checkpoint_from_before_the_feature_order_is_refused():
    model = ProxSGDRegressor()
    model._resumed_from = "old.safetensors"
    old = types.SimpleNamespace(setup={"derived": {"batch_size": 32, "n_blocks": 1}})
    derived = {"batch_size": 32, "n_blocks": 1, "feature_order": "frequency"}
    with pytest.raises(ValueError, match="feature_order: 'given' -> 'frequency'"):
        model._check_derived(old, derived, missing={"feature_order": "given"})
    model._check_derived(old, {**derived, "feature_order": "given"}, missing={"feature_order": "given"})


def test_the_order_is_chosen_where_the_coefficients_outgrow_a_cache(monkeypatch):
    monkeypatch.delenv("ASYNCOPT_FEATURE_ORDER", raising=False)
    wide = sp.random(50, 40000, density=1e-3, format="csr", random_state=0)
    narrow = sp.random(50, 1000, density=1e-2, format="csr", random_state=0)

    def chosen(X=wide, ray=False, **kw):
        return ProxSGDClassifier(**kw)._frequency_order(X, ray=ray)

    assert chosen()
    assert not chosen(narrow)  # (a9a's 123 columns fit in any cache: nothing to buy)
    assert not chosen(ray=True)
    assert not chosen(device="meta")
    assert not chosen(wide.toarray())
    monkeypatch.setenv("ASYNCOPT_FEATURE_ORDER", "given")
    assert not chosen()
    monkeypatch.setenv("ASYNCOPT_FEATURE_ORDER", "frequency")
    assert chosen(narrow)


@pytest.mark.parametrize("given_counts", [False, True])  # (the estimator passes the counts it ordered by)
def test_duplicate_entries_are_summed_on_a_copy_and_the_users_matrix_stays_as_it_is(given_counts):
    X, y = _skewed()
    order = feature_order(column_counts(X), 2)
    row0 = slice(X.indptr[0], X.indptr[1])
    indices = np.concatenate([X.indices[row0][:1], X.indices])  # row 0's first entry stored twice
    data_ = np.concatenate([[0.5], X.data])
    indptr = X.indptr + 1
    indptr[0] = 0
    duplicated = sp.csr_matrix((data_, indices, indptr), shape=X.shape)
    before = [a.copy() for a in (duplicated.data, duplicated.indices, duplicated.indptr)]
    counts = column_counts(duplicated) if given_counts else None  # (the duplicate counted twice)
    data = LinearData.from_array(duplicated, y.reshape(-1, 1), column_order=order, counts=counts)
    _check_products(data, duplicated.toarray()[:, order])
    assert data.nnz == X.nnz
    for a, b in zip((duplicated.data, duplicated.indices, duplicated.indptr), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shuffled", [False, True])
def test_the_rows_sort_renumbers_and_orders_every_row_and_counts_duplicates(shuffled):
    """fast.csr_rows_renumbered through LinearData: rows empty, short and longer than the buckets,
    entries in the user's column order or shuffled within each row, duplicates found (and summed on
    a copy); the workers' rows are X[:, order] with each row's columns ascending."""
    rng = np.random.default_rng(5)
    n, d = 300, 2000
    lengths = rng.choice([0, 1, 7, 50, 400], size=n)
    lengths[-1] = 50
    cols = [np.sort(rng.choice(d, size=m, replace=False)) for m in lengths]
    if shuffled:
        cols = [rng.permutation(c) for c in cols]
    indptr = np.r_[0, np.cumsum(lengths)]
    X = sp.csr_matrix((rng.normal(size=indptr[-1]), np.concatenate(cols).astype(np.int32), indptr), shape=(n, d))
    order = rng.permutation(d)
    expect = X.toarray()[:, order]
    twice = (np.r_[X.data, 1.0], np.r_[X.indices, X.indices[-1]], np.r_[indptr[:-1], indptr[-1] + 1])
    for M in (X, sp.csr_matrix(twice, shape=(n, d))):  # (the last row's last column stored twice)
        data = LinearData.from_array(M, np.ones((n, 1)), column_order=order)
        indptr_, indices_, values_ = data.indptr.numpy(), data.indices.numpy(), data.values.numpy()
        for i in range(n):
            row = indices_[indptr_[i] : indptr_[i + 1]]
            assert np.all(np.diff(row) > 0)  # ascending, no duplicate left
        got = sp.csr_matrix((values_, indices_, indptr_), shape=(n, d)).toarray()
        np.testing.assert_allclose(got, M.toarray()[:, order], rtol=1e-15)
    np.testing.assert_array_equal(sp.csr_matrix((values_, indices_, indptr_), shape=(n, d)).toarray()[:-1], expect[:-1])
