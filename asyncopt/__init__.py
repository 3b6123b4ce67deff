"""asyncopt: training large models with asynchronous parallel workers.

The public names are imported on first use (PEP 562), so ``import asyncopt`` (and the CLI's
``--help``) does not pay for torch, scikit-learn, scipy and numba; ``from asyncopt import
EigenProClassifier`` imports what that estimator needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module defining it
_LAZY = {
    "ActorFailureWarning": "asyncopt.errors",
    "ComputeOptions": "asyncopt.options",
    "EigenProClassifier": "asyncopt.estimators.eigenpro",
    "EigenProRegressor": "asyncopt.estimators.eigenpro",
    "FileFormatError": "asyncopt.persistence",
    "HistoryEntry": "asyncopt.training.eigenpro",
    "MemoryBudgetError": "asyncopt.kernels.blocks",
    "ProxSGDClassifier": "asyncopt.estimators.proxsgd",
    "ProxSGDRegressor": "asyncopt.estimators.proxsgd",
    "TrainingDiverged": "asyncopt.errors",
    "load": "asyncopt.estimators.model_files",
    "shutdown_worker_pool": "asyncopt.engines.pool",
    "start_worker_pool": "asyncopt.engines.transports",
}

__all__ = [
    "ActorFailureWarning",
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
    "shutdown_worker_pool",
    "start_worker_pool",
]

if TYPE_CHECKING:  # (static tools see the names; at run time they come from __getattr__)
    from asyncopt.engines.pool import shutdown_worker_pool
    from asyncopt.engines.transports import start_worker_pool
    from asyncopt.errors import ActorFailureWarning, TrainingDiverged
    from asyncopt.estimators.eigenpro import EigenProClassifier, EigenProRegressor
    from asyncopt.estimators.model_files import load
    from asyncopt.estimators.proxsgd import ProxSGDClassifier, ProxSGDRegressor
    from asyncopt.kernels.blocks import MemoryBudgetError
    from asyncopt.options import ComputeOptions
    from asyncopt.persistence import FileFormatError
    from asyncopt.training.eigenpro import HistoryEntry


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # (later lookups skip this function)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
