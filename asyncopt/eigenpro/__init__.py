"""EigenPro: the math of one step, the Nystrom preconditioner, and the engine adapter.

Runs (history, stopping rules, checkpoints) live in `asyncopt.training.eigenpro`."""

from asyncopt.eigenpro.algorithm import EigenProAlgorithm
from asyncopt.eigenpro.preconditioner import Preconditioner, nystrom_preconditioner, step_size
from asyncopt.eigenpro.step import KernelProblem, Update, apply_update, eigenpro_step

__all__ = [
    "EigenProAlgorithm",
    "KernelProblem",
    "Preconditioner",
    "Update",
    "apply_update",
    "eigenpro_step",
    "nystrom_preconditioner",
    "step_size",
]
