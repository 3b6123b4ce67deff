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


@pytest.fixture(scope="session")
def a9a():
    require_data("a9a")
    from asyncopt.datasets import load_a9a

    return load_a9a()


def pytest_collection_modifyitems(config, items):
    """The tests that use Ray run last: one Ray session for all of them, and no test runs in a
    process where Ray's threads are up (a scipy check aborted under them once)."""
    items.sort(key=lambda item: "ray_session" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs it, bound to loopback (skipped, or failing with
    ASYNCOPT_REQUIRE_RAY=1 as in CI, when Ray is not installed)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        if os.environ.get("ASYNCOPT_REQUIRE_RAY") == "1":
            pytest.fail("Ray is not installed (ASYNCOPT_REQUIRE_RAY=1): pip install 'asyncopt[ray]'")
        pytest.skip("Ray is not installed: pip install 'asyncopt[ray]'")
    if not ray.is_initialized():
        from asyncopt.engines.ray_engine import DIRECT_CALL_BYTES  # (as ensure_ray starts a local Ray)

        ray.init(
            num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=True,
            _system_config={"max_direct_call_object_size": DIRECT_CALL_BYTES},
        )  # fmt: skip
    yield ray
    ray.shutdown()
