"""`asyncopt fit` and `asyncopt predict`: train on a data file and write a model file; predict from one.

The model options are the estimators' parameters, spelled with dashes (`--batch-size 256`,
`--n-workers 2`); `asyncopt fit --model proxsgd --help` lists them with their defaults.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from asyncopt.cli.errors import UsageError

MODELS = ("eigenpro", "proxsgd")
TASKS = ("auto", "classification", "regression")
# parameters the command line sets itself (or that a shell cannot spell)
OWN = {"callback", "verbose", "checkpoint_dir", "groups"}
MAX_AUTO_CLASSES = 100  # "auto": integer labels with at most this many values are classes


def _estimators(model: str) -> tuple[type, type]:
    from asyncopt import EigenProClassifier, EigenProRegressor, ProxSGDClassifier, ProxSGDRegressor

    return {
        "eigenpro": (EigenProClassifier, EigenProRegressor),
        "proxsgd": (ProxSGDClassifier, ProxSGDRegressor),
    }[model]


def model_parameters() -> dict[str, dict[str, object]]:
    """For each model, its parameters (classifier and regressor together) and their defaults."""
    out = {}
    for model in MODELS:
        params: dict[str, object] = {}
        for cls in _estimators(model):
            params.update(cls().get_params(deep=False))
        out[model] = {k: v for k, v in sorted(params.items()) if k not in OWN}
    return out


def add_parsers(sub) -> None:
    fit = sub.add_parser(
        "fit",
        help="train a model on a data file and write the model file",
        description="Train on a data file (LIBSVM, CSV, npz, IDX, or sklearn:NAME) and write a model file.",
    )
    _data_options(fit)
    fit.add_argument("--validation", default=None, metavar="PATH", help="validation data (same format): val_metric")
    fit.add_argument("--output", required=True, metavar="MODEL", help="the model file to write")
    fit.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="checkpoints (SIGINT/SIGTERM save one)")
    fit.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir")
    fit.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_model_options(fit)
    fit.set_defaults(run=run_fit)

    predict = sub.add_parser(
        "predict",
        help="predict with a model file",
        description="Predict the samples of a data file with a model written by `asyncopt fit`.",
    )
    predict.add_argument("--model", required=True, metavar="MODEL", help="a model file from `asyncopt fit`")
    _data_options(predict, fitting=False)
    predict.add_argument("--output", default=None, metavar="FILE", help="CSV (or .npy) to write; default stdout")
    what = predict.add_mutually_exclusive_group()
    what.add_argument("--proba", action="store_true", help="class probabilities (ProxSGD logistic models)")
    what.add_argument("--scores", action="store_true", help="decision values (classifiers)")
    predict.add_argument("--quiet", action="store_true", help="print nothing but errors")
    predict.set_defaults(run=run_predict)


def add_model_options(parser) -> None:
    """--model, --task and every estimator parameter as an option (--batch-size ...)."""
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--task", choices=TASKS, default="auto", help="auto: classes when the labels are few integers")
    group = parser.add_argument_group("model options (the estimators' parameters; which model in brackets)")
    everything = {}
    for model, names in model_parameters().items():
        for name, default in names.items():
            everything.setdefault(name, []).append((model, default))
    for name, owners in sorted(everything.items()):
        which = "/".join(m for m, _ in owners)
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"param_{name}",
            default=None,
            metavar="V",
            help=f"[{which}] default {owners[0][1]!r}",
        )


def make_estimator(args, y: np.ndarray, **fixed):
    """The estimator the options ask for (classifier or regressor by --task and the labels), its
    parameters checked (a wrong value is a usage error, before any work); and the task."""
    params = _given_params(args, args.model)
    task = _task(y, args.task)
    if task == "regression" and y.dtype.kind in "USO":
        raise UsageError(f"--task regression needs numeric labels; the labels are names such as {y[0]!r}")
    classifier, regressor = _estimators(args.model)
    cls = classifier if task == "classification" else regressor
    if isinstance(params.get("class_weight"), dict):
        params["class_weight"] = _labelled_weights(params["class_weight"], y)
    est = cls(**{**params, **fixed})
    est._validate_params()
    return est, task


def _labelled_weights(weights: dict, y: np.ndarray) -> dict:
    """--class-weight's JSON keys (always strings) as the labels they name: '{"1": 2}' for label 1."""
    names = {}
    for label in np.unique(y).tolist():
        names[str(label)] = label
        if isinstance(label, float) and label.is_integer():
            names[str(int(label))] = label
    unknown = [key for key in weights if str(key) not in names]
    if unknown:
        raise UsageError(
            f"--class-weight names {', '.join(map(repr, unknown))}, not a label of the data "
            f"(labels: {', '.join(sorted(set(map(str, np.unique(y).tolist()))))})"
        )
    return {names[str(key)]: value for key, value in weights.items()}


