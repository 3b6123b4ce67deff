"""Errors a fit can end with, shared by both algorithm families."""


class TrainingDiverged(FloatingPointError):
    """The loss, the parameters or an update became non-finite; the message names the setting to change."""


class ActorFailureWarning(RuntimeWarning):
    """A Ray actor died during a fit and the run went on: a worker replaced (its tasks in flight
    sent again), or a server restarted (the updates it lost run again). The fit's
    `telemetry_["failures"]` keeps the records; more than the engine's `max_failures` end the fit."""
