#!/usr/bin/env bash
# The tests: install, ruff, then pytest (core, config, and the real graph on micro configs) in
# SX_TEST_WORKERS processes (default 2, pytest-xdist; tests sharing a trained micro graph stay on
# one worker). Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check sx_dagster tests benchmarks
exec .venv/bin/python -m pytest -q -n "${SX_TEST_WORKERS:-2}" --dist loadgroup "$@"
