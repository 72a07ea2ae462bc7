"""Test environment: the micro experiments, a scratch data dir, no network."""

import os
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Set before sx_dagster.assets is imported: partitions are read from this file at import.
os.environ["SX_EXPERIMENTS_FILE"] = str(TESTS / "experiments_micro.yaml")
os.environ.setdefault("SX_DATA_DIR", tempfile.mkdtemp(prefix="sx-test-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["SX_STEP_RETRIES"] = "0"  # a failing test fails now, not after backoff retries
