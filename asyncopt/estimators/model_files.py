"""Model files: a fitted estimator as arrays plus JSON, read back without running any code.

``save_model(estimator, path)`` writes one `asyncopt.persistence` file of kind ``"model"``;
``load(path)`` rebuilds the estimator from it, predicting exactly as the saved one did.

Payload layout (the JSON document inside the file's header)::

    {"class": "EigenProRegressor",            # one of the four estimators, nothing else loads
     "asyncopt_version": "0.1.0", "sklearn_version": "1.6.0",
     "params": {...},                          # get_params(); callback dropped, RandomState -> None
     "attributes": {...},                      # the fitted state: every entry of vars() not a parameter
     "digest": "..."}                          # BLAKE2b of the JSON above (the file's digest covers
                                               # only the arrays; this one covers the rest)

Values are plain JSON where JSON is exact; anything else is a tagged object
``{"$asyncopt": TAG, ...}``: ``"array"`` (a numeric array stored as a safetensors tensor, named by
``"name"``; ``"fortran"`` when it was Fortran-ordered), ``"json_array"`` (string or object labels
as a list plus dtype and shape), ``"tensor"`` (a torch tensor and its device), ``"scalar"`` (a
numpy scalar and its dtype), ``"tuple"``, ``"dict"`` (keys that are not strings, as pairs),
``"device"``, ``"dtype"``, ``"path"`` and ``"kernel_data"`` (EigenPro's prepared training data: kernel name and
bandwidth, compute options, and its tensors). Every tensor is stored on CPU; reading a file parses
JSON and copies raw numbers, so it executes no code (no pickle anywhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from asyncopt.persistence import FileFormatError, read_file, write_file

KIND = "model"
TAG = "$asyncopt"
CLASSES = ("EigenProRegressor", "EigenProClassifier", "ProxSGDRegressor", "ProxSGDClassifier")
_KERNEL_CALLABLE = (
    "a kernel callable cannot be stored in a model file without code; use a named kernel or pickle/joblib"
)
# numpy dtypes stored as safetensors tensors (plain little-endian numbers)
_NUMERIC_KINDS = "biuf"
_TORCH_DTYPES = {
    str(dt).replace("torch.", ""): dt
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16)
    + (torch.int32, torch.int64, torch.uint8, torch.bool)
}


def _classes():
    from asyncopt.estimators.eigenpro import EigenProClassifier, EigenProRegressor
    from asyncopt.estimators.proxsgd import ProxSGDClassifier, ProxSGDRegressor

    return {c.__name__: c for c in (EigenProRegressor, EigenProClassifier, ProxSGDRegressor, ProxSGDClassifier)}


def _version() -> str | None:
    import asyncopt

    version = getattr(asyncopt, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("asyncopt")
        except Exception:  # not installed as a distribution
            version = None
    return version


def _payload_digest(content: dict) -> str:
    text = json.dumps(content, sort_keys=True, allow_nan=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# -- encoding ----------------------------------------------------------------------------------
class _Encoder:
    def __init__(self):
        self.arrays: dict[str, torch.Tensor] = {}

    def _store(self, where: str, tensor: torch.Tensor) -> str:
        name = where
        while name in self.arrays:
            name += "'"
        self.arrays[name] = tensor.detach().to("cpu").contiguous().clone()
        return name

    def array(self, value: np.ndarray, where: str):
        if value.dtype.kind in _NUMERIC_KINDS and value.dtype.itemsize <= 8:
            fortran = value.ndim > 1 and value.flags.f_contiguous and not value.flags.c_contiguous
            a = value.T if fortran else value
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            try:
                tensor = torch.as_tensor(np.ascontiguousarray(a))
            except TypeError:  # a dtype torch cannot hold (e.g. uint16 on older torch): JSON below
                tensor = None
            if tensor is not None and str(tensor.dtype).replace("torch.", "") in _TORCH_DTYPES:
                out = {TAG: "array", "name": self._store(where, tensor), "dtype": value.dtype.str}
                if fortran:
                    out["fortran"] = True
                return out
        if value.dtype.kind in "Uiu" or value.dtype == object:  # labels, and integers torch cannot hold: exact
            flat = [self.value(v, f"{where}[{i}]") for i, v in enumerate(value.reshape(-1).tolist())]
            return {TAG: "json_array", "dtype": value.dtype.str, "shape": list(value.shape), "values": flat}
        raise ValueError(f"{where}: an array of dtype {value.dtype} cannot be stored in a model file")

    def value(self, value, where: str):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            if value.dtype.kind not in "biufU":
                raise ValueError(f"{where}: a numpy scalar of dtype {value.dtype} cannot be stored in a model file")
            return {TAG: "scalar", "dtype": value.dtype.str, "value": value.item()}
        if isinstance(value, (int, float)) and type(value) in (int, float):
            return value
        if isinstance(value, np.ndarray):
            return self.array(value, where)
        if isinstance(value, torch.Tensor):
            if str(value.dtype).replace("torch.", "") not in _TORCH_DTYPES:
                raise ValueError(f"{where}: a tensor of dtype {value.dtype} cannot be stored in a model file")
            return {TAG: "tensor", "name": self._store(where, value), "device": str(value.device)}
        if isinstance(value, torch.device):
            return {TAG: "device", "value": str(value)}
        if isinstance(value, torch.dtype):
            return {TAG: "dtype", "value": str(value).replace("torch.", "")}
        if isinstance(value, os.PathLike) and isinstance(os.fspath(value), str):  # e.g. checkpoint_dir
            return {TAG: "path", "value": os.fspath(value)}
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and TAG not in value:
                return {k: self.value(v, f"{where}[{k!r}]") for k, v in value.items()}
            return {
                TAG: "dict",
                "items": [[self.value(k, f"{where} key"), self.value(v, f"{where}[{k!r}]")] for k, v in value.items()],
            }
        from asyncopt.kernels.blocks import KernelData

        if isinstance(value, KernelData):
            return self.kernel_data(value, where)
        raise ValueError(
            f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a model file "
            "(only numbers, strings, arrays, lists and dicts of them); use pickle/joblib"
        )

    def kernel_data(self, data, where: str):
        kernel = data.kernel
        if not kernel.is_radial:
            raise ValueError(f"kernel: {_KERNEL_CALLABLE}")
        options = data.options
        return {
            TAG: "kernel_data",
            "kernel": kernel.name,
            "bandwidth": kernel.bandwidth,
            "device": str(options.device),
            "dtype": str(options.dtype).replace("torch.", ""),
            "memory_bytes": options.memory_bytes,
            "max_chunk_columns": options.max_chunk_columns,
            "X": self.value(data.X, f"{where}.X"),
            "sqnorm": self.value(data.sqnorm, f"{where}.sqnorm"),
            "kept_columns": self.value(data.kept_columns, f"{where}.kept_columns"),
            "dropped_values": self.value(data.dropped_values, f"{where}.dropped_values"),
        }


def _encode_params(estimator, encoder: _Encoder) -> dict:
    params = estimator.get_params(deep=False)
    if callable(params.get("kernel")):
        raise ValueError(f"kernel={params['kernel']!r}: {_KERNEL_CALLABLE}")
    out = {}
    for name, value in params.items():
        if name == "callback":
            value = None  # a callback is how a fit was watched, not part of the model
        elif name == "random_state" and isinstance(value, np.random.RandomState):
            value = None  # a generator's state is not a parameter a file can hold faithfully
        try:
            out[name] = encoder.value(value, f"params/{name}")
        except ValueError as exc:
            raise ValueError(f"parameter {name}={value!r} cannot be stored in a model file ({exc})") from None
    return out


def save_model(estimator, path: str | os.PathLike) -> Path:
    """Write the fitted `estimator` to `path` (safetensors arrays + versioned JSON, no pickle)."""
    import sklearn

    name = type(estimator).__name__
    if name not in CLASSES or _classes()[name] is not type(estimator):
        raise TypeError(f"save_model stores {', '.join(CLASSES)}; got a {type(estimator).__qualname__}")
    encoder = _Encoder()
    params = _encode_params(estimator, encoder)
    param_names = set(estimator.get_params(deep=False))
    attributes = {
        key: encoder.value(value, f"attributes/{key}")
        for key, value in vars(estimator).items()
        if key not in param_names
    }
    content = {
        "class": name,
        "asyncopt_version": _version(),
        "sklearn_version": sklearn.__version__,
        "params": params,
        "attributes": attributes,
    }
    payload = {**content, "digest": _payload_digest(content)}
    return write_file(path, KIND, payload, encoder.arrays)


# -- decoding ----------------------------------------------------------------------------------
class _Decoder:
    def __init__(self, arrays: dict[str, torch.Tensor], path: Path):
        self.arrays = arrays
        self.path = path
        self.moved_from: set[str] = set()

    def _tensor(self, name) -> torch.Tensor:
        if not isinstance(name, str) or name not in self.arrays:
            raise KeyError(f"array {name!r} named in the header is not in the file")
        return self.arrays[name]

    def _device(self, device: str) -> torch.device:
        target = torch.device(device)
        if target.type == "cpu":
            return target
        available = {
            "cuda": torch.cuda.is_available() and (target.index is None or target.index < torch.cuda.device_count()),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }.get(target.type, False)
        if available:
            return target
        self.moved_from.add(str(target))
        return torch.device("cpu")

    def value(self, value):
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = value.get(TAG)
        if tag is None:
            return {k: self.value(v) for k, v in value.items()}
        if tag == "array":
            a = self._tensor(value["name"]).numpy()
            dtype = np.dtype(value["dtype"])
            if a.dtype != dtype:  # e.g. a big-endian array, stored little-endian
                a = a.astype(dtype)
            return a.T if value.get("fortran") else a
        if tag == "json_array":
            dtype = np.dtype(value["dtype"])
            items = [self.value(v) for v in value["values"]]
            if dtype.kind == "O":
                out = np.empty(len(items), dtype=object)
                out[:] = items
            else:
                out = np.array(items, dtype=dtype)
            return out.reshape(value["shape"])
        if tag == "tensor":
            return self._tensor(value["name"]).to(self._device(value["device"]))
        if tag == "scalar":
            return np.dtype(value["dtype"]).type(value["value"])
        if tag == "device":
            return torch.device(value["value"])
        if tag == "dtype":
            return _TORCH_DTYPES[value["value"]]
        if tag == "path":
            return Path(value["value"])
        if tag == "tuple":
            return tuple(self.value(v) for v in value["items"])
        if tag == "dict":
            return {_hashable(self.value(k)): self.value(v) for k, v in value["items"]}
        if tag == "kernel_data":
            return self.kernel_data(value)
        raise KeyError(f"unknown value tag {tag!r}")

    def kernel_data(self, value):
        from asyncopt.kernels.blocks import KernelData
        from asyncopt.kernels.functions import make_kernel
        from asyncopt.options import ComputeOptions

        device = self._device(value["device"])
        options = ComputeOptions(
            device, _TORCH_DTYPES[value["dtype"]], int(value["memory_bytes"]), value["max_chunk_columns"]
        )

        def tensor(key):
            t = self.value(value[key])
            return None if t is None else t.to(device)

        return KernelData(
            make_kernel(value["kernel"], value["bandwidth"]),
            tensor("X"),
            tensor("sqnorm"),
            tensor("kept_columns"),
            tensor("dropped_values"),
            options,
        )


def _hashable(key):
    return key.item() if isinstance(key, np.ndarray) and key.ndim == 0 else key


def load(path: str | os.PathLike):
    """The estimator saved in `path` by ``estimator.save(path)``; FileFormatError if it is not a model file."""
    path = Path(path)
    try:
        payload, arrays = read_file(path, KIND)
    except (FileFormatError, OSError):
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a header damaged past read_file's checks
        raise FileFormatError(f"{path}: corrupted asyncopt model file ({type(exc).__name__}: {exc})") from None
    try:
        if not isinstance(payload, dict):
            raise TypeError(f"the payload is a {type(payload).__name__}, not an object")
        content = {k: v for k, v in payload.items() if k != "digest"}
        if payload.get("digest") != _payload_digest(content):
            raise FileFormatError(f"{path}: corrupted asyncopt model file (the header does not match its checksum)")
        name = payload["class"]
        classes = _classes()
        if name not in classes:
            raise FileFormatError(
                f"{path}: holds a {name!r}, which asyncopt.load does not rebuild (it loads {', '.join(CLASSES)})"
            )
        cls = classes[name]
        decoder = _Decoder(arrays, path)
        params = {k: decoder.value(v) for k, v in payload["params"].items()}
        accepted = set(cls._get_param_names())
        unknown = sorted(set(params) - accepted)
        if unknown:
            warnings.warn(
                f"{path}: parameters {unknown} of the saved {name} are not parameters of this asyncopt's {name} "
                "and were dropped",
                UserWarning,
                stacklevel=2,
            )
        estimator = cls(**{k: v for k, v in params.items() if k in accepted})
        for key, value in payload["attributes"].items():
            setattr(estimator, key, decoder.value(value))
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise FileFormatError(f"{path}: not a usable asyncopt model file ({type(exc).__name__}: {exc})") from None
    if decoder.moved_from:
        warnings.warn(
            f"{path}: the model was saved on {', '.join(sorted(decoder.moved_from))}, which is not available "
            "here; its data was loaded on CPU (predictions may differ in the last bits; the device parameter "
            "is kept as saved, so set device='cpu' before refitting)",
            UserWarning,
            stacklevel=2,
        )
    return estimator
