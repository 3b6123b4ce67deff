import re

from asyncopt.cli import main


def test_demo_trains_on_bundled_digits(capsys, tmp_path):
    plot = tmp_path / "history.png"
    assert main(["demo", "--epochs", "2", "--quiet", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "scikit-learn digits" in out and "critical batch" in out
    test_acc = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert test_acc > 0.95
    assert plot.stat().st_size > 10_000


def test_bad_argument_is_a_clear_error(capsys):
    assert main(["demo", "--kernel", "cosine", "--quiet"]) == 2
    assert "'kernel' parameter" in capsys.readouterr().err


def test_sparse_demo_trains_l1_logistic_on_bundled_data(capsys):
    assert main(["sparse-demo", "--epochs", "5", "--quiet", "--blocks", "2"]) == 0
    out = capsys.readouterr().out
    assert "breast cancer" in out and "||G||^2" in out
    assert float(re.search(r"test accuracy (\d\.\d+)", out).group(1)) > 0.93


def test_sparse_demo_bad_alpha_is_a_clear_error(capsys):
    assert main(["sparse-demo", "--alpha", "-1", "--quiet"]) == 2
    assert "'alpha' parameter" in capsys.readouterr().err


# -- fit / predict / info / bench ------------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import asyncopt  # noqa: E402
from tests.conftest import require_data  # noqa: E402


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_fit_then_predict_on_bundled_digits(capsys, tmp_path):
    model, out = tmp_path / "digits.model", tmp_path / "pred.csv"
    assert main(["fit", "--model", "eigenpro", "--data", "sklearn:digits", "--output", str(model), "--epochs", "2",
                 "--random-state", "0", "--quiet"]) == 0  # fmt: skip
    est = asyncopt.load(model)
    assert type(est).__name__ == "EigenProClassifier" and est.epochs == 2 and est.random_state == 0
    assert main(["predict", "--model", str(model), "--data", "sklearn:digits", "--output", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "prediction" and len(rows) == 1 + 1797
    from sklearn.datasets import load_digits

    assert np.mean(np.array(rows[1:], dtype=int) == load_digits().target) > 0.99
    assert "accuracy on the file's labels" in capsys.readouterr().err


def test_fit_reads_a_csv_with_a_header_and_named_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    names = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "spam", "ham")
    csv = tmp_path / "mail.csv"
    csv.write_text("f1,label,f2,f3\n" + "".join(f"{a},{n},{b},{c}\n" for (a, b, c), n in zip(X, names, strict=True)))
    model = tmp_path / "m.model"
    args = ["--data", str(csv), "--target-column", "label"]
    assert main(["fit", "--model", "proxsgd", *args, "--output", str(model), "--alpha", "1e-4", "--quiet"]) == 0
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(model), *args, "--output", str(out), "--proba"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "ham,spam" and len(lines) == 301
    proba = np.array([row.split(",") for row in lines[1:]], dtype=float)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.mean(np.where(proba[:, 1] > 0.5, "spam", "ham") == names) > 0.9


def test_regression_is_chosen_for_real_valued_labels(tmp_path, capsys):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 5))
    y = X @ rng.normal(size=5) + 0.01 * rng.normal(size=200)
    data = tmp_path / "reg.svm"
    dump_svmlight_file(X, y, str(data))
    model = tmp_path / "r.model"
    assert main(["fit", "--model", "proxsgd", "--data", str(data), "--output", str(model), "--max-epochs", "30"]) == 0
    err = capsys.readouterr().err
    assert "ProxSGDRegressor (regression" in err
    assert main(["predict", "--model", str(model), "--data", str(data)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "prediction" and len(out.splitlines()) == 201
    assert float(re.search(r"R\^2 on the file's labels: (-?[\d.]+)", err).group(1)) > 0.9


BAD = [
    (["fit", "--model", "proxsgd", "--data", "sklearn:digits", "--output", "{tmp}/m", "--bandwidth", "3"], 2,
     "--bandwidth is an option of --model eigenpro"),
    (["fit", "--model", "eigenpro", "--data", "sklearn:digits", "--output", "{tmp}/m", "--epochs", "-1"], 2,
     "'epochs' parameter"),
    (["fit", "--model", "eigenpro", "--data", "{tmp}/missing.csv", "--output", "{tmp}/m"], 1, "no such file"),
    (["fit", "--model", "eigenpro", "--data", "{tmp}/ragged.csv", "--output", "{tmp}/m"], 1, "ragged.csv"),
    (["fit", "--model", "eigenpro", "--data", "{tmp}/nan.csv", "--output", "{tmp}/m"], 1, "NaN or infinite"),
    (["fit", "--model", "eigenpro", "--data", "{tmp}/empty.svm", "--output", "{tmp}/m"], 1, "empty"),
    (["fit", "--model", "eigenpro", "--data", "sklearn:digits", "--output", "{tmp}/no/m"], 2, "does not exist"),
    (["fit", "--model", "eigenpro", "--data", "sklearn:digits", "--output", "{tmp}/m", "--resume"], 2,
     "--resume needs --checkpoint-dir"),
    (["fit", "--model", "eigenpro"], 2, "required: --data, --output"),
    (["predict", "--model", "{tmp}/ragged.csv", "--data", "sklearn:digits"], 1, "not an asyncopt model file"),
    (["predict", "--model", "{tmp}/missing.model", "--data", "sklearn:digits"], 1, "missing.model"),
    (["bench", "delay", "--model", "eigenpro", "--data", "sklearn:digits", "--delays", "x", "--output-dir", "{tmp}/b"],
     2, "--delays 'x'"),
    (["fitt"], 2, "invalid choice"),
]  # fmt: skip


def test_fit_says_which_columns_the_run_rescaled(tmp_path, capsys):
    import scipy.sparse as sp
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(2)
    onehot = sp.csr_matrix(np.eye(8)[rng.integers(0, 8, 400)])
    income = rng.lognormal(9.0, 0.5, (400, 1))  # (among 0/1 columns: scaled down inside the run)
    y = onehot @ rng.normal(size=8) + 1e-4 * income[:, 0]
    data = tmp_path / "mixed.svm"
    dump_svmlight_file(sp.hstack([onehot, income]).tocsr(), y, str(data))
    model = str(tmp_path / "m.model")
    argv = ["fit", "--model", "proxsgd", "--data", str(data), "--output", model, "--max-epochs", "5"]
    assert main(argv) == 0
    assert "columns: 1 of 9 rescaled inside the run" in capsys.readouterr().err
    assert main([*argv, "--column-scaling", "none"]) == 0
    assert "rescaled" not in capsys.readouterr().err


def test_fit_says_when_heavy_rows_are_drawn_more_often_and_takes_class_weights_by_label(tmp_path, capsys):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 6))
    X[5] *= 300.0  # (one row that would set the batch: drawn more often)
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=3000) > 0.8, 1, -1)  # (imbalanced classes -1 / 1)
    data = tmp_path / "rows.svm"
    dump_svmlight_file(X, y, str(data))
    model = str(tmp_path / "m.model")
    argv = ["fit", "--model", "proxsgd", "--data", str(data), "--output", model, "--max-epochs", "3"]
    assert main([*argv, "--class-weight", '{"1": 3}']) == 0
    assert "rows: the heaviest drawn more often" in capsys.readouterr().err
    from asyncopt import load

    assert load(model).class_weight == {1.0: 3}  # (the JSON key named the label 1)
    assert main([*argv, "--row-splitting", "none"]) == 0
    assert "drawn more often" not in capsys.readouterr().err
    assert main([*argv, "--class-weight", '{"2": 3}']) == 2
    assert "--class-weight names '2', not a label of the data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "status", "says"), BAD, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _, _) in enumerate(BAD)]
)
def test_a_user_mistake_is_one_line_on_stderr(tmp_path, capsys, argv, status, says):
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    (tmp_path / "nan.csv").write_text("1,2,0\nnan,5,1\n")
    (tmp_path / "empty.svm").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # (argparse's own errors)
        code = exc.code
    out, err = capsys.readouterr()
    assert code == status, err
    assert says in err and len(_lines(err)) == 1, err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "m").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "fit", "--model", "eigenpro", "--data", str(tmp_path / "none.csv"), "--output", "m"])


