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


def _svmlight(path: Path, n_features: int | None = None):
    import bz2

    from sklearn.datasets import load_svmlight_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass path= or set ASYNCOPT_DATA")
    opener = bz2.open if path.suffix == ".bz2" else gzip.open
    with opener(path, "rb") as f:
        X, y = load_svmlight_file(f, n_features=n_features, dtype=np.float64)
    X = X.tocsr()
    # scikit-learn's solvers (liblinear, saga) accept only 32-bit sparse indices
    X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int32)
    return X, y


def load_a9a(path=None):
    """a9a (UCI Adult, LIBSVM) as sparse CSR (X_train, y_train, X_test, y_test); 123 features, labels -1/+1."""
    root = data_home(path) / "a9a"
    X_train, y_train = _svmlight(root / "a9a.gz", n_features=123)
    X_test, y_test = _svmlight(root / "a9a.t.gz", n_features=123)
    return X_train, y_train, X_test, y_test


def load_news20(path=None, test_size=0.2, random_state=0):
    """20 Newsgroups comp.* vs rest (TF-IDF, 130,108 features) as sparse CSR (X_train, y_train, X_test, y_test).

    The set has no fixed split; this is the seeded 80/20 split the tests and benchmarks share.
    """
    from sklearn.model_selection import train_test_split

    X, y = _svmlight(data_home(path) / "news20" / "news20_bydate_all_comp_vs_rest.svm.bz2", n_features=130_108)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=random_state)
    return X_train, y_train, X_test, y_test


def load_keel(name: str, path=None):
    """A KEEL set of the data folder's ``keel/`` ("magic": 19,020 x 10, gamma vs hadron; "penbased":
    10,992 x 16, ten digits) as (X, y): features as floats, y the class labels as given."""
    file = data_home(path) / "keel" / f"{name}.dat.gz"
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found; pass path= or set ASYNCOPT_DATA")
    with gzip.open(file, "rt") as f:  # (CSV without header; lines of '@' attributes skipped if present)
        rows = [line.strip().split(",") for line in f if line.strip() and not line.startswith("@")]
    X = np.array([[float(v) for v in row[:-1]] for row in rows])
    return X, np.array([row[-1].strip() for row in rows])


def load_uci(name: str, path=None, split: int | None = 0):
    """A UCI regression set of the data folder ("uci-elevators", "uci-bike", "uci-pol") as
    (X_train, y_train, X_test, y_test), split number `split` (0-9) of its fixed test masks; with
    split=None, the whole set as (X, y)."""
    root = data_home(path) / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found; pass path= or set ASYNCOPT_DATA")
    data = np.loadtxt(root / "data.csv.gz", delimiter=",")
    if split is None:
        return data[:, :-1], data[:, -1]
    test = np.loadtxt(root / "test_mask.csv.gz", delimiter=",")[:, split].astype(bool)
    X, y = data[:, :-1], data[:, -1]
    return X[~test], y[~test], X[test], y[test]
