"""The layering of docs/architecture.md, as import-linter contracts (pyproject.toml)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept(capsys):
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().out[-4000:]


def test_the_contract_would_catch_an_engine_importing_an_algorithm(tmp_path):
    """The contract is not vacuous: a copy of the package whose engine imports proxsgd breaks it."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "asyncopt", tmp_path / "asyncopt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "asyncopt" / "engines" / "base.py"
    base.write_text(base.read_text() + "\nfrom asyncopt.proxsgd import prox  # noqa\n")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert run.returncode != 0 and "BROKEN" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
