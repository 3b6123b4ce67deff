"""Per-message costs of Ray here: what the Ray backend's pulls and pushes cost, by payload size.

Measured between two actors, as in the engine (a worker actor calling a server actor), on a
local Ray:
- an empty call's round trip;
- a pull: the server returns `size` float64 values (its rows);
- a push: the worker sends `size` (index, value) pairs, the server sums them;
- the same with the worker's calls to 3 servers at once (one message each, awaited together,
  as a task's pulls and pushes are).
Median of `--repeats` calls after 20 warm-up calls. These are the inputs of the scaling model
(issue 12, item 4).

    python benchmarks/ray_messages.py --out benchmarks/results/ray_messages.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402


class Server:
    def __init__(self, size: int):
        self.rows = np.zeros(max(size, 1))

    def empty(self):
        return None

    def pull(self, size: int):
        return self.rows[:size].copy()

    def push(self, index, values):
        return float(values.sum()) + int(index.shape[0])


class Worker:
    def __init__(self, servers):
        self.servers = servers

    def time_calls(self, kind: str, size: int, fan: int, repeats: int) -> list[float]:
        import ray

        index, values = np.arange(size, dtype=np.int64), np.ones(size)
        times = []
        for r in range(20 + repeats):
            t0 = time.perf_counter()
            targets = self.servers[:fan]
            if kind == "empty":
                ray.get([s.empty.remote() for s in targets])
            elif kind == "pull":
                ray.get([s.pull.remote(size) for s in targets])
            else:
                ray.get([s.push.remote(index, values) for s in targets])
            if r >= 20:
                times.append(time.perf_counter() - t0)
        return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    sizes = [100, 10_000, 100_000, 1_000_000]
    servers = [ray.remote(num_cpus=0)(Server).remote(max(sizes)) for _ in range(3)]
    worker = ray.remote(num_cpus=1)(Worker).remote(servers)
    rows = []
    for kind, kind_sizes in (("empty", [0]), ("pull", sizes), ("push", sizes)):
        for size in kind_sizes:
            for fan in (1, 3):
                times = ray.get(worker.time_calls.remote(kind, size, fan, args.repeats))
                ms = 1e3 * statistics.median(times)
                payload = {"empty": 0, "pull": 8 * size, "push": 16 * size}[kind] * fan
                rows.append((kind, size, fan, ms, payload / 2**20 / (ms / 1e3) if payload else float("nan")))
                print(rows[-1], flush=True)
    lines = [
        f"Command: `python benchmarks/ray_messages.py --repeats {args.repeats}` ({os.cpu_count()} cores, local Ray "
        f"{ray.__version__}, actor to actor; median of {args.repeats} calls)",
        "",
        "| message | size (values or pairs) | servers at once | round trip (ms) | MB/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {s:,} | {f} | {ms:.3f} | {mbs:,.0f} |" for k, s, f, ms, mbs in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
