"""Model files (estimator.save / asyncopt.load: safetensors + JSON, no pickle), and pickle/joblib."""

import io
import json
import pickle

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

import asyncopt
import asyncopt.persistence as persistence
from asyncopt import (
    EigenProClassifier,
    EigenProRegressor,
    FileFormatError,
    ProxSGDClassifier,
    ProxSGDRegressor,
)
from asyncopt.estimators import model_files
from asyncopt.persistence import read_file, write_file

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
X[:, 2] = 1.5  # a constant feature: EigenPro drops it from the prepared data (kept_columns, dropped_values)
X_TEST = RNG.normal(size=(25, 4))  # the constant feature varies here: the dropped column's extra term
Y = X[:, 0] - 0.5 * X[:, 1] + 0.1 * RNG.normal(size=60)
Y_CLASS = np.where(Y > 0.5, 2, np.where(Y > -0.5, 1, 0))
Y_STR = np.array(["cat", "dog", "emu"])[Y_CLASS]
Y_BIN = (Y > 0).astype(int)
X_SPARSE = sp.random(60, 30, density=0.2, format="csr", random_state=1)
X_SPARSE_TEST = sp.random(25, 30, density=0.2, format="csr", random_state=2)

CASES = {
    "eigenpro_regressor": (lambda: EigenProRegressor(epochs=2, random_state=0), X, Y, X_TEST),
    "eigenpro_regressor_2d": (
        lambda: EigenProRegressor(kernel="matern32", dtype="float64", epochs=2, random_state=0),
        X,
        np.column_stack([Y, -Y]),
        X_TEST,
    ),
    "eigenpro_classifier": (lambda: EigenProClassifier(epochs=2, random_state=0), X, Y_CLASS, X_TEST),
    "eigenpro_classifier_str": (lambda: EigenProClassifier(epochs=2, random_state=0), X, Y_STR, X_TEST),
    "eigenpro_classifier_binary": (lambda: EigenProClassifier(epochs=2, random_state=0), X, Y_BIN, X_TEST),
    "proxsgd_regressor": (
        lambda: ProxSGDRegressor(penalty="l1", alpha=1e-3, max_epochs=3, random_state=0),
        X,
        Y,
        X_TEST,
    ),
    "proxsgd_regressor_sparse": (
        lambda: ProxSGDRegressor(max_epochs=3, random_state=0),
        X_SPARSE,
        RNG.normal(size=60),
        X_SPARSE_TEST,
    ),
    "proxsgd_classifier": (lambda: ProxSGDClassifier(max_epochs=3, random_state=0), X, Y_BIN, X_TEST),
    "proxsgd_classifier_multinomial_str": (
        lambda: ProxSGDClassifier(multi_class="multinomial", max_epochs=3, random_state=0),
        X,
        Y_STR,
        X_TEST,
    ),
    "proxsgd_classifier_hinge_sparse": (
        lambda: ProxSGDClassifier(
            loss="smoothed_hinge", penalty="box", bounds=(-1.0, 1.0), max_epochs=3, random_state=0
        ),
        X_SPARSE,
        (RNG.normal(size=60) > 0).astype(int),
        X_SPARSE_TEST,
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    make, X_fit, y_fit, X_query = CASES[request.param]
    return make().fit(X_fit, y_fit), X_fit, y_fit, X_query


def outputs(est, X_query):
    out = {"predict": est.predict(X_query)}
    for method in ("decision_function", "predict_proba"):
        try:
            out[method] = getattr(est, method)(X_query)
        except AttributeError:  # predict_proba of a non-logistic ProxSGDClassifier
            pass
    return out


def assert_same_outputs(a, b, X_query):
    oa, ob = outputs(a, X_query), outputs(b, X_query)
    assert oa.keys() == ob.keys()
    for key in oa:
        assert oa[key].dtype == ob[key].dtype, key
        assert np.array_equal(oa[key], ob[key]), key


def assert_same_state(a, b):
    """Every fitted attribute equal, with its type and dtype (the prepared EigenPro data tensor by tensor)."""
    va, vb = vars(a), vars(b)
    assert va.keys() == vb.keys()
    for key, value in va.items():
        other = vb[key]
        if key == "_data":
            for field in ("X", "sqnorm", "kept_columns", "dropped_values"):
                ta, tb = getattr(value, field), getattr(other, field)
                assert (ta is None) == (tb is None), field
                if ta is not None:
                    assert ta.dtype == tb.dtype and torch.equal(ta, tb), field
            assert value.kernel.name == other.kernel.name and value.kernel.bandwidth == other.kernel.bandwidth
            assert value.kernel.profile is other.kernel.profile
            assert value.options == other.options
        elif key == "callback":
            assert other is None
        elif isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.shape == other.shape, key
            assert np.array_equal(value, other), key
        else:
            assert type(value) is type(other) and value == other, key


# -- round trips ---------------------------------------------------------------------------------
def test_save_load_identical(fitted, tmp_path):
    est, X_fit, y_fit, X_query = fitted
    path = tmp_path / "model.safetensors"
    assert est.save(path) == path
    loaded = asyncopt.load(path)
    assert type(loaded) is type(est)
    assert loaded.get_params() == est.get_params()
    assert_same_state(est, loaded)
    assert_same_outputs(est, loaded, X_query)
    assert est.score(X_fit, y_fit) == loaded.score(X_fit, y_fit)
    # a loaded model saves to the same content again
    path2 = tmp_path / "again.safetensors"
    loaded.save(path2)
    assert read_file(path, "model")[0] == read_file(path2, "model")[0]


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_and_joblib_identical(fitted, dump, tmp_path):
    est, X_fit, y_fit, X_query = fitted
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(est))
    else:
        joblib.dump(est, tmp_path / "model.joblib")
        loaded = joblib.load(tmp_path / "model.joblib")
    assert_same_state(est, loaded)
    assert_same_outputs(est, loaded, X_query)
    assert est.score(X_fit, y_fit) == loaded.score(X_fit, y_fit)


def test_predict_proba_logistic(tmp_path):
    est = ProxSGDClassifier(max_epochs=3, random_state=0).fit(X, Y_STR)  # one-vs-rest, string labels
    est.save(tmp_path / "m.safetensors")
    loaded = asyncopt.load(tmp_path / "m.safetensors")
    assert np.array_equal(est.predict_proba(X_TEST), loaded.predict_proba(X_TEST))
    assert list(loaded.classes_) == ["cat", "dog", "emu"] and loaded.classes_.dtype == est.classes_.dtype


def test_callback_dropped_random_state_generator_stored_as_none(tmp_path):
    seen = []
    est = ProxSGDRegressor(max_epochs=2, callback=seen.append, random_state=np.random.RandomState(0)).fit(X, Y)
    assert seen
    est.save(tmp_path / "m.safetensors")
    loaded = asyncopt.load(tmp_path / "m.safetensors")
    assert loaded.callback is None and loaded.random_state is None
    assert np.array_equal(est.predict(X_TEST), loaded.predict(X_TEST))


def test_feature_names_tuples_and_tagged_values(tmp_path):
    est = ProxSGDRegressor(penalty="box", bounds=(-2.0, 2.0), max_epochs=2, random_state=0).fit(X, Y)
    # as fit on a DataFrame with named columns sets it (pandas is not a dependency)
    est.feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)
    est.notes_ = {"folder": tmp_path, 3: np.float32(0.5), "dtype": torch.float32, "device": torch.device("cpu")}
    est.save(tmp_path / "m.safetensors")
    loaded = asyncopt.load(tmp_path / "m.safetensors")
    assert loaded.bounds == (-2.0, 2.0)
    assert loaded.feature_names_in_.dtype == object and list(loaded.feature_names_in_) == ["a", "b", "c", "d"]
    assert np.array_equal(est.coef_, loaded.coef_) and np.array_equal(est.intercept_, loaded.intercept_)
    assert loaded.notes_ == est.notes_ and type(loaded.notes_[3]) is np.float32


