"""A checkpoint gone from disk, as the Dagster UI shows it (issue 15).

Dagster counts a partition as materialized once it has a materialization event, so deleting a
checkpoint directory changes nothing there; and its SQL event log cannot wipe one partition
(``NotImplementedError: Partitioned asset wipe is not supported yet``). The watch therefore
reports what it finds as the events Dagster derives its statuses from:

- the asset check ``checkpoint_on_disk``, declared here for every checkpoint asset, fails for the
  partition, with the missing path and the asset to re-materialize in its metadata;
- a ``checkpoint_watch`` run that planned the partition and failed, saying what to re-run: Dagster
  shows a partition whose latest planned materialization is in a failed run as FAILED (red in the
  partition bar, counted as failed in the asset's partition stats) until a materialization follows.

Downstream assets do not turn stale: Dagster's stale status reads materializations only, and a
new materialization is the one thing a missing checkpoint is not.

:func:`watch_checkpoints` runs from the ``checkpoint_watch`` sensor, when ``sx-dagster run|ui|init``
opens the instance and at the end of ``sx-dagster run``. It reports each lost checkpoint once, and
a passing evaluation once the checkpoint is back (re-materialized, or restored in place: the
partition then stays FAILED until it is re-materialized, which for an unchanged stage is a skip).
"""

import logging
import os
import socket
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from sx_dagster.failures import HOST_TAG, PID_TAG
from sx_dagster.resources import LineageStore
from sx_dagster.resources.checkpoints import MISSING, checkpoint_problem

# The assets whose output is a model directory: their lineage rows carry checkpoint_path and hash.
CHECKPOINT_ASSETS = ("base_model", "sft_checkpoint", "rft_checkpoint", "trained_model", "outcome_dpo_model", "process_reward_model")
CHECK_NAME = "checkpoint_on_disk"
WATCH_JOB = "checkpoint_watch"  # the job name of the runs the watch records (no such job runs anything)
WATCH_TAG = "sx/checkpoint_watch"  # on those runs: the asset they are about


@dataclass(frozen=True)
class Finding:
    """An experiment's current local checkpoint of one asset, as found on disk."""

    experiment: str
    asset: str
    path: str
    recorded_hash: str
    run_id: str  # the run that wrote it
    problem: str | None  # MISSING, CHANGED, or None: on disk with the bytes it was recorded with

    def describe(self) -> str:
        where = f"[{self.experiment}] {self.asset}"
        if self.problem is None:
            return f"{where}: checkpoint on disk with its recorded hash: {self.path}"
        what = "checkpoint missing" if self.problem == MISSING else "checkpoint changed on disk since it was written"
        return (
            f"{where}: {what}: {self.path} (written by {self.asset}, run {self.run_id}); "
            f"re-materialize {self.asset} for experiment {self.experiment!r}"
        )

    def metadata(self) -> dict:
        return {
            "experiment": self.experiment,
            "checkpoint_path": dg.MetadataValue.path(self.path),
            "problem": self.problem or "none",
            "recorded_hash": self.recorded_hash[:12],
            "written_by_run": self.run_id,
            "rematerialize": f"{self.asset} (partition {self.experiment})" if self.problem else "nothing",
        }


def find_checkpoints(
    lineage: LineageStore, experiments: Iterable[str] | None = None, assets: Iterable[str] = CHECKPOINT_ASSETS
) -> list[Finding]:
    """The current local checkpoint of each (experiment, checkpoint asset), checked on disk: the
    newest lineage row, as ``Stage`` reads it. A hub model id has no hash and is not watched.
    The directory is hashed only when it exists (``file_digest`` caches unchanged files)."""
    if not lineage.path().exists():  # nothing materialized yet: do not create the DuckDB file
        return []
    assets = list(assets)
    df = lineage.query(
        "SELECT experiment, asset, run_id, checkpoint_path, checkpoint_hash FROM lineage "
        f"WHERE asset IN ({', '.join('?' * len(assets))}) "
        "QUALIFY row_number() OVER (PARTITION BY experiment, asset ORDER BY created_at DESC) = 1 ORDER BY experiment, asset",
        assets,
    )
    wanted = None if experiments is None else set(experiments)
    out = []
    for row in df.itertuples(index=False):
        if not isinstance(row.checkpoint_hash, str) or (wanted is not None and row.experiment not in wanted):
            continue
        path = Path(row.checkpoint_path)
        problem = checkpoint_problem(path, row.checkpoint_hash)
        out.append(Finding(row.experiment, row.asset, str(path), row.checkpoint_hash, row.run_id, problem))
    return out


