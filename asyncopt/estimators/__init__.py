"""User-facing scikit-learn estimators."""

from asyncopt.estimators.eigenpro import EigenProClassifier, EigenProRegressor

__all__ = ["EigenProClassifier", "EigenProRegressor"]
