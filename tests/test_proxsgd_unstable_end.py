"""A fit whose objective rose back far above its best warns (training/proxsgd.py: warn_if_unstable),
and stable fits, whose SVRG iterates sit above the anchors between them, do not."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from asyncopt import ProxSGDRegressor
from asyncopt.training.proxsgd import ProxHistoryEntry, warn_if_unstable


def two_directions(n=500, seed=0):
    """Columns of variance 1 and 0.09, a target mostly on the second: a too-long step first makes the
    progress along the second direction and then grows along the first."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2)) * [1.0, 0.3]
    return X, X @ [0.1, 3.0] + 0.01 * rng.standard_normal(n)


def unstable_messages(caught):
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    return [m for m in messages if "unstable" in m]


def test_full_batch_steps_just_over_the_stability_limit_end_with_a_warning():
    X, y = two_directions()
    top = float(np.linalg.eigvalsh(X.T @ X / len(y))[-1])
    common = dict(penalty="none", fit_intercept=False, batch_size=len(y), variance_reduction="none",
                  schedule="constant", tol=None, max_epochs=200, random_state=0)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ProxSGDRegressor(step_size=2.03 / top, **common).fit(X, y)
    objectives = [e["objective"] for e in model.history_]
    assert min(objectives) < 0.2 * objectives[0] and objectives[-1] > 10 * objectives[0]  # (down, then up)
    (message,) = unstable_messages(caught)
    assert "Lower step_size" in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ProxSGDRegressor(step_size=1.9 / top, **common).fit(X, y)
    assert unstable_messages(caught) == []


@pytest.mark.parametrize("evals_per_epoch", [1, 2, 4])
def test_default_fits_that_swing_between_svrg_anchors_do_not_warn(evals_per_epoch):
    # mid-epoch points of a 400-row SVRG fit sit far above the anchors (F 0.26, 0.45, 0.08 half an
    # epoch apart): only the anchors are compared
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 30))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=400)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ProxSGDRegressor(penalty="l1", alpha=1e-3, evals_per_epoch=evals_per_epoch, max_epochs=6, tol=None,
                                 random_state=0).fit(X, y)  # fmt: skip
    objectives = [e["objective"] for e in model.history_]
    if evals_per_epoch > 1:
        assert any(b > a for a, b in zip(objectives, objectives[1:], strict=False))  # (the swings are there)
    assert unstable_messages(caught) == []


def _points(objectives):
    return [ProxHistoryEntry(epoch=i + 1.0, samples=i + 1, seconds=0.0, step_size=1.0, steps=i, objective=f,
                             grad_mapping_sq=0.0, nnz=0) for i, f in enumerate(objectives)]  # fmt: skip


@pytest.mark.parametrize(
    ("objectives", "start", "warns"),
    [
        ([5.0, 2.0, 1.0, 1.0001], 10.0, False),  # noise at the end
        ([5.0, 2.0, 1.0, 5.6], 10.0, True),  # back up by over half the progress (4.6 > 4.5)
        ([5.0, 2.0, 1.0, 5.4], 10.0, False),
        ([1.0, 1.0, 1.0], 1.0, False),  # the start was optimal (alpha above alpha_max)
        ([1.0, 1.0, 1.0005], 1.0, False),  # ... and noise
        ([1.0, 1.1, 1.5], 1.0, True),  # never below the start, rising
    ],
)
def test_the_rule_compares_the_rise_with_the_progress(objectives, start, warns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_unstable(_points(objectives), start)
    assert bool(unstable_messages(caught)) == warns
