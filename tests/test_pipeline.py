"""The real asset graph on micro configurations: rows in DuckDB, lineage, idempotence,
resume after kill -9, checks, config and input errors."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from sx_dagster.assets import ALL_ASSETS
from sx_dagster.assets.evaluate import format_scores
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error
from sx_dagster.lineage_queries import TRACE_DPO_PAIR_SQL, TRACE_PRM_EXAMPLE_SQL
from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore, queries

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ASSET_NAMES = [a.key.to_user_string() for a in ALL_ASSETS]


def _resources(tmp: Path) -> dict:
    return {
        "lineage": LineageStore(database=str(tmp / "sx.duckdb")),
        "checkpoints": CheckpointStore(root=str(tmp / "checkpoints")),
        "accelerator": AcceleratorResource(device="cpu"),
        "generator": GeneratorResource(),
    }


def _materialize(tmp: Path, partition: str, selection=None, raise_on_error: bool = True):
    return dg.materialize(
        ALL_ASSETS, partition_key=partition, resources=_resources(tmp), selection=selection, raise_on_error=raise_on_error
    )


def _count(store: LineageStore, table: str, exp: str = "micro") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table} WHERE experiment = ?", [exp])["n"][0])


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("micro")
    t = time.perf_counter()
    result = _materialize(tmp, "micro")
    first = time.perf_counter() - t
    return tmp, result, LineageStore(database=str(tmp / "sx.duckdb")), first


def test_whole_graph_materializes_with_rows_in_duckdb(micro):
    tmp, result, store, _ = micro
    assert result.success
    mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert mats == set(ASSET_NAMES)
    assert _count(store, "questions") == 96 + 24
    # N = 4 samples for every training question
    per_q = store.query("SELECT question_id, count(*) AS n FROM samples WHERE experiment = 'micro' GROUP BY 1")
    assert len(per_q) == 96 and set(per_q["n"]) == {4}
    n_pairs = _count(store, "outcome_pairs")
    assert n_pairs > 0
    assert _count(store, "pits") == n_pairs  # every rejected rationale explored once
    pits = store.query("SELECT * FROM pits WHERE experiment = 'micro'")
    assert (pits["completions"] > 0).all() and (pits["generated_tokens"] > 0).all()
    found = pits[pits["pit"].notna()]
    assert (found["pit"] <= found["explored_steps"]).all()  # never explored past the pit
    assert pits["true_first_error"].notna().all()  # synthetic ground truth recorded
    # every completion of a pit step failed (k = 2), as the rule says
    x = store.query(
        "SELECT bool_or(x.correct) AS any_ok FROM explorations x JOIN pits t ON t.experiment = x.experiment "
        "AND t.pair_id = x.pair_id AND x.step = t.pit WHERE x.experiment = 'micro' GROUP BY x.pair_id"
    )
    assert not x["any_ok"].any()
    d = store.query("SELECT * FROM dpo_pairs WHERE experiment = 'micro'")
    assert len(d) > 0 and (d["chosen"] != d["rejected"]).all() and not d["truncated"].any()
    scores = store.query("SELECT model, n, accuracy FROM eval_scores WHERE experiment = 'micro'")
    assert list(scores["model"]) == ["base (few-shot)", "SFT", "RFT", "outcome DPO", "Self-Explore"]
    assert set(scores["n"]) == {24} and ((scores["accuracy"] >= 0) & (scores["accuracy"] <= 1)).all()
    assert _count(store, "eval_predictions") == 5 * 24
    # The synthetic task checks every step: a rationale with every step right has the right
    # answer, not always the other way round; the counts are the per-question rows'.
    pr = store.query("SELECT model, correct, steps_right, text, question_id FROM eval_predictions WHERE experiment = 'micro'")
    assert pr["steps_right"].notna().all() and not (pr["steps_right"] & ~pr["correct"]).any()
    q = store.query("SELECT id, meta FROM questions WHERE experiment = 'micro' AND split = 'test'")
    problems = {i: SyntheticProblem.from_json(m) for i, m in zip(q["id"], q["meta"], strict=True)}
    assert [true_first_error(problems[i], t) is None for i, t in zip(pr["question_id"], pr["text"], strict=True)] == list(pr["steps_right"])
    full = store.query("SELECT * FROM eval_scores WHERE experiment = 'micro' ORDER BY rowid")
    assert list(full["n_steps_right"]) == [int(pr[pr["model"] == m]["steps_right"].sum()) for m in full["model"]]
    assert "every step right" in format_scores(full)
    assert "every step right" not in format_scores(full.assign(n_steps_right=None))  # a task without step ground truth
    # checkpoints written atomically: final dirs with weights, no temp dirs left
    ck = tmp / "checkpoints" / "micro"
    for name in ("base_model", "sft_checkpoint", "rft_checkpoint", "trained_model", "outcome_dpo_model"):
        assert (ck / name / "model.safetensors").exists()
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]
    # a lineage row per asset, each with its fingerprint, config and inputs
    lin = store.query("SELECT asset, fingerprint, input_versions FROM lineage WHERE experiment = 'micro'")
    assert set(lin["asset"]) == set(ASSET_NAMES)
    assert lin["fingerprint"].str.len().min() == 16


def test_every_row_carries_experiment_run_and_parent(micro):
    _, result, store, _ = micro
    tables = ("samples", "outcome_pairs", "explorations", "pits", "dpo_pairs", "eval_predictions")
    for table in (*tables, "step_labels", "prm_examples", "best_of_n_samples", "best_of_n_scores"):
        df = store.query(f"SELECT run_id, parent_id FROM {table} WHERE experiment = 'micro'")
        assert (df["run_id"] == result.run_id).all(), table
        assert df["parent_id"].notna().all(), table


def test_lineage_query_traces_a_dpo_pair(micro):
    _, _, store, _ = micro
    pair = store.query("SELECT id, pit FROM dpo_pairs WHERE experiment = 'micro' ORDER BY pit DESC, id LIMIT 1").iloc[0]
    trace = store.query(TRACE_DPO_PAIR_SQL, ["micro", pair["id"]])
    assert len(trace) >= 1
    row = trace.iloc[0]
    assert row["rationale"].startswith(row["rejected"].split("\n")[0]) or row["rejected"] in row["rationale"]
    assert row["sampler_checkpoint"].endswith("sft_checkpoint")
    if pair["pit"] > 1:  # the chosen side came from exploration: completions and explorer are known
        assert row["explorer_checkpoint"].endswith("rft_checkpoint")
        assert trace["completion"].notna().all() and trace["explored_step"].eq(pair["pit"] - 1).all()
    assert row["pairs_run_id"]


def test_process_rewards_on_the_micro_graph(micro):
    """Issue 25: step labels exported as a `datasets` dataset in TRL's stepwise format, a PRM
    checkpoint, best-of-N rows for both policies, and the trace from a PRM row to its exploration."""
    from datasets import load_from_disk

    _, result, store, _ = micro
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    labels = store.query("SELECT * FROM step_labels WHERE experiment = 'micro'")
    examples = store.query("SELECT * FROM prm_examples WHERE experiment = 'micro'")
    assert len(labels) == meta["step_labels"]["labelled_steps"].value > 0
    assert set(labels["source"]) <= {"correct-sample", "pool", "completion", "pit"} and (~labels["good"]).sum() > 0
    assert (labels[labels["source"] == "pit"]["soft"] == 0.0).all()  # the k drawn at a pit all failed
    ds = load_from_disk(meta["step_labels"]["dataset_path"].value)
    # a split with no rows is left out (datasets cannot load one back)
    assert "train" in set(ds) <= {"train", "held_out"} and sum(len(d) for d in ds.values()) == len(examples)
    assert ds["train"].column_names == ["prompt", "completions", "labels"]
    row = ds["train"][0]
    assert row["prompt"].startswith("Question: ") and len(row["completions"]) == len(row["labels"]) >= 1
    # the pit ends a stepwise row: nothing after a bad step is labelled
    assert all(all(r["labels"][:-1]) for d in ds.values() for r in d)
    assert meta["process_reward_model"]["steps"].value > 0 and "loss_curve" in meta["process_reward_model"]
    assert Path(meta["process_reward_model"]["checkpoint_path"].value, "config.json").is_file()
    scores = store.query("SELECT model, rule, n, accuracy FROM best_of_n_scores WHERE experiment = 'micro'")
    assert set(scores["model"]) == {"SFT", "Self-Explore"}
    assert set(scores["rule"]) == {"greedy", "first_sample", "majority", "prm_min", "prm_last", "pass_at_n"} and set(scores["n"]) == {24}
    pass_n = scores[scores["rule"] == "pass_at_n"].set_index("model")["accuracy"]
    for rule in ("first_sample", "majority", "prm_min", "prm_last"):  # a pick among N is never better than any of N
        assert (scores[scores["rule"] == rule].set_index("model")["accuracy"] <= pass_n).all()
    samples = store.query("SELECT step_scores, min_score FROM best_of_n_samples WHERE experiment = 'micro'")
    assert len(samples) == 2 * 24 * 3 and ((samples["min_score"] >= 0) & (samples["min_score"] <= 1)).all()
    assert "| model | greedy |" in meta["best_of_n"]["table"].value
    # a PRM training row of a rejected rationale traces to the completions that prove its pit and the explorer
    rejected = examples.merge(labels[labels["source"] == "pit"][["sample_id"]], on="sample_id")
    trace = store.query(TRACE_PRM_EXAMPLE_SQL, ["micro", rejected["id"].iloc[0]])
    pit = trace[trace["source"] == "pit"]
    assert len(pit) == 2 and not pit["completion_correct"].any()  # k = 2, both failed
    assert pit["explorer_checkpoint"].str.endswith("rft_checkpoint").all()
    assert trace["sampler_checkpoint"].str.endswith("sft_checkpoint").all()


def test_metadata_a_user_wants(micro):
    _, result, _, _ = micro
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["sampled_rationales"]["samples"].value == 96 * 4
    assert "pit_histogram" in meta["first_pit_labels"] or meta["first_pit_labels"]["pits_found"].value == 0
    assert "pit_equals_true_first_error" in meta["first_pit_labels"]
    assert "loss_curve" in meta["sft_checkpoint"] and meta["sft_checkpoint"]["steps"].value > 0
    # the precision each training stage ran in is recorded (dtype auto: bf16 only with native bf16)
    want = AcceleratorResource(device="cpu").resolve_dtype()
    for name in ("sft_checkpoint", "rft_checkpoint", "trained_model", "outcome_dpo_model"):
        assert meta[name]["dtype"].value == want and meta[name]["device"].value == "cpu"
    assert "table" in meta["eval_scores"] and "accuracy/Self-Explore" in meta["eval_scores"]
    assert meta["dpo_pairs"]["pairs"].value > 0
    # a few pits and pairs to eyeball in the UI: the step before the pit, the pit step, the chosen, the true first error
    for name in ("first_pit_labels", "dpo_pairs"):
        table = meta[name]["examples"].value
        assert "| pit step (rejected) |" in table and "true first error" in table and table.count("\n") >= 3


def test_rematerialize_is_idempotent_and_cheap(micro):
    tmp, _, store, first = micro
    before = {t: _count(store, t) for t in ("questions", "samples", "explorations", "pits", "dpo_pairs", "eval_scores")}
    t = time.perf_counter()
    again = _materialize(tmp, "micro")
    second = time.perf_counter() - t
    assert again.success
    after = {t: _count(store, t) for t in before}
    assert after == before
    skipped = [e.materialization.metadata["skipped_unchanged"].value for e in again.get_asset_materialization_events()]
    assert all(skipped) and len(skipped) == len(ASSET_NAMES)
    print(f"first materialization {first:.1f}s, unchanged re-materialization {second:.1f}s")
    assert second < first


STALENESS_PARTITION = "micro"  # micro-b finds no D_pair to train on
DPO_STAGES = {"trained_model", "outcome_dpo_model", "eval_scores", "best_of_n"}
PRM_STAGES = {"step_labels", "process_reward_model", "best_of_n"}
EXPLORE_STAGES = {"first_pit_labels", "dpo_pairs", "trained_model", "eval_scores", *PRM_STAGES}


def _ran(tmp: Path) -> set[str]:
    """The assets that ran (not skipped as unchanged) when the whole graph is materialized."""
    result = _materialize(tmp, STALENESS_PARTITION)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(meta) == set(ASSET_NAMES)
    return {a for a, m in meta.items() if not m["skipped_unchanged"].value}


def test_a_config_change_reruns_only_the_stages_that_read_it(micro, tmp_path, monkeypatch):
    """Issue 11 part 1 (the code half is tests/test_staleness.py), on a copy of the micro graph:
    the fixture is its first run, in which every asset ran (test_whole_graph_materializes...)."""
    from test_recovery import _experiments

    shutil.copytree(micro[0], tmp_path, dirs_exist_ok=True)
    assert _ran(tmp_path) == set()  # nothing changed, and a moved data dir is the same data: everything skipped
    # A DPO hyperparameter reaches the two DPO models, and through them the evaluation only.
    lr = _experiments(tmp_path, "lr.yaml", STALENESS_PARTITION, {"dpo": {"learning_rate": 2.0e-5}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(lr))
    assert _ran(tmp_path) == DPO_STAGES
    # k reaches exploration, D_g-pair, Self-Explore and the evaluation; D_pair and its DPO stay.
    k = _experiments(tmp_path, "k.yaml", STALENESS_PARTITION, {"dpo": {"learning_rate": 2.0e-5}, "explore": {"k": 3}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(k))
    assert _ran(tmp_path) == EXPLORE_STAGES
    # A PRM hyperparameter re-trains the PRM and re-ranks best-of-N; SFT through DPO and eval stay.
    prm = {"dpo": {"learning_rate": 2.0e-5}, "explore": {"k": 3}, "prm": {"epochs": 1}}
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(_experiments(tmp_path, "prm.yaml", STALENESS_PARTITION, prm)))
    assert _ran(tmp_path) == {"process_reward_model", "best_of_n"}
    # N of best-of-N re-runs best-of-N alone
    n = {"dpo": {"learning_rate": 2.0e-5}, "explore": {"k": 3}, "prm": {"epochs": 1, "best_of_n": 2}}
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(_experiments(tmp_path, "n.yaml", STALENESS_PARTITION, n)))
    assert _ran(tmp_path) == {"best_of_n"}


def test_changed_config_replaces_partition_rows(micro, tmp_path):
    tmp, _, store, _ = micro
    # task_dataset is replaced in one transaction: same ids, no duplicates after a forced re-run
    store.query("DELETE FROM lineage WHERE experiment = 'micro' AND asset = 'task_dataset'")
    assert _materialize(tmp, "micro", selection=["task_dataset"]).success
    dup = store.query("SELECT id, count(*) AS n FROM questions WHERE experiment = 'micro' GROUP BY 1 HAVING n > 1")
    assert dup.empty and _count(store, "questions") == 120


def test_sampling_covers_only_the_first_questions_asked_for_and_rft_keeps_every_gold(tmp_path):
    sel = ["task_dataset", "base_model", "sft_checkpoint", "sampled_rationales", "rft_checkpoint"]
    result = _materialize(tmp_path, "micro-sub", selection=sel)
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    train = store.query("SELECT id, meta FROM questions WHERE experiment = 'micro-sub' AND split = 'train' ORDER BY id")
    assert len(train) == 24 and train["meta"].str.contains('"transfers": \\[\\d').any()  # some steps told as transfers
    per_q = store.query("SELECT question_id, count(*) AS n FROM samples WHERE experiment = 'micro-sub' GROUP BY 1 ORDER BY 1")
    assert per_q["question_id"].tolist() == train["id"].tolist()[:10] and set(per_q["n"]) == {2}
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "n_samples_per_question"]
    assert len(checks) == 1 and checks[0].passed and checks[0].metadata["questions"].value == 10
    assert store.query("SELECT count(*) AS n FROM rft_data WHERE experiment = 'micro-sub' AND source = 'gold'")["n"][0] == 24


def test_resume_after_kill_9_mid_chunk(tmp_path):
    assert _materialize(tmp_path, "micro-b", selection=["task_dataset", "base_model", "sft_checkpoint"]).success
    code = (
        "import sys, dagster as dg; from pathlib import Path;"
        "sys.path.insert(0, 'tests'); import test_pipeline as t;"
        f"t._materialize(Path({str(tmp_path)!r}), 'micro-b', selection=['sampled_rationales'])"
    )
    env = {**os.environ, "SX_TEST_CRASH_AFTER_CHUNKS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    assert store.query("SELECT chunk FROM chunks WHERE experiment = 'micro-b'")["chunk"].tolist() == [0]
    # one committed chunk of 12 questions x N=2, staged apart until the stage finishes
    assert _count(store, "samples_staged", "micro-b") == 12 * 2 and _count(store, "samples", "micro-b") == 0
    first_chunk = store.query("SELECT id, text FROM samples_staged WHERE experiment = 'micro-b' ORDER BY id")
    result = _materialize(tmp_path, "micro-b", selection=["sampled_rationales"])
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["chunks_resumed"].value == 1 and meta["chunks"].value == 2
    samples = store.query("SELECT id FROM samples WHERE experiment = 'micro-b'")
    assert len(samples) == 24 * 2 and samples["id"].is_unique  # nothing lost, nothing duplicated
    kept = store.query("SELECT id, text FROM samples WHERE experiment = 'micro-b' AND chunk = 0 ORDER BY id")
    assert kept.equals(first_chunk)  # the committed chunk was not redone


def test_blocking_check_stops_dpo_when_there_are_no_pairs(tmp_path):
    # micro-b's 1-epoch model gets nothing right: no D_pair, and DPO must not run on nothing
    result = _materialize(tmp_path, "micro-b", raise_on_error=False)
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    if _count(store, "outcome_pairs", "micro-b") == 0:
        assert checks[("outcome_pairs", "non_empty")] is False
        mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "outcome_dpo_model" not in mats and "trained_model" not in mats
    else:
        pytest.skip("micro-b happened to produce pairs")


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not beside the checkout")
def test_task_dataset_from_local_gsm8k_and_math_jsonl(tmp_path):
    assert _materialize(tmp_path, "gsm8k-shared", selection=["task_dataset"]).success
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    q = store.query("SELECT split, count(*) AS n FROM questions WHERE experiment = 'gsm8k-shared' GROUP BY 1 ORDER BY 1")
    # n_dev: 10 carves the dev rows off the end of the training rows it reads (50 + 10)
    assert q.to_dict("list") == {"split": ["dev", "test", "train"], "n": [10, 20, 50]}
    ids = store.query("SELECT split, id FROM questions WHERE experiment = 'gsm8k-shared' AND split <> 'test' ORDER BY id")
    assert sorted(ids[ids["split"] == "dev"]["id"], key=lambda i: int(i.rsplit("-", 1)[1]))[0] == "gsm8k-train-50"
    assert _materialize(tmp_path, "math-shared", selection=["task_dataset"]).success
    assert _count(store, "questions", "math-shared") == 40


def test_malformed_row_fails_naming_file_and_line_and_keeps_rows(micro, tmp_path):
    tmp, _, store, _ = micro
    before = _count(store, "questions")
    with pytest.raises(dg.Failure, match=r"malformed_gsm8k\.jsonl:2: no gold answer"):
        _materialize(tmp, "bad-data", selection=["task_dataset"])
    assert _count(store, "questions") == before  # nothing already written is lost


def test_unknown_model_is_a_clear_error(tmp_path):
    assert _materialize(tmp_path, "bad-model", selection=["task_dataset"]).success
    with pytest.raises(dg.Failure, match="cannot load tokenizer 'no-such-org/no-such-model-sx'"):
        _materialize(tmp_path, "bad-model", selection=["base_model"])


def test_upstream_missing_is_a_clear_error(tmp_path):
    with pytest.raises(dg.Failure, match="upstream asset 'task_dataset' has not been materialized"):
        _materialize(tmp_path, "micro-b", selection=["base_model"])


def test_definitions_load_with_the_shipped_experiments():
    code = (
        "from sx_dagster.definitions import defs; import dagster as dg; from sx_dagster.assets import ALL_ASSETS;"
        "dg.Definitions.validate_loadable(defs);"
        "print(len(ALL_ASSETS)); print(sorted(a.group_names_by_key[a.key] for a in ALL_ASSETS));"
        "print(','.join(ALL_ASSETS[-1].partitions_def.get_partition_keys()));"
        "print(','.join(s.name for s in defs.schedules)); print(','.join(j.name for j in defs.jobs));"
        "import sys; print(defs.resolve_job_def('self_explore').executor_def.name, 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SX_EXPERIMENTS_FILE", "SX_EXECUTOR")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    lines = out.strip().split("\n")
    assert lines[0] == "14"
    keys = lines[2].split(",")
    assert "tiny-synthetic" in keys and "mistral-7b-gsm8k" in keys and "deepseek-math-7b-math" in keys and len(keys) == 9
    assert lines[3] == "rerun_eval_tiny_synthetic"
    assert "self_explore" in lines[4] and "evaluate" in lines[4]
    # the executor for this machine; with a CPU-only torch, chosen without importing torch (1.2 s
    # of the start of a code server, a daemon, `dagster job launch`)
    import torch

    from sx_dagster.device import cpu_only_build

    cpu_only = cpu_only_build(Path(torch.__file__).parent / "version.py")
    assert lines[5] == f"{'multiprocess' if torch.cuda.is_available() else 'in_process'} {not cpu_only}"
    # SX_EXECUTOR=k8s: every step in its own pod (dagster-k8s), the recipe in the README
    code = "from sx_dagster.definitions import defs; print(defs.get_job_def('self_explore').executor_def.name)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**env, "SX_EXECUTOR": "k8s"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "k8s"


def test_dagster_cli_materializes_a_partition(tmp_path):
    env = {**os.environ, "SX_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "sx_dagster.definitions",
            "--select",
            "task_dataset",
            "--partition",
            "micro-b",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _count(LineageStore(database=str(tmp_path / "sx.duckdb")), "questions", "micro-b") == 36


def test_backfill_over_experiment_partitions_from_the_cli(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "SX_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "job",
        "backfill",
        "-m",
        "sx_dagster.definitions",
        "-j",
        "self_explore",
        "--partitions",
        "micro,micro-b",
        "--noprompt",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    instance = dg.DagsterInstance.from_config(str(home))
    backfills = instance.get_backfills()
    assert len(backfills) == 1
    assert sorted(backfills[0].partition_names) == ["micro", "micro-b"]


def test_first_pit_labels_resume_after_kill_9_matches_an_uninterrupted_run(micro, tmp_path):
    src, _, original, _ = micro
    shutil.copy(src / "sx.duckdb", tmp_path / "sx.duckdb")
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    for sql in (
        "DELETE FROM explorations WHERE experiment = 'micro'",
        "DELETE FROM pits WHERE experiment = 'micro'",
        "DELETE FROM chunks WHERE experiment = 'micro' AND asset = 'first_pit_labels'",
        "DELETE FROM lineage WHERE experiment = 'micro' AND asset = 'first_pit_labels'",
    ):
        store.query(sql)
    expected = original.query("SELECT pair_id, pit, completions FROM pits WHERE experiment = 'micro' ORDER BY pair_id")
    n_chunks = len(expected)  # chunk_pairs: 1
    assert n_chunks >= 2, "the micro config must give exploration at least two chunks"
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); import test_pipeline as t;"
        f"t._materialize(Path({str(tmp_path)!r}), 'micro', selection=['first_pit_labels'])"
    )
    env = {**os.environ, "SX_TEST_CRASH_AFTER_CHUNKS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert store.query("SELECT chunk FROM chunks WHERE experiment = 'micro' AND asset = 'first_pit_labels'")["chunk"].tolist() == [0]
    result = _materialize(tmp_path, "micro", selection=["first_pit_labels"])
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["chunks_resumed"].value == 1 and meta["chunks"].value == n_chunks
    got = store.query("SELECT pair_id, pit, completions FROM pits WHERE experiment = 'micro' ORDER BY pair_id")
    assert got.equals(expected)  # same pits as the run that was never interrupted
    ids = store.query("SELECT id FROM explorations WHERE experiment = 'micro'")["id"]
    assert ids.is_unique and len(ids) == int(expected["completions"].sum())


def test_schedule_requests_a_rerun_of_its_experiment():
    from sx_dagster.definitions import defs

    schedules = {s.name: s for s in defs.schedules}
    assert schedules  # the micro file gives micro a schedule
    name, schedule = next(iter(schedules.items()))
    requests = schedule.evaluate_tick(dg.build_schedule_context(repository_def=defs.get_repository_def())).run_requests
    assert [r.partition_key for r in requests] == ["micro"]
    assert schedule.job_name == "evaluate" and schedule.cron_schedule == "0 4 * * *"


def test_hub_dataset_offline_is_a_clear_error(tmp_path):
    with pytest.raises(dg.Failure, match=r"cannot load Hub dataset 'openai/gsm8k' split 'train'.*train_path"):
        _materialize(tmp_path, "hub-offline", selection=["task_dataset"])


def test_exploration_strategies_on_the_micro_explorer(micro):
    from dataclasses import asdict

    from sx_dagster.config import get_experiment
    from sx_dagster.core.explore import explore, pool_steps, sample_pool
    from sx_dagster.core.steps import split_steps
    from sx_dagster.ml.explorer import explorer_generate
    from sx_dagster.ml.generation import HFBackend

    _, _, store, _ = micro
    exp = get_experiment("micro")
    rejected = queries.rejected_rationales(store, "micro")
    explorer = store.latest_lineage("micro", "rft_checkpoint")["checkpoint_path"]
    pool = pool_steps(sample_pool(queries.correct_samples(store, "micro"), "synthetic"))
    assert sum(map(len, pool.values())) == _count(store, "samples") - int(
        store.query("SELECT count(*) AS n FROM samples WHERE experiment = 'micro' AND NOT correct")["n"][0]
    )
    # The micro model's correct samples rarely share a step with a wrong one: add a correct
    # rationale that shares step 1 of every rejected one, so the skip is exercised.
    for r in rejected:
        pool.setdefault(r.question_id, []).append(split_steps(r.text, "synthetic")[:1])
    runs = {}
    for strategy in ("linear", "early-stop", "pool-reuse", "binary"):
        cfg = exp.model_copy(update={"explore": exp.explore.model_copy(update={"strategy": strategy})})
        generate = explorer_generate(HFBackend(explorer, "cpu", "float32", 64), cfg.explore, 1, "synthetic")
        x, pits = explore(rejected, generate, cfg.explore, "synthetic", pool)
        runs[strategy] = ({p.pair_id: asdict(p) for p in pits}, [asdict(r) for r in x])
    linear, early = runs["linear"][0], runs["early-stop"][0]
    # early-stop draws a prefix's samples in linear's order, so it finds linear's pit, for less
    assert {k: p["pit"] for k, p in early.items()} == {k: p["pit"] for k, p in linear.items()}
    assert all(early[k]["completions"] <= linear[k]["completions"] for k in linear)
    for k, p in runs["pool-reuse"][0].items():
        assert p["pit"] is None or p["pit"] > p["proven"]  # a pool-proven prefix is never the pit
        assert all(step > p["proven"] for step in (r["step"] for r in runs["pool-reuse"][1] if r["pair_id"] == k))
    assert all(p["proven"] >= min(1, p["n_steps"] - 1) for p in runs["pool-reuse"][0].values())
    for k, p in runs["binary"][0].items():
        if p["pit"] is not None:  # a real 0/k prefix
            assert not any(r["correct"] for r in runs["binary"][1] if r["pair_id"] == k and r["step"] == p["pit"])
    for pits, _ in runs.values():
        assert sum(p["prefill_tokens"] for p in pits.values()) < sum(p["prompt_tokens"] for p in pits.values())  # prefix cache used


def test_gpu_steps_share_a_pool_retry_with_backoff_and_request_gpus_on_k8s(monkeypatch, tmp_path):
    from sx_dagster.assets._stage import gpu_step

    by_key = {a.key.to_user_string(): a for a in ALL_ASSETS}
    gpu = {k for k, a in by_key.items() if a.op.pool == "gpu"}
    assert gpu == {
        "sft_checkpoint",
        "sampled_rationales",
        "rft_checkpoint",
        "first_pit_labels",
        "outcome_dpo_model",
        "trained_model",
        "eval_scores",
        "process_reward_model",
        "best_of_n",
    }
    assert all("dagster-k8s/config" in by_key[k].op.tags for k in gpu)
    monkeypatch.delenv("SX_STEP_RETRIES")
    monkeypatch.setenv("SX_K8S_GPUS", "4")
    step = gpu_step()
    assert step["retry_policy"].max_retries == 2 and step["retry_policy"].backoff == dg.Backoff.EXPONENTIAL
    assert step["op_tags"]["dagster-k8s/config"]["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    # the shipped instance config is valid and caps the pool at one step at a time
    shutil.copy(ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    pools = dg.DagsterInstance.from_config(str(tmp_path)).get_concurrency_config().pool_config
    assert pools.default_pool_limit == 1
