"""Loaders for the real datasets the tests, benchmarks and demo use.

Nothing is downloaded: the demo uses scikit-learn's bundled digits, and the larger sets are
read from a folder (by default ``../shared/data`` next to the checkout, or $ASYNCOPT_DATA).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_home(path: str | os.PathLike | None = None) -> Path:
    """Folder holding the shared datasets: `path`, else $ASYNCOPT_DATA, else ../shared/data."""
    return Path(path or os.environ.get("ASYNCOPT_DATA") or _DEFAULT)


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_mnist(path=None, dtype=np.float32):
    """MNIST as (X_train, y_train, X_test, y_test); pixels scaled to [0, 1], 784 features."""
    root = data_home(path) / "mnist"
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST not found in {root}; pass path= or set ASYNCOPT_DATA")
    X_train = _idx(root / "train-images.idx3-ubyte.gz", 16).reshape(-1, 784).astype(dtype) / 255
    X_test = _idx(root / "t10k-images.idx3-ubyte.gz", 16).reshape(-1, 784).astype(dtype) / 255
    y_train = _idx(root / "train-labels.idx1-ubyte.gz", 8).astype(np.int64)
    y_test = _idx(root / "t10k-labels.idx1-ubyte.gz", 8).astype(np.int64)
    return X_train, y_train, X_test, y_test


def load_california_housing(path=None):
    """California housing as (X, y): 20,640 x 8 features, target the median house value."""
    table = np.loadtxt(data_home(path) / "california_housing" / "cal_housing.csv.gz", delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1]


def load_digits_default():
    """The embedded default: scikit-learn's bundled 8x8 digits (1,797 x 64), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y
