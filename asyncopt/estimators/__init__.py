"""User-facing scikit-learn estimators (each family imported on first use)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "EigenProClassifier": "asyncopt.estimators.eigenpro",
    "EigenProRegressor": "asyncopt.estimators.eigenpro",
    "ProxSGDClassifier": "asyncopt.estimators.proxsgd",
    "ProxSGDRegressor": "asyncopt.estimators.proxsgd",
}

__all__ = ["EigenProClassifier", "EigenProRegressor", "ProxSGDClassifier", "ProxSGDRegressor"]

if TYPE_CHECKING:
    from asyncopt.estimators.eigenpro import EigenProClassifier, EigenProRegressor
    from asyncopt.estimators.proxsgd import ProxSGDClassifier, ProxSGDRegressor


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncopt.estimators' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
