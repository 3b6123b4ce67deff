"""Engines: where and when an algorithm's pure step functions run. They know nothing about kernels."""

from asyncopt.engines.base import AsyncAlgorithm, Monitor, Schedule, WorkerFailed
from asyncopt.engines.serial import SerialEngine
from asyncopt.engines.telemetry import Telemetry
from asyncopt.engines.workers import WorkerEngine

__all__ = [
    "AsyncAlgorithm",
    "Monitor",
    "Schedule",
    "SerialEngine",
    "Telemetry",
    "WorkerEngine",
    "WorkerFailed",
    "make_engine",
]


def make_engine(
    backend: str,
    n_workers: int = 1,
    threads_per_worker=None,
    max_delay: int = 0,
    delay: str = "fixed",
    inconsistent_reads: bool = False,
    synchronous: bool = False,
    devices=None,
    servers_in_workers: bool = False,
):
    """The engine for an estimator's `backend` parameter."""
    if backend == "serial":
        return SerialEngine(max_delay=max_delay, delay=delay, inconsistent_reads=inconsistent_reads)
    if backend in ("threads", "processes"):
        return WorkerEngine(
            backend=backend,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            synchronous=synchronous,
            devices=list(devices) if devices is not None else None,
            servers_in_workers=servers_in_workers,
        )
    raise ValueError(f"backend={backend!r} must be 'serial', 'threads' or 'processes'")
