#!/usr/bin/env bash
# The tests: install, ruff, then pytest (core, config, and the real graph on micro configs) in
# SX_TEST_WORKERS processes (default 2, pytest-xdist). --dist loadfile keeps each test module on
# one worker, so a module's shared fixture (a trained micro graph) is built once: xdist's
# loadgroup marks no longer group anything under pytest 9.2 (xdist 3.8 appends the group to
# item._nodeid, which pytest 9.2 no longer reads), so shared fixtures were built on both workers.
# --no-loadscope-reorder: modules go to the workers in collection order, which tests/conftest.py
# sets longest first, so the two workers finish together.
# Arguments go to pytest: `bash scripts/test.sh -m "not slow"` is the quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check sx_dagster tests benchmarks
exec .venv/bin/python -m pytest -q -n "${SX_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
