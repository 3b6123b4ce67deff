"""Convergence plots of an estimator's ``history_`` (needs matplotlib: the 'plot' extra)."""

from __future__ import annotations


def plot_history(history, path=None, title=None):
    """Plot train MSE (log scale) and the validation metric against seconds; save to `path` if given.

    Returns the matplotlib Figure.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [h["seconds"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].semilogy(seconds, [h["train_mse"] for h in history], marker="o")
    ax[0].set(xlabel="training seconds", ylabel="train MSE (fixed subsample)")
    vals = [h["val_metric"] for h in history]
    if any(v is not None for v in vals):
        ax[1].plot(seconds, vals, marker="o", color="C1")
    ax[1].set(xlabel="training seconds", ylabel="validation metric")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
