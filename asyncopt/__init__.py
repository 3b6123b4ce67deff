"""asyncopt: training large models with asynchronous parallel workers."""

from asyncopt.eigenpro.solver import HistoryEntry, TrainingDiverged
from asyncopt.estimators import EigenProClassifier, EigenProRegressor, ProxSGDClassifier, ProxSGDRegressor
from asyncopt.kernels import MemoryBudgetError
from asyncopt.options import ComputeOptions

__version__ = "0.1.0"

__all__ = [
    "ComputeOptions",
    "EigenProClassifier",
    "EigenProRegressor",
    "HistoryEntry",
    "MemoryBudgetError",
    "ProxSGDClassifier",
    "ProxSGDRegressor",
    "TrainingDiverged",
]
