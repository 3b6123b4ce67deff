"""Handing a fit's shared tensors to pool processes in as few pieces as possible.

torch pickles every tensor for another process by its storage's file descriptor, and the receiver
fetches each descriptor in one round trip to this process's resource sharer (~0.35 ms measured
alone; a second worker queues behind the first). Pickle does not notice that two tensors share a
storage, so a ProxSGD job of 12 tensors on 11 storages cost 12 round trips a worker. Here:

- `pack_shared`: the not-yet-shared storages of a list of tensors (the algorithm's state, the
  parameters) are copied into one shared-memory block, each tensor re-pointed at its place
  (`Tensor.set_`): one segment instead of one per storage;
- `PackedJob`: the job pickled with each shared tensor replaced by (storage, offset, shape, stride,
  dtype); the distinct storages travel beside it, once each, and the worker rebuilds the views.

`Tensor.set_` moves only the tensor objects it is given, unlike `share_memory_`, which moves the
storage under every view of it. A storage is packed only when the given tensors are all that use
it (`torch._C._storage_Use_Count`); one that a view or a numpy array elsewhere still reads is
shared in place instead.
"""

from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler

import torch

ALIGN = 64  # each storage's place in the block starts on its own cache line


def _plain_cpu(obj) -> bool:
    plain = type(obj) is torch.Tensor and obj.layout == torch.strided
    return plain and obj.device.type == "cpu" and not obj.requires_grad


def share_each(tensors: list[torch.Tensor]) -> None:
    """Each tensor's storage to shared memory on its own (for freshly spawned workers, which get the
    tensors through their start arguments)."""
    for t in tensors:
        t.share_memory_()


def pack_shared(tensors: list[torch.Tensor]) -> None:
    """Move the storages of `tensors` that are not yet in shared memory into one shared block, in
    place. A storage also used by something outside `tensors` is shared on its own (share_memory_)."""
    groups: dict[int, list[torch.Tensor]] = {}
    for t in tensors:
        storage = t.untyped_storage()
        if t.is_shared() or storage.nbytes() == 0:
            continue
        if t._is_view():  # (set_ would cut it from its base)
            t.share_memory_()
            continue
        group = groups.setdefault(storage.data_ptr(), [])
        if not any(u is t for u in group):
            group.append(t)
    use_count = getattr(torch._C, "_storage_Use_Count", None)  # (private: without it, nothing is re-pointed)
    places, total = [], 0
    for group in groups.values():
        storage = group[0].untyped_storage()
        # (+1: the wrapper `storage` itself holds a reference)
        if use_count is None or use_count(storage._cdata) != len(group) + 1:
            group[0].share_memory_()  # (moves the storage under every view)
            continue
        places.append((group, storage, total))
        total += -(-storage.nbytes() // ALIGN) * ALIGN
    if not places:
        return
    block = torch.UntypedStorage._new_shared(total)
    for group, storage, offset in places:
        nbytes = storage.nbytes()
        block[offset : offset + nbytes].copy_(storage)
        for t in group:
            size = t.element_size()
            t.set_(block, offset // size + t.storage_offset(), t.shape, t.stride())


class _Packer(ForkingPickler):
    """ForkingPickler (torch's reductions for anything else) sending shared CPU tensors by reference
    to a list of distinct storages."""

    def __init__(self, file):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.storages: list[torch.UntypedStorage] = []
        self._index: dict[int, int] = {}

    def persistent_id(self, obj):
        if not (_plain_cpu(obj) and obj.is_shared()):
            return None
        storage = obj.untyped_storage()
        if storage.nbytes() == 0:
            return None
        index = self._index.setdefault(storage.data_ptr(), len(self.storages))
        if index == len(self.storages):
            self.storages.append(storage)
        return (index, obj.storage_offset(), tuple(obj.shape), tuple(obj.stride()), obj.dtype)


class _Unpacker(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def persistent_load(self, pid):
        index, offset, shape, stride, dtype = pid
        return torch.empty(0, dtype=dtype).set_(self.storages[index], offset, shape, stride)


class PackedJob:
    """`obj` pickled with its shared tensors as references to `storages` (sent once each)."""

    def __init__(self, obj):
        buffer = io.BytesIO()
        packer = _Packer(buffer)
        packer.dump(obj)
        self.data = buffer.getvalue()
        self.storages = packer.storages

    def open(self):
        """The object, its tensors views of the received storages."""
        return _Unpacker(io.BytesIO(self.data), self.storages).load()
