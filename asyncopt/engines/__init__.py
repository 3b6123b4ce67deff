"""Engines: where and when an algorithm's pure step functions run. They know nothing about kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from asyncopt.engines.base import AsyncAlgorithm, Monitor, Schedule, WorkerFailed
from asyncopt.engines.serial import SerialEngine
from asyncopt.engines.telemetry import Telemetry

if TYPE_CHECKING:
    from asyncopt.engines.workers import WorkerEngine


def __getattr__(name: str):
    # the worker engine (and numba, which its compiled task loop needs) is imported on first use
    if name == "WorkerEngine":
        from asyncopt.engines.workers import WorkerEngine

        return WorkerEngine
    raise AttributeError(f"module 'asyncopt.engines' has no attribute {name!r}")


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
    ray_address: str | None = None,
    resources_per_worker: dict | None = None,
    task_samples: int | str | None = None,
    server_folder=None,
):
    """The engine for an estimator's `backend` parameter (`task_samples`: Ray's task size, None for
    one batch a task, "auto" for Ray's choice; `server_folder`: where Ray's server actors save their
    state, for restarts)."""
    if task_samples not in (None, "auto") and backend != "ray":
        raise ValueError(f"task_samples={task_samples} sets the size of a Ray task: use it with backend='ray'")
    if backend == "serial":
        return SerialEngine(max_delay=max_delay, delay=delay, inconsistent_reads=inconsistent_reads)
    if backend in ("threads", "processes"):
        from asyncopt.engines.workers import WorkerEngine

        return WorkerEngine(
            backend=backend,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            synchronous=synchronous,
            devices=list(devices) if devices is not None else None,
            servers_in_workers=servers_in_workers,
        )
    if backend == "ray":
        if synchronous or devices is not None:
            raise ValueError("backend='ray' runs asynchronous workers: synchronous=True and devices= are for 'threads'")
        from asyncopt.engines.ray_engine import RayEngine, import_ray

        import_ray()  # (says how to install it before any setup)
        return RayEngine(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            ray_address=ray_address,
            resources_per_worker=resources_per_worker,
            task_samples=task_samples,
            server_folder=None if server_folder is None else str(server_folder),
        )
    raise ValueError(f"backend={backend!r} must be 'serial', 'threads', 'processes' or 'ray'")
