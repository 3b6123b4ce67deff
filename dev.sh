#!/usr/bin/env bash
# One-command set-up: creates .venv/ in the checkout, installs asyncopt into it, then runs
#   bash dev.sh demo [ARGS]   the main job (EigenPro on the digits bundled with scikit-learn)
#   bash dev.sh test [ARGS]   the test suite
#   bash dev.sh bench         the full-MNIST benchmark (needs ../shared/data)
#   bash dev.sh fit|predict|info ARGS   the asyncopt command line (asyncopt --help)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# extras to install (CI adds ray: ASYNCOPT_EXTRAS=test,plot,ray)
extras=${ASYNCOPT_EXTRAS:-test,plot}
stamp=.venv/.asyncopt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$extras" ]; then
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[$extras]"
  echo "$extras" > "$stamp"
fi
cmd=${1:-demo}; shift || true
case "$cmd" in
  demo)  exec .venv/bin/asyncopt demo "$@" ;;
  test)  exec .venv/bin/python -m pytest "$@" ;;
  bench) exec .venv/bin/python benchmarks/bench_mnist.py "$@" ;;
  fit|predict|info|sparse-demo) exec .venv/bin/asyncopt "$cmd" "$@" ;;  # the command line, e.g. bash dev.sh fit --help
  *) echo "usage: bash dev.sh {demo|test|bench|fit|predict|info|sparse-demo} [args]" >&2; exit 2 ;;
esac
