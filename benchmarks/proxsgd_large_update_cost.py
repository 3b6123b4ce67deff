"""A worker's update on the large problem (bench_proxsgd_large.py's cached matrix): microseconds an
update (the worker's compute over its steps), whole fit and training seconds, for 1 and 2 worker
threads, stopped at 1e-2 relative suboptimality. Run it with PYTHONPATH pointing at two checkouts,
alternating, to compare kernels: the update cost is the worker's compiled loop alone.

    python benchmarks/proxsgd_large_update_cost.py 1,2
"""

import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

CACHE = Path("/tmp/asyncopt-large/large_n2000000_d1000000_k50_p10000_s0.npz")

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    from bench_proxsgd_large import load_problem

    from asyncopt import ProxSGDClassifier

    X, y, alpha = load_problem(CACHE)
    f_star = json.loads(CACHE.with_name(CACHE.stem + "-reference.json").read_text())["curve"][-1][1]
    backend = os.environ.get("BACKEND", "threads")
    for workers in [int(a) for a in (sys.argv[1] if len(sys.argv) > 1 else "1,2").split(",")]:
        t = time.perf_counter()
        model = ProxSGDClassifier(
            penalty="l1", alpha=alpha, fit_intercept=False, backend=backend, n_workers=workers, threads_per_worker=1,
            random_state=0, max_epochs=30, callback=lambda e: e.objective <= f_star * 1.01,
        ).fit(X, y)  # fmt: skip
        wall = time.perf_counter() - t
        tel = model.telemetry_
        us = [round(1e6 * w["compute_seconds"] / w["steps"], 1) for w in tel["workers"]]
        print(
            f"{backend} {workers}w wall {wall:.1f} setup {tel['setup_seconds']:.1f} "
            f"train {model.history_[-1]['seconds']:.1f} epochs {model.history_[-1]['epoch']:.2f} "
            f"steps {[w['steps'] for w in tel['workers']]} us/update {us} batch {model.batch_size_}",
            flush=True,
        )
