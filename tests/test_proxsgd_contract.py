"""The scikit-learn estimator contract for the ProxSGD estimators, checked by scikit-learn itself."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from asyncopt import ProxSGDClassifier, ProxSGDRegressor


@parametrize_with_checks(
    [
        ProxSGDRegressor(),
        ProxSGDClassifier(),
        ProxSGDClassifier(penalty="l1", alpha=1e-3, n_blocks=3, multi_class="multinomial"),
    ]
)
def test_sklearn_contract(estimator, check):
    check(estimator)
