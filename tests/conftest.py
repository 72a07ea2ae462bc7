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

# Modules that materialize the real graph, train, or start processes: `-m "not slow"` leaves them
# out for the quick loop (README, Contributing). The rest are pure or take well under a second.
SLOW_MODULES = {
    "test_checkpoint_watch",
    "test_failures",
    "test_gpu_check",
    "test_gpu_graph",
    "test_operating",
    "test_pipeline",
    "test_recovery",
    "test_remote_code",
    "test_staleness",
    "test_suite_time",
    "test_training",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: materializes the real graph, trains, or starts processes (left out by -m 'not slow')")


# The modules that take longest, longest first (seconds in a 2-worker run on a 2-core machine,
# 2026-12-05). scripts/test.sh hands modules to the workers in collection order
# (--no-loadscope-reorder): longest first, the short ones fill in at the end and both workers
# finish together. Unlisted modules take a few seconds or less and keep their place after these.
LONGEST_FIRST = (
    "test_failures",  # 96
    "test_pipeline",  # 90
    "test_rounds",  # 84
    "test_training",  # 65
    "test_operating",  # 60
    "test_gpu_graph",  # 25
    "test_core_hostile",  # 22
    "test_remote_code",  # 21
    "test_recovery",  # 11
    "test_gpairs_rules",  # 8
    "test_gpu_check",  # 8
)


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    rank = {m: i for i, m in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))  # stable: file order within


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores (scripts/test.sh): one torch thread each, or they oversubscribe.
    # The environment carries it to the processes a test starts (Dagster steps, CLIs, daemons).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
