"""The scikit-learn estimator contract, checked by scikit-learn itself."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from asyncopt import EigenProClassifier, EigenProRegressor


@parametrize_with_checks([EigenProRegressor(epochs=5), EigenProClassifier(epochs=5)])
def test_sklearn_contract(estimator, check):
    check(estimator)
