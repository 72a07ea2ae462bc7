"""A deleted checkpoint, as the Dagster UI shows it (issue 15): once `sx-dagster run|ui|init` or the
``checkpoint_watch`` sensor has looked, its partition is FAILED and its ``checkpoint_on_disk``
check failed, naming the asset to re-materialize; reported once; passing again once re-materialized.
What the UI shows is read through the webserver's own GraphQL resolvers, on the project's definitions."""

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.partition_status_cache import AssetPartitionStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from test_pipeline import ROOT, _resources

from sx_dagster import cli
from sx_dagster.assets import ALL_ASSETS
from sx_dagster.assets._stage import experiment_partitions
from sx_dagster.checkpoint_watch import CHECK_NAME, WATCH_JOB, checkpoint_checks, checkpoint_watch, watch_checkpoints
from sx_dagster.resources import LineageStore

EXP = "micro-b"
KEY = dg.AssetKey("base_model")
UI_QUERY = """
query ($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
    partitionStats { numMaterialized numFailed }
    assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
      ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions } } } } }
  }
}"""


@contextlib.contextmanager
def _ui(instance: dg.DagsterInstance) -> Iterator[Callable[[], dict]]:
    """base_model as the asset page shows it: partition statuses, partition stats, check statuses."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="sx_dagster.definitions", working_directory=str(ROOT)))
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace:

        def read() -> dict:
            [node] = execute_dagster_graphql(workspace.create_request_context(), UI_QUERY, {"keys": [{"path": ["base_model"]}]}).data[
                "assetNodes"
            ]
            checks = {c["name"]: c["partitionStatuses"] for c in node["assetChecksOrError"]["checks"]}
            return {**node["assetPartitionStatuses"], **node["partitionStats"], "check": checks[CHECK_NAME]}

        yield read


def _materialize(tmp: Path, instance: dg.DagsterInstance, selection: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(ALL_ASSETS, partition_key=EXP, resources=_resources(tmp), instance=instance, selection=selection)


def _reports(instance: dg.DagsterInstance) -> tuple[int, int]:
    """(runs the watch recorded, check evaluations of base_model [micro-b]): what a report writes."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(KEY, CHECK_NAME), limit=100, partition_filter=PartitionKeyFilter(key=EXP)
    )
    return len(instance.get_runs(dg.RunsFilter(job_name=WATCH_JOB))), len(history)


def test_deleted_checkpoint_fails_its_partition_and_check_until_rematerialized(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SX_DATA_DIR", str(tmp_path))  # where `sx-dagster` finds the lineage store
    instance = cli._instance()
    assert _materialize(tmp_path, instance, ["task_dataset", "base_model"]).success
    lineage = LineageStore(database=str(tmp_path / "sx.duckdb"))
    status = lambda: instance.get_status_by_partition(KEY, [EXP], experiment_partitions())[EXP]  # noqa: E731
    checkpoint = tmp_path / "checkpoints" / EXP / "base_model"

    with _ui(instance) as ui:
        assert watch_checkpoints(instance, lineage) == []  # on disk, never failed: nothing to report
        assert ui() == {
            "materializedPartitions": [EXP], "failedPartitions": [], "numMaterialized": 1, "numFailed": 0,
            "check": {"succeededPartitions": [], "failedPartitions": []},
        }  # fmt: skip

        # Deleted: the next `sx-dagster run|ui|init` reports it and says what to re-run.
        shutil.rmtree(checkpoint)
        cli._instance()
        err = capsys.readouterr().err
        assert f"[{EXP}] base_model: checkpoint missing: {checkpoint}" in err
        assert f"re-materialize base_model for experiment '{EXP}'" in err
        assert status() == AssetPartitionStatus.FAILED
        assert ui() == {
            "materializedPartitions": [], "failedPartitions": [EXP], "numMaterialized": 0, "numFailed": 1,
            "check": {"succeededPartitions": [], "failedPartitions": [EXP]},
        }  # fmt: skip
        [record] = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(KEY, CHECK_NAME), limit=1)
        meta = {k: v.value for k, v in record.event.dagster_event.event_specific_data.metadata.items()}
        assert meta["checkpoint_path"] == str(checkpoint) and meta["problem"] == "missing"
        assert meta["rematerialize"] == f"base_model (partition {EXP})"
        [run] = instance.get_runs(dg.RunsFilter(job_name=WATCH_JOB))
        assert run.status == dg.DagsterRunStatus.FAILURE and run.tags["dagster/partition"] == EXP
        [failure] = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert "re-materialize base_model" in failure.event_log_entry.dagster_event.message

        # Reported once: neither the sensor nor another start writes it again.
        reports = _reports(instance)
        skip = checkpoint_watch(dg.build_sensor_context(instance=instance, resources={"lineage": lineage}))
        assert isinstance(skip, dg.SkipReason) and "already reported" in skip.skip_message
        cli._instance()
        assert _reports(instance) == reports == (1, 1)

        # Re-materialized as `sx-dagster run` does (no checks in the run): materialized again, and
        # the watch (run at its end) passes the check; once.
        assert _materialize(tmp_path, instance, ["base_model"]).success
        assert status() == AssetPartitionStatus.MATERIALIZED
        assert watch_checkpoints(instance, lineage) == [f"[{EXP}] base_model: checkpoint on disk with its recorded hash: {checkpoint}"]
        assert watch_checkpoints(instance, lineage) == []
        assert ui() == {
            "materializedPartitions": [EXP], "failedPartitions": [], "numMaterialized": 1, "numFailed": 0,
            "check": {"succeededPartitions": [EXP], "failedPartitions": []},
        }  # fmt: skip

        # Changed in place (other bytes than its lineage row recorded): failed again, saying so.
        config = checkpoint / "config.json"
        config.write_text(config.read_text() + "\n")
        [line] = watch_checkpoints(instance, lineage)
        assert "base_model: checkpoint changed on disk since it was written" in line and "re-materialize base_model" in line
        assert status() == AssetPartitionStatus.FAILED
        assert ui()["check"] == {"succeededPartitions": [], "failedPartitions": [EXP]}

        # The check itself, run from the UI (a run of the check alone): fails the same way.
        job = dg.define_asset_job("check_only", selection=dg.AssetSelection.checks(dg.AssetCheckKey(KEY, CHECK_NAME)))
        defs = dg.Definitions(assets=ALL_ASSETS, asset_checks=checkpoint_checks(), jobs=[job], resources=_resources(tmp_path))
        result = defs.resolve_job_def("check_only").execute_in_process(instance=instance, tags={"dagster/partition": EXP})
        [evaluation] = result.get_asset_check_evaluations()
        assert not evaluation.passed and "checkpoint changed on disk" in evaluation.description