def test_saved_on_missing_device_loads_on_cpu_with_warning(tmp_path):
    """A model saved on a GPU loads on a machine without it: its data moves to CPU, with a warning."""
    est = EigenProRegressor(epochs=2, random_state=0).fit(X, Y)
    path = tmp_path / "m.safetensors"
    est.save(path)
    payload, arrays = read_file(path, "model")
    content = json.loads(json.dumps({k: v for k, v in payload.items() if k != "digest"}).replace('"cpu"', '"cuda:7"'))
    assert content["params"]["device"] == "cuda:7" and content["attributes"]["_data"]["device"] == "cuda:7"
    write_file(path, "model", {**content, "digest": model_files._payload_digest(content)}, arrays)
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.warns(UserWarning, match="cuda:7.*loaded on CPU"):
        loaded = asyncopt.load(path)
    assert loaded.device == "cuda:7"  # the parameter is kept as saved
    assert loaded._data.options.device == torch.device("cpu")
    assert np.array_equal(est.predict(X_TEST), loaded.predict(X_TEST))


def test_unknown_saved_parameter_is_dropped_with_warning(tmp_path):
    est = ProxSGDRegressor(max_epochs=2, random_state=0).fit(X, Y)
    path = tmp_path / "m.safetensors"
    est.save(path)
    payload, arrays = read_file(path, "model")
    content = {k: v for k, v in payload.items() if k != "digest"}
    content["params"]["retired_knob"] = 3
    write_file(path, "model", {**content, "digest": model_files._payload_digest(content)}, arrays)
    with pytest.warns(UserWarning, match="retired_knob"):
        loaded = asyncopt.load(path)
    assert np.array_equal(est.predict(X_TEST), loaded.predict(X_TEST))


