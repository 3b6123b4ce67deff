"""Every compute knob in one place: device, precision, memory budget, chunking."""

from __future__ import annotations

import dataclasses

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


MAX_MEMORY_GB = 2**20  # (a PiB: beyond, a budget is a typo, and its byte count overflows)


@dataclasses.dataclass(frozen=True)
class ComputeOptions:
    """Where and how kernel arithmetic runs.

    Parameters
    ----------
    device : torch.device
        Device holding the training data, the weights and every kernel block.
    dtype : torch.dtype
        Precision of kernel evaluation and of the weights (float32 or float64).
        Eigen-decompositions always run in float64.
    memory_bytes : int
        Budget for everything the solver allocates on ``device``: the training data,
        weights, preconditioner and the transient kernel chunks. Chunks are sized to fit it.
    max_chunk_columns : int or None
        Upper bound on the width of one kernel chunk (columns of K evaluated at once).
        None picks a width that keeps a chunk near the CPU cache sweet spot.
    """

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    memory_bytes: int = 4 * 2**30
    max_chunk_columns: int | None = None

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @classmethod
    def from_params(cls, device="cpu", dtype="float32", memory_gb=4.0, max_chunk_columns=None):
        """Build options from the plain values an estimator stores."""
        try:
            torch_device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={device!r} is not a valid torch device: {exc}") from None
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available here")
        if isinstance(dtype, torch.dtype):
            torch_dtype = dtype
        else:
            torch_dtype = _DTYPES.get(str(dtype).replace("torch.", ""))
        if torch_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'")
        if not (isinstance(memory_gb, (int, float)) and 0 < memory_gb <= MAX_MEMORY_GB):
            raise ValueError(f"memory_gb={memory_gb!r} must be a positive number of GiB, at most {MAX_MEMORY_GB:,}")
        return cls(torch_device, torch_dtype, int(memory_gb * 2**30), max_chunk_columns)
