"""asyncopt.plot: every picture from a fitted estimator, its history_ / telemetry_, or saved bench
results; files written, axes labelled, log scales where a loss is drawn."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from asyncopt import (  # noqa: E402
    EigenProClassifier,
    ProxSGDClassifier,
    plot,  # noqa: E402
)


@pytest.fixture(scope="module")
def fits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    eig = EigenProClassifier(epochs=2, evals_per_epoch=3, random_state=0).fit(X[:1200], y[:1200], X_val=X[1200:],
                                                                             y_val=y[1200:])  # fmt: skip
    prox = ProxSGDClassifier(penalty="l1", alpha=1e-4, max_epochs=4, tol=None, backend="threads", n_workers=2,
                             random_state=0).fit(X, y)  # fmt: skip
    return eig, prox


def _labels(fig):
    return [(a.get_xlabel(), a.get_ylabel()) for a in fig.axes]


def test_convergence_from_estimators_histories_and_several_runs(fits, tmp_path):
    eig, prox = fits
    fig = plot.plot_convergence(eig, path=tmp_path / "eig.png")
    assert (tmp_path / "eig.png").stat().st_size > 10_000
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"  # train MSE, and the validation metric
    assert all(x and y for x, y in _labels(fig))
    fig = plot.plot_convergence(prox.history_, x="samples")  # a ProxSGD history (plot_history raised KeyError)
    assert fig.axes[0].get_ylabel() == "objective F(x)" and fig.axes[0].get_xlabel() == "samples processed"
    fig = plot.plot_convergence({"a": prox, "b": prox.history_[:2]}, optimum=0.5 * prox.history_[-1]["objective"])
    assert "suboptimality" in fig.axes[0].get_ylabel()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]
    plot.plot_history(prox.history_, tmp_path / "prox.png")  # the old name draws ProxSGD too
    with pytest.raises(ValueError, match="x='wall'"):
        plot.plot_convergence(prox, x="wall")


def test_staleness_and_timeline_from_telemetry(fits, tmp_path):
    _, prox = fits
    fig = plot.plot_staleness(prox, path=tmp_path / "s.png")
    assert fig.axes[0].get_yscale() == "log" and "staleness" in fig.axes[0].get_xlabel()
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == prox.telemetry_["updates"]
    timeline = prox.telemetry_["timeline"]
    assert len(timeline) == 2 and all(len(line) > 0 for line in timeline)
    ends = [row[0] for row in timeline[0]]
    assert ends == sorted(ends)
    fig = plot.plot_timeline(prox.telemetry_, path=tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000 and "seconds" in fig.axes[0].get_xlabel()


def test_the_timeline_stays_bounded():
    from asyncopt.engines.telemetry import TIMELINE_CAP, Telemetry

    t = Telemetry(n_workers=1)
    for i in range(10 * TIMELINE_CAP):
        t.record(0, 0, 1, 1e-3, float(i))
    line = t.timeline[0]
    assert len(line) < TIMELINE_CAP and t.timeline_stride[0] >= 8
    waits = [row[2] for row in line]
    assert waits[0] == 0.0 and waits[-1] > 0.9 * 10 * TIMELINE_CAP  # from the start to near the end


def test_speedup_and_delay_from_saved_results(tmp_path):
    speed = {"rows": [{"workers": 1, "speedup": 1.0, "throughput_speedup": 1.0},
                      {"workers": 2, "speedup": 1.7, "throughput_speedup": 1.9}]}  # fmt: skip
    path = tmp_path / "speedup.json"
    path.write_text(json.dumps(speed))
    fig = plot.plot_speedup(str(path), path=tmp_path / "speedup.png")
    assert fig.axes[0].get_xlabel() == "workers" and len(fig.axes[0].lines) == 3
    delay = {"rows": [{"max_delay": 0, "epochs_to_target": 2.0}, {"max_delay": 7, "epochs_to_target": 2.5},
                      {"max_delay": 31, "epochs_to_target": None}]}  # fmt: skip
    fig = plot.plot_delay(delay, path=tmp_path / "delay.png")
    assert fig.axes[0].get_xscale() == "log"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["target reached", "not reached (or diverged)"]
    with pytest.raises(ValueError, match="no results"):
        plot.plot_delay({"rows": []})
    assert np.isfinite(fig.axes[0].get_ylim()).all()
