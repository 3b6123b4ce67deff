"""Kernels and chunked kernel products (torch, any device)."""

from asyncopt.kernels.blocks import KernelData, MemoryBudgetError, kernel_matrix, kernel_product
from asyncopt.kernels.functions import RADIAL_PROFILES, Kernel, make_kernel

__all__ = [
    "Kernel",
    "KernelData",
    "MemoryBudgetError",
    "RADIAL_PROFILES",
    "kernel_matrix",
    "kernel_product",
    "make_kernel",
]