def test_a_failed_predict_leaves_no_output_file(tmp_path, capsys):
    model, out = tmp_path / "m.model", tmp_path / "out.csv"
    assert main(["fit", "--model", "eigenpro", "--data", "sklearn:digits", "--output", str(model), "--epochs", "1",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["predict", "--model", str(model), "--data", "sklearn:iris", "--output", str(out)]) == 1
    assert "4 features, and the model was fitted on 64" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [model]


def test_info_names_versions_devices_and_ray(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch 2." in out and "devices: cpu" in out and "CPU:" in out and "ray:" in out


def test_bench_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "delay", "--model", "eigenpro", "--data", "sklearn:digits", "--delays", "0,3", "--epochs",
                 "2", "--random-state", "0", "--output-dir", str(out), "--quiet"]) == 0  # fmt: skip
    result = json.loads((out / "delay.json").read_text())
    assert [r["max_delay"] for r in result["rows"]] == [0, 3]
    assert result["rows"][0]["epochs_to_target"] is not None and result["loss"] == "train_mse"
    assert "| max_delay |" in (out / "delay.md").read_text()
    assert (out / "delay.png").stat().st_size > 10_000 and (out / "delay_convergence.png").stat().st_size > 10_000
    assert main(["bench", "speedup", "--model", "proxsgd", "--data", "sklearn:digits", "--workers", "1,2", "--engine",
                 "threads", "--max-epochs", "3", "--output-dir", str(out), "--quiet"]) == 0  # fmt: skip
    rows = json.loads((out / "speedup.json").read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, 2] and rows[0]["speedup"] == 1.0
    assert all(r["throughput_speedup"] > 0 for r in rows)


