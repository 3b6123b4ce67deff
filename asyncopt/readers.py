"""Reading a user's data files: LIBSVM / svmlight, CSV, NumPy .npz, MNIST-style IDX, and the sets
bundled with scikit-learn (``sklearn:digits``, ...). The parsing is the well-kept libraries':
scikit-learn's svmlight reader, numpy's loadtxt and npz loader; here are only the choice of reader,
the checks, and errors that name the file and the problem.

    >>> data = read_data("sklearn:iris")
    >>> data.X.shape, data.y.shape
    ((150, 4), (150,))
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import warnings
from pathlib import Path

import numpy as np

FORMATS = ("auto", "libsvm", "csv", "npz", "idx")
BUNDLED = ("digits", "iris", "wine", "breast_cancer", "diabetes")  # scikit-learn's, as sklearn:NAME


class DataFormatError(ValueError):
    """A data file that cannot be read as the format it is read as (the message names file and line)."""


@dataclasses.dataclass
class Data:
    X: object  # ndarray or scipy.sparse CSR
    y: np.ndarray | None  # None: the file holds no labels
    description: str  # what was read, for the user: "a.svm: 1,000 rows x 123 features (LIBSVM, sparse)"


def read_data(
    path: str | os.PathLike,
    format: str = "auto",
    target_column: str | int | None = None,
    n_features: int | None = None,
    labels: str | os.PathLike | None = None,
) -> Data:
    """The samples (and labels, when the file holds them) of `path`.

    - format: "libsvm" (labels first, then index:value pairs; sparse CSR), "csv" (a header line is
      recognised; labels in `target_column`, by index or name; None: no labels, except for fitting,
      where the caller passes -1), "npz" (arrays X and y, or a scipy.sparse matrix saved with
      scipy.sparse.save_npz, with an optional array y), "idx" (MNIST's format, gzipped or not;
      uint8 values scaled to [0, 1]; labels from `labels`, or the file named like `path` with
      images-idx3 -> labels-idx1), or "auto" (by the name: .svm / .libsvm / .svmlight / .txt,
      .csv / .tsv, .npz, idx in the name).
    - n_features: the number of features the samples must have (a model's, at predict time);
      LIBSVM rows with fewer stored features are padded with zeros, more is an error.
    - "sklearn:NAME": a set bundled with scikit-learn (digits scaled to [0, 1]; the others as given).
    """
    text = str(path)
    if text.startswith("sklearn:"):
        data = _bundled(text.split(":", 1)[1])
    else:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.is_dir():
            raise DataFormatError(f"{path} is a folder, not a data file")
        if format not in FORMATS:
            raise ValueError(f"format={format!r}: use one of {', '.join(FORMATS)}")
        kind = _guess(path) if format == "auto" else format
        if path.stat().st_size == 0:
            raise DataFormatError(f"{path}: the file is empty")
        if kind == "libsvm":
            data = _libsvm(path, n_features)
        elif kind == "csv":
            data = _csv(path, target_column)
        elif kind == "idx":
            data = _idx(path, labels)
        else:
            data = _npz(path)
    _check(data, text, n_features)
    return data


def _guess(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    if "idx1" in name or "idx3" in name or name.endswith(".idx"):
        return "idx"
    if name.endswith((".svm", ".libsvm", ".svmlight", ".txt")):
        return "libsvm"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    try:  # by the first line: "label index:value ..." or comma-separated
        with _open(path) as f:
            first = f.readline(4096).decode("utf-8", errors="replace").split("#")[0].split()
    except (OSError, EOFError):
        first = []
    if len(first) > 1 and all(":" in t for t in first[1:]):
        return "libsvm"
    if first and "," in first[0]:
        return "csv"
    raise DataFormatError(f"{path}: cannot tell the format from the name; give --format libsvm, csv, npz or idx")


def _open(path: Path):
    """The file, decompressed when its name says so (.gz, .bz2, .xz)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if path.suffix == ".xz":
        import lzma

        return lzma.open(path, "rb")
    return open(path, "rb")


def _libsvm(path: Path, n_features: int | None) -> Data:
    from sklearn.datasets import load_svmlight_file

    try:
        with _open(path) as f:
            X, y = load_svmlight_file(f, n_features=n_features, dtype=np.float64)
    except (ValueError, OverflowError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a readable LIBSVM file ({_first_line(exc)})") from None
    X = X.tocsr()
    return Data(X, y, f"{path.name}: {X.shape[0]:,} rows x {X.shape[1]:,} features (LIBSVM, sparse)")


def _csv(path: Path, target_column) -> Data:
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    try:
        with _open(path) as f:
            first = f.readline().decode("utf-8").strip()
        header = _is_header(first.split(delimiter))
        with _open(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # (numpy's notes on blank lines, skipped)
            cells = np.loadtxt(f, delimiter=delimiter, dtype=str, skiprows=int(header), ndmin=2, encoding="utf-8")
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV file ({_first_line(exc)})") from None
    names = [n.strip() for n in first.split(delimiter)] if header else None
    if cells.size == 0:
        raise DataFormatError(f"{path}: no data rows")
    if names is not None and len(names) != cells.shape[1]:
        raise DataFormatError(f"{path}: the header names {len(names)} columns but the rows have {cells.shape[1]}")
    y = None
    if target_column is not None:
        column = _column(target_column, names, cells.shape[1], path)
        y = _labels(cells[:, column])
        cells = np.delete(cells, column, axis=1)
    try:
        X = cells.astype(np.float64)
    except ValueError:
        bad = next(c for c in cells.ravel() if not _is_number(c))
        row = int(np.argwhere(cells == bad)[0][0]) + 1 + int(header)
        raise DataFormatError(f"{path}: line {row}: {str(bad)!r} is not a number") from None
    labelled = "" if y is None else f", labels in column {target_column}"
    return Data(X, y, f"{path.name}: {X.shape[0]:,} rows x {X.shape[1]:,} features (CSV{labelled})")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_header(fields: list[str]) -> bool:
    return any(f.strip() and not _is_number(f) for f in fields) and not all(_is_number(f) for f in fields[1:])


def _column(target, names: list[str] | None, width: int, path: Path) -> int:
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if names is None or target not in names:
            known = f"; the header names {', '.join(names)}" if names else " (the file has no header)"
            raise DataFormatError(f"{path}: no column named {target!r}{known}")
        return names.index(target)
    index = int(target)
    if not -width <= index < width:
        raise DataFormatError(f"{path}: target column {index} is outside the file's {width} columns")
    return index % width


def _labels(cells: np.ndarray) -> np.ndarray:
    """Labels as numbers when they all are, else as strings (class names)."""
    try:
        return cells.astype(np.float64)
    except ValueError:
        return np.char.strip(cells.astype(str))


def _npz(path: Path) -> Data:
    import scipy.sparse as sp

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({_first_line(exc)})") from None
    y = arrays.get("y")
    if {"data", "indices", "indptr", "shape", "format"} <= set(arrays):  # scipy.sparse.save_npz
        fmt = str(arrays["format"])
        if fmt not in ("csr", "csc"):
            raise DataFormatError(f"{path}: a scipy.sparse {fmt} matrix; save it as CSR or CSC")
        cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
        X = cls((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(arrays["shape"])).tocsr()
        kind = "sparse"
    elif "X" in arrays:
        X, kind = arrays["X"], "dense"
        if X.ndim != 2:
            raise DataFormatError(f"{path}: X has shape {X.shape}; it needs two dimensions (samples x features)")
        if X.dtype.kind not in "biuf":
            raise DataFormatError(f"{path}: X holds {X.dtype} values; it needs numbers")
    else:
        raise DataFormatError(
            f"{path}: an .npz with arrays {sorted(arrays)}; it needs X (and y), or a scipy.sparse matrix"
        )
    if y is not None and y.ndim != 1:
        raise DataFormatError(f"{path}: y has shape {y.shape}; it needs one label per sample (one dimension)")
    return Data(X, y, f"{path.name}: {X.shape[0]:,} rows x {X.shape[1]:,} features (npz, {kind})")


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataFormatError(f"{path}: not an IDX file (its first bytes are not an IDX magic number)")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    start = 4 + 4 * dims
    if len(raw) - start != int(np.prod(shape)) * dtype.itemsize:
        raise DataFormatError(f"{path}: truncated: its header says {shape}, its data has {len(raw) - start} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(shape)


def _idx(path: Path, labels) -> Data:
    images = _read_idx(path)
    X = images.reshape(len(images), -1)
    X = X.astype(np.float32) / 255 if X.dtype == np.uint8 else X.astype(np.float32)
    if labels is None:
        guess = path.with_name(path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
        labels = guess if guess != path and guess.exists() else None
    y = None
    if labels is not None:
        y = _read_idx(Path(labels)).astype(np.int64).ravel()
    scaled = ", uint8 scaled to [0, 1]" if images.dtype == np.uint8 else ""
    with_labels = f", labels from {Path(labels).name}" if labels is not None else ""
    return Data(X, y, f"{path.name}: {X.shape[0]:,} rows x {X.shape[1]:,} features (IDX{scaled}{with_labels})")


def _bundled(name: str) -> Data:
    """A set bundled with scikit-learn; NAME-train / NAME-test: its seeded 70/30 stratified split."""
    import sklearn.datasets

    base, _, part = name.partition("-")
    if base not in BUNDLED or part not in ("", "train", "test"):
        sets = ", ".join(f"sklearn:{b}" for b in BUNDLED)
        raise ValueError(f"sklearn:{name}: the bundled sets are {sets} (NAME-train, NAME-test: a 70/30 split)")
    X, y = getattr(sklearn.datasets, f"load_{base}")(return_X_y=True)
    note = ""
    if base == "digits":
        X, note = X / 16.0, ", pixels scaled to [0, 1]"
    if part:
        from sklearn.model_selection import train_test_split

        classes = y if base != "diabetes" else None
        parts = train_test_split(X, y, test_size=0.3, random_state=0, stratify=classes)
        X, y = (parts[0], parts[2]) if part == "train" else (parts[1], parts[3])
        note += f", the {'70%' if part == 'train' else '30%'} {part} part of a seeded split"
    return Data(X, y, f"scikit-learn's {base}: {X.shape[0]:,} rows x {X.shape[1]:,} features{note}")


def _check(data: Data, source: str, n_features: int | None) -> None:
    X, y = data.X, data.y
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataFormatError(f"{source}: no samples (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        raise DataFormatError(f"{source}: {X.shape[1]} features, and the model was fitted on {n_features}")
    values = X.data if hasattr(X, "data") and not isinstance(X, np.ndarray) else X
    if np.issubdtype(np.asarray(values).dtype, np.floating) and not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(X.toarray() if hasattr(X, "toarray") else X))[0]
        raise DataFormatError(f"{source}: a NaN or infinite value (row {bad[0] + 1}, feature {bad[1] + 1})")
    if y is not None:
        if len(y) != X.shape[0]:
            raise DataFormatError(f"{source}: {len(y)} labels for {X.shape[0]} samples")
        if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
            row = int(np.argwhere(~np.isfinite(y))[0][0]) + 1
            raise DataFormatError(f"{source}: a NaN or infinite label (row {row})")


def _first_line(exc: BaseException) -> str:
    """The reason, without the library's advice (numpy's "; use `usecols` ...")."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].split("; use ")[0]
