"""Convergence plots (kept for existing code; asyncopt.plot has them all)."""

from asyncopt.plot import plot_history

__all__ = ["plot_history"]
