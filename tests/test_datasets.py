"""The loaders of the shared sets the untuned-defaults benchmarks use (KEEL, UCI regression)."""

import numpy as np
import pytest

from asyncopt.datasets import load_keel, load_uci
from tests.conftest import require_data


@pytest.mark.realdata
def test_keel_sets_load_as_the_data_readme_describes():
    require_data("keel")
    X, y = load_keel("magic")
    assert X.shape == (19_020, 10) and X.dtype == np.float64 and np.isfinite(X).all()
    assert set(np.unique(y)) == {"g", "h"}
    X, y = load_keel("penbased")
    assert X.shape == (10_992, 16) and len(np.unique(y)) == 10


@pytest.mark.realdata
def test_uci_sets_load_whole_or_as_a_fixed_split():
    require_data("uci-pol")
    X, y = load_uci("uci-pol", split=None)
    assert X.shape == (15_000, 26) and y.shape == (15_000,)
    X_train, y_train, X_test, y_test = load_uci("uci-pol", split=3)
    assert len(y_train) + len(y_test) == 15_000 and X_train.shape[1] == X_test.shape[1] == 26
    assert len(y_test) == 1_500  # (10% of the rows in each of the ten masks)


def test_a_missing_set_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="keel"):
        load_keel("magic", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="uci-pol"):
        load_uci("uci-pol", path=tmp_path)
