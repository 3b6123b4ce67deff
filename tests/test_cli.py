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