def test_an_interrupted_cli_fit_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGINT during `asyncopt fit --checkpoint-dir` leaves a checkpoint and exits 130; the same
    command with --resume finishes the run, and its model is the uninterrupted run's."""
    path = require_data("a9a", "a9a.gz")
    common = ["fit", "--model", "proxsgd", "--data", str(path), "--penalty", "l1", "--alpha", "1e-4", "--max-epochs",
              "40", "--tol", "none", "--evals-per-epoch", "2", "--random-state", "0"]  # fmt: skip
    whole = tmp_path / "whole.model"
    assert main([*common, "--output", str(whole), "--quiet"]) == 0
    folder, resumed = tmp_path / "ckpt", tmp_path / "resumed.model"
    cmd = [sys.executable, "-m", "asyncopt.cli", *common, "--output", str(resumed), "--checkpoint-dir", str(folder)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    while "ProxSGDClassifier: " not in (line := proc.stderr.readline()):  # the first evaluation point
        assert line, "the fit ended before its first evaluation point"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "--resume continues" in err and not resumed.exists()
    assert main([*common, "--output", str(resumed), "--checkpoint-dir", str(folder), "--resume", "--quiet"]) == 0
    a, b = asyncopt.load(whole), asyncopt.load(resumed)
    assert a.history_[-1]["samples"] == b.history_[-1]["samples"]
    np.testing.assert_allclose(b.history_[-1]["objective"], a.history_[-1]["objective"], rtol=1e-7)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-6, atol=1e-9)


def test_the_quickstart_generalizes_to_the_held_out_digits(tmp_path, capsys):
    model = tmp_path / "digits.model"
    assert main(["fit", "--model", "eigenpro", "--data", "sklearn:digits-train", "--validation",
                 "sklearn:digits-test", "--output", str(model), "--quiet"]) == 0  # fmt: skip
    assert (
        main(["predict", "--model", str(model), "--data", "sklearn:digits-test", "--output", str(tmp_path / "p")]) == 0
    )
    err = capsys.readouterr().err
    assert "540 rows" in err and float(re.search(r"labels: ([\d.]+)", err).group(1)) > 0.97
    assert asyncopt.load(model).history_[-1]["val_metric"] > 0.97


def test_python_dash_m_asyncopt_is_the_command_line():
    from pathlib import Path

    root = str(Path(asyncopt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    run = subprocess.run([sys.executable, "-m", "asyncopt", "--help"], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and run.stdout.startswith("usage: asyncopt")
    run = subprocess.run([sys.executable, "-m", "asyncopt", "fit"], capture_output=True, text=True, env=env)
    assert run.returncode == 2 and "--model" in run.stderr


def test_a_warning_is_one_line_on_stderr(tmp_path, capsys):
    """A fit stopped short of its tolerance: scikit-learn's ConvergenceWarning as one line, without the
    code's path and source line (--debug keeps Python's own format)."""
    model = tmp_path / "digits.model"
    argv = ["fit", "--model", "proxsgd", "--data", "sklearn:digits", "--output", str(model), "--max-epochs", "1"]
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    told = [line for line in err.splitlines() if "ConvergenceWarning" in line]
    assert told and all(line.startswith("asyncopt fit: warning: ConvergenceWarning: ") for line in told), err
    assert "max_epochs=1" in told[0] and ".py:" not in err