def watch_checkpoints(instance: dg.DagsterInstance, lineage: LineageStore, experiments: Iterable[str] | None = None) -> list[str]:
    """Report to ``instance`` each checkpoint of a materialized partition that is missing or changed
    on disk (a failed ``checkpoint_on_disk`` evaluation in a failed ``checkpoint_watch`` run, which
    leaves the partition FAILED), and a passing evaluation for one whose last evaluation failed and
    that is on disk again. What is already reported is not reported again. ``experiments``: the
    partitions to look at (default: those of the experiments file). Returns what it reported."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    from sx_dagster.config import load_experiments

    keys = set(experiments) if experiments is not None else set(load_experiments())
    reported = []
    for f in find_checkpoints(lineage, keys):
        key = dg.AssetKey(f.asset)
        mat = _latest_materialization(instance, key, f.experiment)
        if mat is None:
            continue  # Dagster does not show it as materialized: nothing to correct
        if _materializing(instance, key, f.experiment, mat.storage_id):
            continue  # a run is writing it now: its directory is swapped and rehashed before its lineage row
        last = _latest_evaluation(instance, key, f.experiment)
        failed = last is not None and last.status == AssetCheckExecutionRecordStatus.FAILED
        if f.problem is None and not failed:
            continue  # on disk, and no failure to take back
        if f.problem is not None and failed and _reported_by_watch(instance, last, mat.storage_id):
            continue  # reported already
        _report(instance, f, mat)
        reported.append(f.describe())
    return reported


def _latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0] if records else None


def _materializing(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str, materialization_id: int) -> bool:
    planned = instance.get_latest_planned_materialization_info(key, partition)
    if planned is None or planned.storage_id < materialization_id:
        return False
    run = instance.get_run_by_id(planned.run_id)
    return run is not None and not run.is_finished


def _latest_evaluation(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str):
    from dagster._core.event_api import PartitionKeyFilter

    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, CHECK_NAME), limit=1, partition_filter=PartitionKeyFilter(key=partition)
    )
    return history[0] if history else None


def _reported_by_watch(instance: dg.DagsterInstance, record, materialization_id: int) -> bool:
    """The failed evaluation is the watch's, about the current materialization: its run also
    planned the partition, so the partition already shows as failed."""
    evaluation = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
    target = getattr(evaluation, "target_materialization_data", None)
    run = instance.get_run_by_id(record.run_id)
    return target is not None and target.storage_id == materialization_id and run is not None and run.job_name == WATCH_JOB


def _report(instance: dg.DagsterInstance, f: Finding, mat: dg.EventLogRecord) -> str:
    """One ``checkpoint_watch`` run with the check's evaluation, as a run that executed the check
    would leave it. A lost checkpoint's run also plans the partition and fails: that is what
    Dagster's partition status reads as FAILED (a runless event cannot be: the status comes from
    planned materializations in failed runs). Each report has its own run id, because Dagster
    keeps one check row per (check, run, partition) and shows the newest row."""
    from dagster._core.definitions.events import (
        AssetMaterializationFailure,
        AssetMaterializationFailureReason,
        AssetMaterializationFailureType,
    )
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, DagsterEventType, JobFailureData, RunFailureReason
    from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG
    from dagster._core.utils import make_new_run_id

    key = dg.AssetKey(f.asset)
    check_key = dg.AssetCheckKey(key, CHECK_NAME)
    lost = f.problem is not None
    tags = {
        PARTITION_NAME_TAG: f.experiment,
        WATCH_TAG: f.asset,
        WILL_RETRY_TAG: "false",  # nothing a retry could fix
        # the run is open for milliseconds; if this process dies in them, dead_run_reaper closes it
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
    }
    run = instance.add_run(
        dg.DagsterRun(
            job_name=WATCH_JOB,
            run_id=make_new_run_id(),
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags=tags,
            asset_selection=frozenset({key}) if lost else None,
            asset_check_selection=frozenset({check_key}),
        )
    )

    def event(kind: DagsterEventType, data=None, message: str | None = None, level: int = logging.INFO) -> None:
        instance.report_dagster_event(DagsterEvent(kind.value, WATCH_JOB, event_specific_data=data, message=message), run.run_id, level)

    event(DagsterEventType.RUN_START, message=f"Checkpoint watch: {f.asset} [{f.experiment}]")
    if lost:
        event(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, AssetMaterializationPlannedData(key, partition=f.experiment))
        failure = AssetMaterializationFailure(
            asset_key=key,
            partition=f.experiment,
            failure_type=AssetMaterializationFailureType.FAILED,
            reason=AssetMaterializationFailureReason.FAILED_TO_MATERIALIZE,
            description=f.describe(),
            metadata=f.metadata(),
        )
        instance.report_dagster_event(
            DagsterEvent.build_asset_failed_to_materialize_event(WATCH_JOB, None, failure), run.run_id, logging.ERROR
        )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=CHECK_NAME,
        passed=not lost,
        metadata=f.metadata(),
        target_materialization_data=_target(mat),
        description=f.describe(),
        partition=f.experiment,
    )
    event(DagsterEventType.ASSET_CHECK_EVALUATION, evaluation, f.describe(), logging.ERROR if lost else logging.INFO)
    if lost:
        instance.report_run_failed(run, f.describe(), JobFailureData(error=None, failure_reason=RunFailureReason.STEP_FAILURE))
    else:
        event(DagsterEventType.RUN_SUCCESS, message=f.describe())
    return run.run_id


def _target(mat: dg.EventLogRecord):
    """The materialization an evaluation is about: Dagster shows a check only for the latest one."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

    return AssetCheckEvaluationTargetMaterializationData(storage_id=mat.storage_id, run_id=mat.run_id, timestamp=mat.timestamp)


