"""EigenPro: the math of one step, the Nystrom preconditioner, and the synchronous solver."""

from asyncopt.eigenpro.algorithm import EigenProAlgorithm, TrainingDiverged
from asyncopt.eigenpro.preconditioner import Preconditioner, nystrom_preconditioner, step_size
from asyncopt.eigenpro.solver import EigenProSettings, HistoryEntry, run_eigenpro
from asyncopt.eigenpro.step import KernelProblem, Update, apply_update, eigenpro_step

__all__ = [
    "EigenProAlgorithm",
    "EigenProSettings",
    "HistoryEntry",
    "KernelProblem",
    "Preconditioner",
    "TrainingDiverged",
    "Update",
    "apply_update",
    "eigenpro_step",
    "nystrom_preconditioner",
    "run_eigenpro",
    "step_size",
]
