#!/usr/bin/env bash
# The tests: install, ruff, then pytest (core, config, and the real graph on micro configs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check sx_dagster tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
