"""Tensors that travel as numpy arrays, for Ray's object store: it keeps a pickled numpy array as an
out-of-band buffer, which every actor of a node reads in place, where a pickled tensor is copied
into each actor (on 99M entries: 1.1 GB and seconds a worker). Algorithms' `for_object_store()`
wrap their read-only data with `arrays_of`; other pickling (worker processes' shared memory) is
left alone."""

from __future__ import annotations

import dataclasses
import warnings

import torch


class TensorAsArray:
    """A CPU tensor that pickles as its numpy array and is read back as a tensor over that array
    (over Ray's read-only store: for data that nothing writes into)."""

    __slots__ = ("array",)

    def __init__(self, tensor: torch.Tensor):
        self.array = tensor.numpy()

    def __reduce__(self):
        return tensor_over, (self.array,)


def tensor_over(array) -> torch.Tensor:
    with warnings.catch_warnings():  # (torch warns of read-only arrays: nothing writes into these)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def arrays_of(obj, names):
    """A copy of dataclass `obj` for pickling only: its CPU tensor fields `names` as TensorAsArray."""
    wrapped = {}
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, torch.Tensor) and value.device.type == "cpu":
            wrapped[name] = TensorAsArray(value)
    return dataclasses.replace(obj, **wrapped)
