"""Iterative rounds (issue 26): round 2 samples and explores with round 1's Self-Explore model,
on the real micro graph; its rows, lineage and staleness; a backfill of two rounds under a real
``dagster-daemon``."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from test_failures import dagster_daemon
from test_pipeline import ASSET_NAMES, _resources
from test_recovery import _experiments

from sx_dagster.assets import ALL_ASSETS, rounds_graph
from sx_dagster.assets._rounds import PER_ROUND, declared_input, input_names, resolved_input, round_key, round_of
from sx_dagster.lineage_queries import TRACE_CHECKPOINT_SQL, TRACE_DPO_PAIR_SQL
from sx_dagster.resources import LineageStore

ROOT = Path(__file__).resolve().parents[1]
EXP = "micro"
# micro, with a few more samples and SFT epochs: the micro model samples few right answers, and
# round 2 (sampled by round 1's model) needs a D_pair under every setting the tests try
ROUNDS = {"rounds": {"count": 2}, "sampling": {"n": 8}, "sft": {"epochs": 12}, "rft": {"epochs": 12}}
ROUND_2 = {f"round_2/{a}" for a in PER_ROUND}
# Round 1 without the process-reward assets, which rounds neither read nor copy (time)
ROUND_1 = [a for a in ASSET_NAMES if a not in ("step_labels", "process_reward_model", "best_of_n")]


def test_round_keys_and_inputs():
    assert round_key("trained_model", 1) == "trained_model"
    assert round_key("trained_model", 3) == "round_3/trained_model"
    assert round_key("sft_checkpoint", 3) == "sft_checkpoint"  # shared by every round
    assert [round_of(k) for k in ("round_3/dpo_pairs", "dpo_pairs", "round_x/a")] == [3, 1, 1]
    # round r's sampler and explorer: round r-1's Self-Explore model
    assert declared_input("sampled_rationales", "sft_checkpoint", 2) == "trained_model"
    assert declared_input("first_pit_labels", "rft_checkpoint", 3) == "round_2/trained_model"
    assert declared_input("outcome_pairs", "rft_checkpoint", 3) == "round_3/rft_checkpoint"  # its tokenizer: the round's RFT
    assert declared_input("sampled_rationales", "sft_checkpoint", 1) == "sft_checkpoint"
    # DPO's start: rounds.train_from
    starts = {t: resolved_input("trained_model", "rft_checkpoint", 3, t) for t in ("previous", "rft", "sft")}
    assert starts == {"previous": "round_2/trained_model", "rft": "round_3/rft_checkpoint", "sft": "sft_checkpoint"}
    assert resolved_input("trained_model", "rft_checkpoint", 1, "sft") == "rft_checkpoint"  # round 1 is the paper's
    assert input_names("first_pit_labels", ["round_2/outcome_pairs", "trained_model"], 2) == {
        "outcome_pairs": "round_2/outcome_pairs",
        "rft_checkpoint": "trained_model",
    }


def test_the_estimate_counts_each_round():
    from sx_dagster.cli import experiment_estimate
    from sx_dagster.config import get_experiment

    exp = get_experiment(EXP)
    one, _ = experiment_estimate(exp, "cpu", 1)
    three, _ = experiment_estimate(exp.model_copy(update={"rounds": exp.rounds.model_copy(update={"count": 3})}), "cpu", 1)
    extra = [r for r in three if r.stage.startswith("round ")]
    assert [r.stage for r in extra][:2] == ["round 2: sampled_rationales", "round 2: rft_checkpoint"]
    assert len(extra) == 2 * 5 and len(three) == len(one) + len(extra)
    sampling = {r.stage: r.seconds for r in three}
    assert sampling["round 3: sampled_rationales"] == sampling["sampled_rationales"]
    assert abs(sampling["round 2: eval_scores"] - 0.6 * sampling["eval_scores"]) < 1e-9


def test_round_copies_keep_code_and_rename_nodes(tmp_path):
    graph = rounds_graph(3)
    keys = {k.to_user_string() for a in graph for k in a.keys}
    assert keys == set(ASSET_NAMES) | {f"round_{r}/{a}" for r in (2, 3) for a in PER_ROUND}
    by_key = {a.key.to_user_string(): a for a in graph}
    assert (
        by_key["round_3/sampled_rationales"].code_versions_by_key[dg.AssetKey(["round_3", "sampled_rationales"])]
        == (by_key["sampled_rationales"].code_versions_by_key[dg.AssetKey("sampled_rationales")])
    )
    deps = {k.to_user_string() for k in by_key["round_3/sampled_rationales"].asset_deps[dg.AssetKey(["round_3", "sampled_rationales"])]}
    assert deps == {"round_2/trained_model", "task_dataset"}
    assert by_key["round_2/eval_scores"].group_names_by_key[dg.AssetKey(["round_2", "eval_scores"])] == "round_2"
    assert len({a.node_def.name for a in graph}) == len(graph)
    dg.Definitions(assets=graph, resources=_resources(tmp_path)).resolve_asset_graph()  # acyclic, every dep defined


@pytest.fixture(scope="module")
def rounds2(tmp_path_factory):
    """The micro graph with rounds.count 2, materialized once (rounds 1 and 2), on a kept instance."""
    tmp = tmp_path_factory.mktemp("rounds")
    path = _experiments(tmp, "rounds.yaml", EXP, ROUNDS)
    old = os.environ.get("SX_EXPERIMENTS_FILE")
    os.environ["SX_EXPERIMENTS_FILE"] = str(path)
    instance = dg.DagsterInstance.ephemeral()
    try:
        result = dg.materialize(
            rounds_graph(2), partition_key=EXP, resources=_resources(tmp), instance=instance, selection=[*ROUND_1, *ROUND_2]
        )
        yield tmp, result, LineageStore(database=str(tmp / "sx.duckdb")), instance
    finally:
        if old is None:
            os.environ.pop("SX_EXPERIMENTS_FILE", None)
        else:
            os.environ["SX_EXPERIMENTS_FILE"] = old


def _checkpoint(store: LineageStore, name: str) -> dict:
    return store.query("SELECT * FROM checkpoints WHERE experiment = ? AND name = ?", [EXP, name]).iloc[0].to_dict()


@pytest.mark.slow  # materializes the micro graph's two rounds
def test_round_two_samples_and_explores_with_round_one_model(rounds2):
    tmp, result, store, _ = rounds2
    assert result.success
    mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert mats == set(ROUND_1) | ROUND_2
    r1_model = _checkpoint(store, "trained_model")
    r2 = store.for_round(2)
    # the sampler and the explorer of round 2: round 1's Self-Explore model, by checkpoint id
    assert set(r2.query("SELECT DISTINCT checkpoint_id FROM samples WHERE experiment = ?", [EXP])["checkpoint_id"]) == {r1_model["id"]}
    assert set(r2.query("SELECT DISTINCT checkpoint_id FROM explorations WHERE experiment = ?", [EXP])["checkpoint_id"]) == {r1_model["id"]}
    # round 1 was sampled by SFT, as always
    assert set(store.query("SELECT DISTINCT checkpoint_id FROM samples WHERE experiment = ?", [EXP])["checkpoint_id"]) == {
        _checkpoint(store, "sft_checkpoint")["id"]
    }
    # rounds.train_from previous: round 2's DPO starts from round 1's model
    r2_model = _checkpoint(store, "round_2/trained_model")
    assert r2_model["parent_id"] == r1_model["id"] and r2_model["round"] == 2
    assert Path(r2_model["path"]) == tmp / "checkpoints" / EXP / "round_2" / "trained_model"
    # every row carries its round; round 1's tables hold round 1's rows only
    for table in ("samples", "outcome_pairs", "pits", "dpo_pairs", "eval_scores"):
        assert set(store.query(f"SELECT DISTINCT round FROM main.{table}")["round"]) == {1}, table
        assert set(store.query(f"SELECT DISTINCT round FROM round_2.{table}")["round"]) == {2}, table
    rounds = store.query("SELECT asset, round FROM lineage WHERE experiment = ?", [EXP])
    assert set(rounds[rounds["asset"].isin(ROUND_2)]["round"]) == {2}
    assert set(rounds[rounds["asset"].isin(ROUND_1)]["round"]) == {1}
    # the lineage row of round 2's sampling names round 1's model (by fingerprint) as its sampler
    row = store.latest_lineage(EXP, "round_2/sampled_rationales")
    import json

    assert json.loads(row["input_versions"])["sft_checkpoint"]["fingerprint"] == store.latest_lineage(EXP, "trained_model")["fingerprint"]


@pytest.mark.slow  # materializes the micro graph's two rounds
def test_a_round_two_pair_traces_back_to_round_one(rounds2):
    _, _, store, _ = rounds2
    r2 = store.for_round(2)
    pair = r2.query("SELECT id FROM dpo_pairs WHERE experiment = ? ORDER BY id LIMIT 1", [EXP])["id"][0]
    trace = r2.query(TRACE_DPO_PAIR_SQL, [EXP, pair])
    assert len(trace) and trace["pairs_run_id"].notna().all()
    assert set(trace["sampler_checkpoint"]) == {_checkpoint(store, "trained_model")["path"]}
    sampler = r2.query("SELECT checkpoint_id FROM samples WHERE experiment = ? LIMIT 1", [EXP])["checkpoint_id"][0]
    chain = store.query(TRACE_CHECKPOINT_SQL, [EXP, sampler])
    assert chain["name"].tolist() == ["trained_model", "rft_checkpoint", "base_model"]
    r2_chain = store.query(TRACE_CHECKPOINT_SQL, [EXP, _checkpoint(store, "round_2/trained_model")["id"]])
    assert r2_chain["name"].tolist() == ["round_2/trained_model", "trained_model", "rft_checkpoint", "base_model"]
    assert r2_chain["round"].tolist() == [2, 1, 1, 1]


@pytest.mark.slow  # materializes the micro graph's two rounds
def test_round_two_eval_reports_accuracy_by_round(rounds2):
    _, result, store, _ = rounds2
    scores = store.for_round(2).query("SELECT model, split FROM eval_scores WHERE experiment = ?", [EXP])
    assert sorted(scores["model"]) == ["RFT", "Self-Explore", "outcome DPO"]  # few-shot and SFT: round 1's
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "round_2/eval_scores"]
    table = event.materialization.metadata["rounds_table"].value
    assert "| round | sample accuracy | D_pair | pits | D_g-pair | RFT | outcome DPO | Self-Explore |" in table
    lines = [line for line in table.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(lines) == 2
    d_pair = store.query("SELECT count(*) AS n FROM outcome_pairs WHERE experiment = ?", [EXP])["n"][0]
    assert lines[0].split("|")[3].strip() == str(d_pair)
    assert "rounds_chart" in event.materialization.metadata


@pytest.mark.slow  # materializes the micro graph's two rounds
def test_round_one_does_not_read_rounds(rounds2, monkeypatch):
    """Round 1 is today's graph: with rounds.count 1 every round-1 stage is unchanged (same
    fingerprints, nothing re-runs), and a round beyond rounds.count fails naming the field."""
    tmp, _, _, _ = rounds2
    one = _experiments(tmp, "one.yaml", EXP, {**ROUNDS, "rounds": {"count": 1}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(one))
    result = dg.materialize(ALL_ASSETS, partition_key=EXP, resources=_resources(tmp), selection=ROUND_1)
    ran = [
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        if not e.materialization.metadata["skipped_unchanged"].value
    ]
    assert ran == []
    beyond = dg.materialize(
        rounds_graph(2), partition_key=EXP, resources=_resources(tmp), selection=["round_2/sampled_rationales"], raise_on_error=False
    )
    assert not beyond.success
    [failure] = [e for e in beyond.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "rounds.count" in failure.event_specific_data.error.message


@pytest.mark.slow
def test_a_backfill_of_two_rounds_runs_round_two_after_round_one(rounds2, tmp_path):
    """An asset backfill of rounds 1 and 2 for one experiment, as the UI's 'Materialize' over
    the round groups launches it, executed by a real ``dagster-daemon``: it completes, and every
    round-2 stage ran after round 1's Self-Explore model was materialized. On a copy of the
    fixture's store with the lineage of round 2's Self-Explore model and eval removed: round 1 and
    the rest of round 2 are skipped as unchanged, those two run again (the fixture ran all of round
    2; two stages keep this test short)."""
    import shutil

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    src, _, _, _ = rounds2
    path = Path(os.environ["SX_EXPERIMENTS_FILE"])
    shutil.copy(src / "sx.duckdb", tmp_path / "sx.duckdb")
    copy = LineageStore(database=str(tmp_path / "sx.duckdb"))
    rerun = {"round_2/trained_model", "round_2/eval_scores"}
    copy.query("DELETE FROM lineage WHERE experiment = ? AND round = 2 AND asset IN (?, ?)", [EXP, *sorted(rerun)])
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
    env = {**os.environ, "SX_DATA_DIR": str(tmp_path), "SX_EXPERIMENTS_FILE": str(path), "DAGSTER_HOME": str(home)}
    env["SX_EXECUTOR"] = "in_process"
    instance = dg.DagsterInstance.from_config(str(home))
    graph = dg.Definitions(assets=rounds_graph(2), resources=_resources(tmp_path)).resolve_asset_graph()
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=graph,
            partition_names=[EXP],
            asset_selection=[dg.AssetKey.from_user_string(k) for k in [*ROUND_1, *sorted(ROUND_2)]],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="rounds 1..2",
            description=None,
            run_config=None,
        )
    )
    with dagster_daemon(tmp_path, env) as daemon:
        deadline = time.time() + 480
        while time.time() < deadline:
            status = instance.get_backfill(backfill_id).status
            if status != BulkActionStatus.REQUESTED:
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(2)
    assert status == BulkActionStatus.COMPLETED_SUCCESS, (status, (tmp_path / "daemon.log").read_text()[-3000:])
    order = {}
    for key in ROUND_1 + sorted(ROUND_2):
        [record] = instance.fetch_materializations(dg.AssetKey.from_user_string(key), limit=1).records
        assert record.event_log_entry.dagster_event.partition == EXP, key
        order[key] = record.storage_id
    assert max(order[a] for a in ("trained_model", "rft_checkpoint")) < min(order[a] for a in ROUND_2)
    ran = copy.query("SELECT asset FROM lineage WHERE experiment = ? AND round = 2", [EXP])["asset"]
    assert set(ran) >= ROUND_2  # the two removed ran again under the daemon
    assert copy.for_round(2).query("SELECT count(*) AS n FROM eval_scores WHERE experiment = ?", [EXP])["n"][0] == 3


def _ran(result) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        if not e.materialization.metadata["skipped_unchanged"].value
    }


@pytest.mark.slow  # materializes the micro graph's two rounds
def test_a_round_two_change_leaves_round_one_and_a_round_one_change_marks_round_two_stale(rounds2, monkeypatch):
    """Last in the module: it changes the fixture's graph."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    tmp, _, _, instance = rounds2
    graph = rounds_graph(2)
    both = [*ROUND_1, *ROUND_2]
    # a round-2 setting (pairs of rounds 1..2) re-trains round 2's DPO models and its eval only
    acc = _experiments(tmp, "acc.yaml", EXP, {**ROUNDS, "rounds": {"count": 2, "pairs": "accumulate"}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(acc))
    again = dg.materialize(graph, partition_key=EXP, resources=_resources(tmp), instance=instance, selection=both)
    assert _ran(again) == {"round_2/trained_model", "round_2/outcome_dpo_model", "round_2/eval_scores"}
    [event] = [e for e in again.get_asset_materialization_events() if e.asset_key.to_user_string() == "round_2/trained_model"]
    store = LineageStore(database=str(tmp / "sx.duckdb"))
    pairs = sum(store.query(f"SELECT count(*) AS n FROM {s}.dpo_pairs WHERE experiment = ?", [EXP])["n"][0] for s in ("main", "round_2"))
    assert event.materialization.metadata["pairs"].value == pairs
    # a round-1 DPO setting: once round 1 is re-materialized, the UI shows round 2 stale, SFT not
    lr = _experiments(tmp, "lr.yaml", EXP, {**ROUNDS, "rounds": {"count": 2, "pairs": "accumulate"}, "dpo": {"learning_rate": 2.0e-5}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(lr))
    round_1 = dg.materialize(graph, partition_key=EXP, resources=_resources(tmp), instance=instance, selection=ROUND_1)
    assert {"trained_model", "outcome_dpo_model"} <= _ran(round_1) and "sft_checkpoint" not in _ran(round_1)
    asset_graph = dg.Definitions(assets=graph, resources=_resources(tmp)).resolve_asset_graph()
    stale = CachingStaleStatusResolver(instance, asset_graph, LoadingContextForTest(instance))  # what the UI asks
    status = lambda key: stale.get_status(dg.AssetKey.from_user_string(key), EXP)  # noqa: E731
    assert status("round_2/sampled_rationales") == StaleStatus.STALE  # its sampler changed
    assert status("round_2/first_pit_labels") == StaleStatus.STALE  # its explorer changed
    assert status("sft_checkpoint") == StaleStatus.FRESH and status("trained_model") == StaleStatus.FRESH
