#!/usr/bin/env bash
# Create .venv and install sx-dagster for CPU (torch pinned to the CPU wheel through
# constraints-cpu.txt). Idempotent: a second run only checks. GPU users: install your CUDA
# torch first, then `pip install -e .` without the constraints file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sx-installed
want=$(cat pyproject.toml constraints-cpu.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints-cpu.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