def _data_options(parser, fitting: bool = True) -> None:
    from asyncopt.readers import FORMATS

    parser.add_argument("--data", required=True, metavar="PATH", help="a data file, or sklearn:digits (bundled)")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    default = "the last column" if fitting else "none: every column is a feature"
    parser.add_argument(
        "--target-column", default=None, metavar="N", help=f"CSV: the labels' column, index or name ({default})"
    )
    parser.add_argument("--labels", default=None, metavar="PATH", help="IDX: the labels file (default: its sibling)")


def parse_value(text: str, default):
    """A command-line value as the parameter's type: none, true/false, numbers, JSON, lists (a,b)."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if text.strip()[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{text!r} is not valid JSON ({exc.msg})") from None
    if isinstance(default, str) or default is None:  # "auto" or a number, a name, or a list
        if "," in text:
            return [parse_value(part, None) for part in text.split(",")]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _given_params(args, model: str) -> dict:
    allowed = model_parameters()[model]
    out = {}
    for key, value in vars(args).items():
        if not key.startswith("param_") or value is None:
            continue
        name = key.removeprefix("param_")
        if name not in allowed:
            other = next(m for m in MODELS if m != model)
            raise UsageError(f"--{name.replace('_', '-')} is an option of --model {other}, not of --model {model}")
        out[name] = parse_value(value, allowed[name])
        if out[name] is None and _takes_the_word_none(model, name):
            out[name] = "none"  # (--column-scaling none: the option "none", not Python's None)
    return out


def _takes_the_word_none(model: str, name: str) -> bool:
    """Whether the parameter has the string option "none" and does not take None (column_scaling,
    variance_reduction): there "none" on the command line means the word."""
    from sklearn.utils._param_validation import StrOptions

    constraints = _estimators(model)[0]._parameter_constraints.get(name, [])
    takes_word = any(isinstance(c, StrOptions) and "none" in c.options for c in constraints)
    return takes_word and not any(c is None for c in constraints)


def _task(y: np.ndarray, task: str) -> str:
    """classification or regression: as asked, or (auto) classes for strings and few integer labels."""
    if task != "auto":
        return task
    if y.dtype.kind in "USO":
        return "classification"
    values = np.unique(y)
    integral = np.all(np.mod(values, 1) == 0)
    return "classification" if integral and len(values) <= MAX_AUTO_CLASSES else "regression"


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def _check_output(path: str) -> Path:
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name")
    if not out.parent.exists():
        raise UsageError(f"--output {path}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"--output {path}: the folder {out.parent} is not writable")
    return out


def _start_workers(model: str, given: dict) -> None:
    """ProxSGD with --backend processes: the worker processes spawn before the data is read, and
    import torch and the package while the file is parsed (the fit then leases them): a9a 1.09x and
    news20 1.07x shorter (benchmarks/results/early_start.md). Not EigenPro: imports beside its
    multi-threaded setup slowed it (first_fit.md: 0.76x), and started before the file was read
    they gave no clear gain (MNIST 10k: 1.03-1.04x over 8 rounds, slower in 2 other runs)."""
    workers = given.get("n_workers", 1)
    if model == "proxsgd" and given.get("backend") == "processes" and isinstance(workers, int) and workers >= 1:
        from asyncopt.engines.transports import start_worker_pool

        start_worker_pool(workers)


def run_fit(args) -> int:
    from asyncopt.readers import read_data

    given = _given_params(args, args.model)  # (an option of the other model fails before the data is read)
    if args.resume and args.checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir (the folder of the interrupted run's checkpoints)")
    output = _check_output(args.output)
    target = -1 if args.target_column is None else args.target_column
    _start_workers(args.model, given)
    data = read_data(args.data, args.format, target, labels=args.labels)
    if data.y is None:
        raise UsageError(f"{args.data} holds no labels (IDX: give --labels; CSV: --target-column)")
    est, task = make_estimator(args, data.y, verbose=0 if args.quiet else 1, checkpoint_dir=args.checkpoint_dir)
    cls = type(est)
    classes = f", {len(np.unique(data.y))} classes" if task == "classification" else ""
    _say(args, f"data: {data.description}")
    _say(args, f"model: {cls.__name__} ({task}{classes}{', auto: --task to change' if args.task == 'auto' else ''})")
    fit_kwargs = {}
    if args.validation is not None:
        val = read_data(args.validation, args.format, target, n_features=data.X.shape[1], labels=None)
        if val.y is None:
            raise UsageError(f"{args.validation} holds no labels")
        if "X_val" not in inspect.signature(est.fit).parameters:
            raise UsageError(f"{cls.__name__} takes no validation set")
        fit_kwargs.update(X_val=val.X, y_val=val.y)
        _say(args, f"validation: {val.description}")
    if args.resume:
        fit_kwargs["resume"] = True
    t0 = time.perf_counter()
    try:
        est.fit(data.X, data.y, **fit_kwargs)
    except KeyboardInterrupt:
        where = (
            f"checkpoint in {args.checkpoint_dir}: the same command with --resume continues"
            if args.checkpoint_dir
            else "nothing saved (--checkpoint-dir keeps a checkpoint)"
        )
        raise KeyboardInterrupt(f"fit stopped; {where}") from None
    wall = time.perf_counter() - t0
    if not args.quiet:
        _report(est, wall, data.X.shape[0])
    written = est.save(output)
    _say(args, f"model written to {written} ({Path(written).stat().st_size:,} bytes)")
    return 0


def _report(est, wall: float, n_rows: int) -> None:
    """The history as a table, on stderr (stdout stays free for data)."""
    history = est.history_
    keys = [k for k in ("train_mse", "objective", "val_metric", "nnz") if history and history[-1].get(k) is not None]
    head = f"{'epoch':>7} {'seconds':>8} " + " ".join(f"{k:>11}" for k in keys)
    lines = [head]
    shown = history if len(history) <= 12 else history[:: max(1, len(history) // 10)] + [history[-1]]
    for h in shown:
        cells = " ".join(f"{h[k]:11.5g}" if isinstance(h[k], float) else f"{h[k]:>11}" for k in keys)
        lines.append(f"{h['epoch']:7.2f} {h['seconds']:8.2f} {cells}")
    lines.append(f"fit: {wall:.1f} s wall, {history[-1]['samples']:,} samples" if history else f"fit: {wall:.1f} s")
    scale = getattr(est, "column_scale_", None)
    if scale is not None and (scale != 1.0).any():  # (ProxSGD's column_scaling)
        lines.append(
            f"columns: {int((scale != 1.0).sum()):,} of {len(scale):,} rescaled inside the run (the model is in "
            f"your units; --column-scaling none keeps them as given)"
        )
    draws = getattr(est, "draws_per_epoch_", None)
    if draws is not None and draws > n_rows:  # (ProxSGD's row_splitting)
        lines.append(
            f"rows: the heaviest drawn more often, {draws - n_rows:,} extra draws an epoch of {draws:,} (an epoch "
            f"counts them; --row-splitting none draws each row once)"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)


def run_predict(args) -> int:
    import asyncopt
    from asyncopt.readers import read_data

    model = asyncopt.load(args.model)
    is_classifier = hasattr(model, "classes_")
    if args.proba and not hasattr(model, "predict_proba"):
        raise UsageError(f"{type(model).__name__} gives no probabilities; --scores gives its decision values")
    if args.scores and not hasattr(model, "decision_function"):
        raise UsageError(f"{type(model).__name__} is a regressor: its predictions are its values")
    output = None if args.output is None else _check_output(args.output)
    data = read_data(args.data, args.format, args.target_column, model.n_features_in_, args.labels)
    _say(args, f"data: {data.description}")
    if args.proba:
        values, header = model.predict_proba(data.X), [str(c) for c in model.classes_]
    elif args.scores:
        values = model.decision_function(data.X)
        header = [str(c) for c in model.classes_] if np.ndim(values) == 2 else ["score"]
    else:
        values, header = model.predict(data.X), ["prediction"]
    if data.y is not None and not args.quiet:
        predicted = values if not (args.proba or args.scores) else model.predict(data.X)
        if is_classifier:
            _say(args, f"accuracy on the file's labels: {np.mean(predicted == data.y.astype(predicted.dtype)):.4f}")
        else:
            residual = np.mean((predicted - data.y) ** 2)
            _say(args, f"R^2 on the file's labels: {1 - residual / max(np.var(data.y), 1e-300):.4f}")
    _write_predictions(values, header, output)
    if output is not None:
        _say(args, f"{len(values):,} predictions written to {output}")
    return 0


def _write_predictions(values: np.ndarray, header: list[str], output: Path | None) -> None:
    """CSV with a header line (or .npy), written to a temporary file and renamed: never half a file."""
    values = np.asarray(values)
    if output is None:
        _csv(values, header, sys.stdout)
        return
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        if output.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, values, allow_pickle=False)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                _csv(values, header, f)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _csv(values: np.ndarray, header: list[str], f) -> None:
    import csv

    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    rows = values.reshape(len(values), -1)
    floats = np.issubdtype(rows.dtype, np.floating)
    writer.writerows([[f"{v:.9g}" for v in row] if floats else list(row) for row in rows.tolist()])
