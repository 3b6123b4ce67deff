"""Errors a fit can end with, shared by both algorithm families."""


class TrainingDiverged(FloatingPointError):
    """The loss, the parameters or an update became non-finite; the message names the setting to change."""