# -- no pickle -------------------------------------------------------------------------------------
PLAIN_DTYPES = {"F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}


def test_model_file_holds_no_pickle(fitted, tmp_path, monkeypatch):
    est, _, _, X_query = fitted
    path = tmp_path / "m.safetensors"
    est.save(path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert tensors, "the arrays are stored as tensors"
    for name, info in tensors.items():
        assert info["dtype"] in PLAIN_DTYPES, name
    assert set(header["__metadata__"]) == {"asyncopt", "digest"}

    def refuse(*args, **kwargs):
        raise AssertionError("asyncopt.load must not unpickle")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = asyncopt.load(path)
    assert np.array_equal(est.predict(X_query), loaded.predict(X_query))


# -- files that are not (usable) models --------------------------------------------------------------
@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    est = ProxSGDClassifier(max_epochs=2, random_state=0).fit(X, Y_BIN)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    est.save(path)
    return est, path.read_bytes()


def assert_refused(path, match=None):
    with pytest.raises(FileFormatError) as info:
        asyncopt.load(path)
    assert str(path) in str(info.value)
    if match is not None:
        assert match in str(info.value)
    return info.value


def test_truncated_files(model_bytes, tmp_path):
    _, raw = model_bytes
    n = int.from_bytes(raw[:8], "little")
    for cut in sorted({0, 1, 7, 8, 9, 100, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(raw) - 8, len(raw) - 1}):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(raw[:cut])
        assert_refused(path)


def test_flipped_byte_in_arrays(model_bytes, tmp_path):
    _, raw = model_bytes
    n = int.from_bytes(raw[:8], "little")
    for offset in (8 + n, 8 + n + 5, len(raw) - 1):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x01  # one bit: the smallest change, caught by the arrays' digest
        path = tmp_path / f"flip{offset}.safetensors"
        path.write_bytes(bytes(damaged))
        assert_refused(path, "checksum")


def test_flipped_byte_in_header(model_bytes, tmp_path):
    est, raw = model_bytes
    n = int.from_bytes(raw[:8], "little")
    # one digit of a fitted number in the JSON payload: valid JSON, a different model without the payload digest
    at = raw.index(b'\\"step_size_\\": ') + len(b'\\"step_size_\\": ') + 3
    assert chr(raw[at]).isdigit()
    damaged = bytearray(raw)
    damaged[at] = ord("0") + (raw[at] - ord("0") + 1) % 10
    path = tmp_path / "digit.safetensors"
    path.write_bytes(bytes(damaged))
    assert_refused(path, "checksum")
    # the class name, the header length, and a sweep of single-bit flips over the whole header: each is
    # refused, or (a version 1 -> 0, a 17th digit that rounds to the same float) loads as the same model
    at = raw.index(b"ProxSGDClassifier") + 3
    for offset in [0, at, *range(1, 8 + n, 13)]:
        damaged = bytearray(raw)
        damaged[offset] ^= 0x01
        path = tmp_path / f"header{offset}.safetensors"
        path.write_bytes(bytes(damaged))
        try:
            loaded = asyncopt.load(path)
        except FileFormatError as exc:
            assert str(path) in str(exc)
        else:
            assert_same_state(est, loaded)


def test_not_a_model(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    assert_refused(empty, "empty")
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a model\n" * 20)
    assert_refused(text)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_refused(noise)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(foreign))
    assert_refused(foreign)
    checkpoint = tmp_path / "checkpoint.safetensors"
    write_file(checkpoint, "checkpoint", {}, {})
    assert_refused(checkpoint, "checkpoint")
    model_without_payload = tmp_path / "bare.safetensors"
    write_file(model_without_payload, "model", {}, {})
    assert_refused(model_without_payload)
    with pytest.raises(FileNotFoundError):
        asyncopt.load(tmp_path / "missing.safetensors")


def test_other_class_refused(model_bytes, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(model_bytes[1])
    payload, arrays = read_file(path, "model")
    content = {k: v for k, v in payload.items() if k != "digest"}
    content["class"] = "Pipeline"
    write_file(path, "model", {**content, "digest": model_files._payload_digest(content)}, arrays)
    assert_refused(path, "'Pipeline'")


def test_newer_format_version(monkeypatch, tmp_path):
    est = ProxSGDRegressor(max_epochs=2, random_state=0).fit(X, Y)
    path = tmp_path / "m.safetensors"
    with monkeypatch.context() as patch:
        patch.setattr(persistence, "FORMAT_VERSION", persistence.FORMAT_VERSION + 1)
        est.save(path)
    assert_refused(path, "written by a newer asyncopt")


# -- what cannot be saved ---------------------------------------------------------------------------
def exp_kernel(A, B, bandwidth):
    return torch.exp(-torch.cdist(A, B) / bandwidth)


def test_callable_kernel_refused(tmp_path):
    est = EigenProRegressor(kernel=exp_kernel, bandwidth=2.0, epochs=1, random_state=0).fit(X, Y)
    with pytest.raises(ValueError, match="a kernel callable cannot be stored in a model file without code") as info:
        est.save(tmp_path / "m.safetensors")
    assert "kernel" in str(info.value) and "pickle/joblib" in str(info.value)
    assert not (tmp_path / "m.safetensors").exists()
    # pickle still carries it (the function by reference)
    assert np.array_equal(pickle.loads(pickle.dumps(est)).predict(X_TEST), est.predict(X_TEST))


@pytest.mark.parametrize("cls", [EigenProRegressor, EigenProClassifier, ProxSGDRegressor, ProxSGDClassifier])
def test_unfitted_save_raises(cls, tmp_path):
    with pytest.raises(NotFittedError):
        cls().save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_other_objects_refused(tmp_path):
    with pytest.raises(TypeError, match="save_model stores"):
        model_files.save_model(object(), tmp_path / "m.safetensors")
    est = ProxSGDRegressor(max_epochs=2, random_state=0).fit(X, Y)
    est.extra_ = io.BytesIO()  # an attribute a file cannot hold: a clear error, not a silent drop
    with pytest.raises(ValueError, match="extra_.*pickle/joblib"):
        est.save(tmp_path / "m.safetensors")
