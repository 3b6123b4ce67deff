"""The memory budget is honoured: measured peak resident memory of a fit, in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from asyncopt import EigenProRegressor

    def status(key):  # kB values from /proc/self/status (Linux)
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    n, d = 20_000, 16
    rng = np.random.default_rng(0)
    X = rng.random((n, d), dtype=np.float32); y = np.sin(X.sum(1))
    import asyncopt.kernels.blocks as blocks
    blocks.PREFERRED_CHUNK_ELEMENTS = 10**12  # let chunks grow to whatever the budget allows
    torch.randn(300, 300) @ torch.randn(300, 300)  # load BLAS code before measuring
    torch.linalg.eigh(torch.randn(50, 50, dtype=torch.float64) @ torch.randn(50, 50, dtype=torch.float64).T)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    model = EigenProRegressor(bandwidth=1.0, epochs=0.5, batch_size=n, subsample_size=500,
                              memory_gb=float(sys.argv[1]), random_state=0).fit(X, y)
    print(json.dumps({"growth": status("VmHWM") - before}))
""")


def peak_growth(memory_gb):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(memory_gb)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth"]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset peak RSS")
def test_peak_memory_follows_the_budget():
    # one full batch of 20,000 rows: K(X_B, X) alone would be 1.6 GB in float32
    small, large = peak_growth(0.1), peak_growth(0.8)
    slack = 64 * 2**20  # interpreter, allocator and the numpy copies of X and y
    assert small < 0.1 * 2**30 + slack
    assert large < 0.8 * 2**30 + slack
    assert large > small  # the budget is what sizes the chunks, not a fixed constant
