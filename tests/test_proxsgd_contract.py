"""The scikit-learn estimator contract for the ProxSGD estimators, checked by scikit-learn itself."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from asyncopt import ProxSGDClassifier, ProxSGDRegressor

# scikit-learn compares a fit with integer sample weights to a fit on repeated rows at rtol 1e-7 (as
# it does for its own SGD estimators, which it lets fail the same way): two stochastic fits of
# different samples agree only to their tolerance. Measured with tol=None and 2,000 epochs: 1e-7 to
# 3e-3 apart. The weights are checked against exact solvers and repeated rows at the fits' own
# accuracy in tests/test_proxsgd_sample_weight.py.
_STOCHASTIC = "a stochastic solver: weighted and repeated fits agree to the fits' tolerance, not to 1e-7"


def _expected_failures(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": _STOCHASTIC,
        "check_sample_weight_equivalence_on_sparse_data": _STOCHASTIC,
    }


@parametrize_with_checks(
    [
        ProxSGDRegressor(),
        ProxSGDClassifier(),
        ProxSGDClassifier(penalty="l1", alpha=1e-3, n_blocks=3, multi_class="multinomial"),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_contract(estimator, check):
    check(estimator)
