"""Every Python example of the README and the user guide runs as written, pasted into a script
file and run as `python file.py` (spawned workers re-import an unguarded script; a fragment that
names undefined data fails here)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import require_data

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/guide.md"]


def _examples():
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for i, match in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            yield pytest.param(textwrap.dedent(match.group(1)), id=f"{doc}-{i}")


@pytest.mark.realdata
@pytest.mark.parametrize("code", list(_examples()))
def test_a_documented_example_runs_as_a_script(code, tmp_path):
    if "load_mnist" in code:
        require_data("mnist")
    if "load_news20" in code:
        require_data("news20")
    if 'backend="ray"' in code and os.environ.get("ASYNCOPT_REQUIRE_RAY") != "1":
        pytest.importorskip("ray")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
