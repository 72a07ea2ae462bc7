"""A model checkpoint deleted from disk makes its asset partition "not materialized" in Dagster.

The rows in DuckDB say where each checkpoint is; when the directory is gone, the asset's
materialization of that experiment is wiped from the instance (``wipe_asset_partitions``), so
the UI shows it missing, its downstream assets show a missing upstream, and "Materialize
changed and missing" rebuilds it. The ``checkpoint_watch`` sensor does this every two minutes
while the daemon runs; ``sx-dagster run|ui`` do it once at start.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sx_dagster.config import load_experiments
from sx_dagster.resources import LineageStore

MODEL_ASSETS = ("base_model", "sft_checkpoint", "rft_checkpoint", "outcome_dpo_model", "trained_model")


def missing_checkpoints(lineage: LineageStore, experiments: list[str]) -> list[tuple[str, str, str]]:
    """(asset, experiment, path) of every latest local checkpoint that is gone from disk (a Hub
    model id has no hash and is never missing)."""
    out = []
    for exp in experiments:
        for asset in MODEL_ASSETS:
            row = lineage.latest_lineage(exp, asset)
            if row and isinstance(row.get("checkpoint_hash"), str) and not Path(row["checkpoint_path"]).exists():
                out.append((asset, exp, row["checkpoint_path"]))
    return out


def unmaterialize_missing(instance: dg.DagsterInstance, lineage: LineageStore, log=None) -> list[tuple[str, str, str]]:
    """Wipe the Dagster materialization of each asset partition whose checkpoint is missing."""
    if not lineage.path().exists():
        return []
    gone = missing_checkpoints(lineage, sorted(load_experiments()))
    for asset, exp, path in gone:
        key = dg.AssetKey(asset)
        if exp in instance.get_materialized_partitions(key):
            instance.wipe_asset_partitions(key, [exp])
            if log:
                log(f"[{exp}] {asset}: checkpoint missing ({path}): marked not materialized; re-materialize {asset}")
    return gone


@dg.sensor(
    name="checkpoint_watch",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks a model asset partition not materialized when its checkpoint directory is gone from disk.",
)
def checkpoint_watch(context: dg.SensorEvaluationContext, lineage: LineageStore) -> dg.SkipReason:
    gone = unmaterialize_missing(context.instance, lineage, context.log.info)
    return dg.SkipReason(f"missing: {', '.join(f'{a}[{e}]' for a, e, _ in gone)}" if gone else "every checkpoint is on disk")
