"""The resume unit of the long stages: work is split into chunks, each chunk's rows and its
commit marker land in one transaction, and a re-run skips the chunks already committed.

Chunk rows are staged apart under the stage's fingerprint; the asset's current rows are
replaced only when every chunk is in (one transaction), so a failed or killed re-run leaves
the old rows, and a re-run with either config resumes or skips."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence

import pandas as pd

from sx_dagster.assets._stage import Stage
from sx_dagster.resources import LineageStore
from sx_dagster.resources.lineage import PROMOTED
from sx_dagster.stopping import check as check_stop
from sx_dagster.stopping import graceful

# Test hook: kill -9 this process after this many chunks were committed in this run, before
# the next chunk is written (tests/test_pipeline.py uses it to simulate a crash).
CRASH_AFTER_CHUNKS_ENV = "SX_TEST_CRASH_AFTER_CHUNKS"


def _crash_if_asked(committed_this_run: int) -> None:
    limit = os.environ.get(CRASH_AFTER_CHUNKS_ENV)
    if limit is not None and committed_this_run >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def run_chunks(
    stage: Stage,
    lineage: LineageStore,
    tables: Sequence[str],
    chunks: Sequence[pd.DataFrame],
    load_backend: Callable[[], object],
    work: Callable[[object, int, pd.DataFrame], dict[str, pd.DataFrame]],
):
    """Run ``work(backend, chunk_index, chunk)`` for every chunk not yet committed for this
    fingerprint, commit its frames (staged), then promote all chunks to the asset's ``tables``.
    The backend is loaded only if some chunk is left. Returns (backend stats or None, number
    of chunks resumed)."""
    prev = lineage.latest_lineage(stage.name, stage.asset)
    if prev is not None and prev.get("status") == PROMOTED and prev["fingerprint"] == stage.fingerprint:
        # Killed after the promotion, before the lineage row: the rows are already this run's.
        stage.log(f"rows of fingerprint {stage.fingerprint} already promoted by run {prev['run_id']}")
        return None, len(chunks)
    done = lineage.staged_chunks(stage.name, stage.asset, stage.fingerprint)
    if done:
        stage.log(f"resuming: {len(done)}/{len(chunks)} chunks already committed")
    backend, committed = None, 0
    try:
        with graceful(stage.log):
            for c, chunk in enumerate(chunks):
                if c in done:
                    continue
                # SIGTERM/SIGINT: stop between chunks; the committed ones stay for the next run
                check_stop(f"before chunk {c + 1}/{len(chunks)} ({committed} committed this run, kept for the next run)")
                if backend is None:
                    backend = load_backend()
                if committed:
                    _crash_if_asked(committed)
                writes = work(backend, c, chunk)
                for df in writes.values():
                    df["experiment"], df["run_id"], df["chunk"] = stage.name, stage.run_id, c
                lineage.commit_chunk(stage.name, stage.asset, c, stage.fingerprint, stage.run_id, writes)
                committed += 1
    finally:
        if backend is not None:
            backend.close()
    lineage.promote_chunks(stage.name, stage.asset, stage.fingerprint, stage.run_id, tables)
    return (backend.stats if backend is not None else None), len(done & set(range(len(chunks))))