def checkpoint_checks() -> list[dg.AssetChecksDefinition]:
    """``checkpoint_on_disk`` on each checkpoint asset, per experiment partition. Executed from the
    UI (alone, or with a materialization the UI launches; the ``self_explore`` job leaves it out)
    it checks the checkpoint there and then; the watch reports the same check when a checkpoint
    goes missing later."""
    from sx_dagster.assets._stage import experiment_partitions

    partitions = experiment_partitions()
    return [_checkpoint_check(asset, partitions) for asset in CHECKPOINT_ASSETS]


def _checkpoint_check(asset: str, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    # A partitioned check (preview in Dagster 1.13, hence the silenced warning): the UI shows its
    # status per experiment, where an unpartitioned one would show whichever experiment ran last.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(
            asset=asset,
            name=CHECK_NAME,
            partitions_def=partitions,
            description=f"The {asset} checkpoint directory is on disk with the hash its lineage row recorded.",
        )
        def _check(context: dg.AssetCheckExecutionContext, lineage: LineageStore) -> dg.AssetCheckResult:
            found = find_checkpoints(lineage, [context.partition_key], [asset])
            if not found:  # a hub model id (nothing local), or not materialized here yet
                return dg.AssetCheckResult(passed=True, description=f"[{context.partition_key}] {asset}: no local checkpoint recorded")
            [f] = found
            return dg.AssetCheckResult(passed=f.problem is None, description=f.describe(), metadata=f.metadata())

    return _check


@dg.sensor(
    name="checkpoint_watch",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks a checkpoint partition whose directory was deleted or changed as failed (and its "
    "checkpoint_on_disk check), naming the asset to re-materialize; passes the check again once it is back.",
)
def checkpoint_watch(context: dg.SensorEvaluationContext, lineage: LineageStore) -> dg.SkipReason:
    t0 = time.perf_counter()
    lines = watch_checkpoints(context.instance, lineage)
    for line in lines:
        context.log.warning(line)
    took = f" ({time.perf_counter() - t0:.1f} s)"
    return dg.SkipReason(f"reported: {'; '.join(lines)}{took}" if lines else f"every checkpoint on disk, or already reported{took}")
