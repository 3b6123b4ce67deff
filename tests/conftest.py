import os

import pytest
import torch

from asyncopt.datasets import data_home

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = data_home()


def require_data(*parts):
    """Skip (or, with ASYNCOPT_REQUIRE_DATA=1 as in CI, fail) when a shared dataset is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("ASYNCOPT_REQUIRE_DATA") == "1":
            pytest.fail(f"required dataset {path} is missing (ASYNCOPT_REQUIRE_DATA=1)")
        pytest.skip(f"dataset {path} not found; set ASYNCOPT_DATA to the folder holding the shared data")
    return path


@pytest.fixture(scope="session")
def mnist():
    require_data("mnist")
    from asyncopt.datasets import load_mnist

    return load_mnist()
