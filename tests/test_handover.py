"""Handing shared tensors to worker processes (engines/handover.py) and the data's shared copies
made beside the setup (LinearData.from_array(shared=True))."""

import multiprocessing as mp

import numpy as np
import scipy.sparse as sp
import torch

from asyncopt.engines import handover
from asyncopt.proxsgd.data import LinearData


def test_packing_moves_storages_into_one_shared_block_and_keeps_their_values():
    a = torch.arange(10, dtype=torch.float64)
    b = torch.arange(7, dtype=torch.int32)
    c = a  # (the same object twice: moved once)
    handover.pack_shared([a, b, c])
    assert a.is_shared() and b.is_shared()
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # one block
    assert b.data_ptr() - a.data_ptr() == 128  # (a's 80 bytes take two cache lines)
    assert torch.equal(a, torch.arange(10, dtype=torch.float64)) and torch.equal(b, torch.arange(7, dtype=torch.int32))


def test_a_storage_something_else_reads_is_shared_in_place_not_repointed():
    """set_ moves only the tensors given: a view or numpy array elsewhere would keep the old memory
    (or read freed memory). Such a storage is moved under all its readers by share_memory_."""
    a = torch.zeros(8, dtype=torch.float64)
    outside = a[2:]  # a view the packer is not given
    view = torch.zeros(5)
    array = view.numpy()  # (a numpy reader, like an algorithm's cached views)
    lone = torch.ones(3)
    handover.pack_shared([a, torch.zeros(4)[1:], lone])
    a[3] = 5.0
    assert a.is_shared() and outside[1] == 5.0  # the same memory for both
    assert lone.is_shared() and lone.untyped_storage().data_ptr() != a.untyped_storage().data_ptr()
    del view, array


def _reader(job, out):
    tensors = job.open()
    out.put([t if isinstance(t, str) else t.tolist() for t in tensors])
    tensors[0][0] = -1.0  # (written in shared memory: the parent sees it)


def test_a_packed_job_sends_each_storage_once_and_the_worker_writes_the_parents_memory():
    a, b = torch.arange(6, dtype=torch.float64), torch.arange(4, dtype=torch.int64)
    handover.pack_shared([a, b])
    job = handover.PackedJob([a, a[2:4], b.view(2, 2), "text"])
    assert len(job.storages) == 1  # four tensors, one storage
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_reader, args=(job, out))
    p.start()
    got = out.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert got[:3] == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 3.0], [[0, 1], [2, 3]]] and got[3] == "text"
    assert a[0] == -1.0


def test_the_datas_shared_copies_equal_the_arrays_and_take_their_place():
    X = sp.random(50, 30, density=0.2, random_state=0, format="csr")
    Y = np.arange(50.0).reshape(-1, 1)
    data = LinearData.from_array(X, Y, shared=True)
    before = data.values.numpy()  # (a view of the original: still valid after the swap)
    assert not data.values.is_shared()
    data.share_memory()
    assert all(t.is_shared() for t in data.worker_tensors())
    assert np.array_equal(data.values.numpy(), X.data) and np.array_equal(data.indices.numpy(), X.indices)
    assert np.array_equal(data.indptr.numpy(), X.indptr) and np.array_equal(data.Y.numpy(), Y)
    assert np.array_equal(before, X.data)
    dense = LinearData.from_array(X.toarray(), Y, shared=True)
    dense.share_memory()
    assert dense.dense.is_shared() and np.array_equal(dense.dense.numpy(), X.toarray())


def test_without_torchs_use_count_every_storage_is_shared_in_place(monkeypatch):
    """torch._C._storage_Use_Count is private: where a torch lacks it, nothing is re-pointed."""
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    a, b = torch.zeros(4), torch.ones(3)
    handover.pack_shared([a, b])
    assert a.is_shared() and b.is_shared() and torch.equal(b, torch.ones(3))
    assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
