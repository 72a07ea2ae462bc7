"""Where run outputs live: never relative to the current directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``$SX_DATA_DIR``, else ``<project root>/data``: the DuckDB file and checkpoints."""
    return Path(os.environ.get("SX_DATA_DIR", PROJECT_ROOT / "data")).resolve()


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, else ``<project root>/.dagster_home`` (run history for the UI)."""
    return Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home")).resolve()
