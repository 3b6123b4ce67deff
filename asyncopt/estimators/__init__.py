"""User-facing scikit-learn estimators."""

from asyncopt.estimators.eigenpro import EigenProClassifier, EigenProRegressor
from asyncopt.estimators.proxsgd import ProxSGDClassifier, ProxSGDRegressor

__all__ = ["EigenProClassifier", "EigenProRegressor", "ProxSGDClassifier", "ProxSGDRegressor"]
