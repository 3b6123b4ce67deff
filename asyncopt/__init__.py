"""asyncopt: training large models with asynchronous parallel workers."""

from asyncopt.errors import TrainingDiverged
from asyncopt.estimators import EigenProClassifier, EigenProRegressor, ProxSGDClassifier, ProxSGDRegressor
from asyncopt.estimators.model_files import load
from asyncopt.kernels import MemoryBudgetError
from asyncopt.options import ComputeOptions
from asyncopt.persistence import FileFormatError
from asyncopt.training.eigenpro import HistoryEntry

__version__ = "0.1.0"

__all__ = [
    "ComputeOptions",
    "EigenProClassifier",
    "EigenProRegressor",
    "FileFormatError",
    "HistoryEntry",
    "MemoryBudgetError",
    "ProxSGDClassifier",
    "ProxSGDRegressor",
    "TrainingDiverged",
    "load",
]
