"""Whole fits of two code paths of one estimator side by side: the A/B benchmarks of a compiled path
against the torch step it replaced (proxsgd_dense_rows.py, proxsgd_multinomial.py,
proxsgd_swept_penalties.py)."""

from __future__ import annotations

import statistics
import time
import warnings


def timed_fit(model, X, y):
    """(seconds, model): the whole fit, warnings silenced (the tables report each fit's end)."""
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    return time.perf_counter() - t, model


def ab_row(cells, fit, paths, rounds: int, digits: int = 6) -> str:
    """One table row: `cells`, then the batch, epochs, final F of each path, the median seconds of
    each and the ratio second / first. fit(path) -> (seconds, fitted model); a warm-up fit of the
    first path (its compiled kernels loaded) is not counted, then `rounds` rounds alternate the paths."""
    first, second = paths
    fit(first)
    times, models = {first: [], second: []}, {}
    for _ in range(rounds):
        for path in paths:
            seconds, models[path] = fit(path)
            times[path].append(seconds)
    a, b = statistics.median(times[first]), statistics.median(times[second])
    h = {path: models[path].history_[-1] for path in paths}
    return (
        f"| {' | '.join(str(c) for c in cells)} | {models[first].batch_size_} "
        f"| {h[first]['epoch']:g} / {h[second]['epoch']:g} "
        f"| {h[first]['objective']:.{digits}g} / {h[second]['objective']:.{digits}g} "
        f"| {a:.3f} | {b:.3f} | {b / a:.2f} |"
    )
