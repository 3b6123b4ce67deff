"""`asyncopt info`: versions, devices, thread counts, and whether Ray is installed and reachable."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="versions, devices, threads, Ray", description=__doc__)
    info.add_argument("--ray-address", default=None, help="check this Ray cluster (default: a running local one)")
    info.set_defaults(run=run_info)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_info(args) -> int:
    import torch

    lines = [f"asyncopt {_version('asyncopt')}, Python {platform.python_version()} ({sys.executable})"]
    packages = ["torch", "numpy", "scipy", "scikit-learn", "numba", "safetensors", "matplotlib", "ray"]
    lines.append("packages: " + ", ".join(f"{p} {_version(p)}" for p in packages))
    cpus = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    lines.append(f"CPU: {cpus} cores ({usable} usable by this process), torch threads {torch.get_num_threads()}")
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    env = [f"{k}={os.environ[k]}" for k in names if k in os.environ]
    if env:
        lines.append("thread settings: " + " ".join(env))
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(f"cuda:{i} ({props.name}, {props.total_memory / 2**30:.0f} GiB)")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    lines.append("devices: " + ", ".join(devices))
    lines.append("ray: " + _ray_status(args.ray_address))
    print("\n".join(lines))
    return 0


def _ray_status(address: str | None) -> str:
    """Installed? Reachable (a cluster at `address`, or a local one already running; none is started)?"""
    try:
        import ray
    except ImportError:
        return "not installed (pip install 'asyncopt[ray]')"
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=target, include_dashboard=False, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "no local Ray running (`ray start --head` starts one)" if target == "auto" else f"{target}: {exc}"
        return f"{ray.__version__}, not reachable: {where.splitlines()[0]}"
    try:
        resources = ray.cluster_resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        shown = ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if k in ("CPU", "GPU", "memory"))
        return f"{ray.__version__}, reachable at {target}: {nodes} node(s), {shown}"
    finally:
        ray.shutdown()
