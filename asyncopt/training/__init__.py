"""Runs: an algorithm, an engine, the stopping and step rules, history and checkpoints.

This layer sits between the estimators (which validate input and choose settings) and the two
layers below it that never import each other: the algorithms' math (`asyncopt.eigenpro`,
`asyncopt.proxsgd`, `asyncopt.kernels`) and the engines (`asyncopt.engines`).
"""

from asyncopt.training.checkpoints import Checkpointing, StopSignals
from asyncopt.training.state import TrainingState

__all__ = ["Checkpointing", "StopSignals", "TrainingState"]
