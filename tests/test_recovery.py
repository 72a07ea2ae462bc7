"""Nothing lost, nothing stale (issue 15): a failed or killed re-run keeps the old rows and
lineage, inputs are fingerprinted by content, a missing checkpoint names the asset to re-run,
and bad task files fail naming file and line before anything is written."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from test_pipeline import ROOT, _count, _materialize

from sx_dagster.core.tasks import MAX_FIELD_CHARS, DatasetError, load_jsonl
from sx_dagster.resources import LineageStore
from sx_dagster.resources.checkpoints import checkpoint_hash

MICRO = Path(__file__).resolve().parent / "experiments_micro.yaml"


def _experiments(tmp: Path, name: str, experiment: str, change: dict) -> Path:
    """A copy of the micro experiments with ``change`` merged into one experiment (same
    partition keys, so the imported graph accepts it); get_experiment re-reads it per stage."""
    raw = yaml.safe_load(MICRO.read_text())
    body = raw["experiments"][experiment]
    for section, values in change.items():
        body[section] = {**(body.get(section) or {}), **values} if isinstance(values, dict) else values
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _samples(store: LineageStore) -> list[tuple]:
    df = store.query("SELECT id, text, run_id FROM samples WHERE experiment = 'micro-b' ORDER BY id")
    return list(df.itertuples(index=False, name=None))


def _latest(store: LineageStore, asset: str) -> dict:
    return store.latest_lineage("micro-b", asset)


def _meta(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _check(result, name: str) -> bool:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}[name]


def test_failed_or_killed_rerun_keeps_old_rows_and_either_config_reruns(tmp_path, monkeypatch):
    sampled = ["sampled_rationales"]
    assert _materialize(tmp_path, "micro-b", selection=["task_dataset", "base_model", "sft_checkpoint", *sampled]).success
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    old_rows, old_lineage = _samples(store), _latest(store, "sampled_rationales")
    assert len(old_rows) == 24 * 2
    changed = _experiments(tmp_path, "changed.yaml", "micro-b", {"sampling": {"max_new_tokens": 24}})

    # 1. changed config, the model cannot load (its weights are gone): the re-run fails ...
    weights = tmp_path / "checkpoints" / "micro-b" / "sft_checkpoint" / "model.safetensors"
    aside = tmp_path / "weights-aside"
    shutil.move(weights, aside)
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(changed))
    assert not _materialize(tmp_path, "micro-b", selection=sampled, raise_on_error=False).success
    # ... and the old rows and lineage are intact
    assert _samples(store) == old_rows
    assert _latest(store, "sampled_rationales")["run_id"] == old_lineage["run_id"]
    shutil.move(aside, weights)

    # 2. changed config, the run is killed after one of its two chunks
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); import test_pipeline as t;"
        f"t._materialize(Path({str(tmp_path)!r}), 'micro-b', selection=['sampled_rationales'])"
    )
    env = {**os.environ, "SX_TEST_CRASH_AFTER_CHUNKS": "1", "SX_EXPERIMENTS_FILE": str(changed)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _samples(store) == old_rows  # the killed run's chunk waits apart
    assert _count(store, "samples_staged", "micro-b") == 12 * 2
    [killed_run] = store.query("SELECT DISTINCT run_id FROM samples_staged WHERE experiment = 'micro-b'")["run_id"]
    assert _latest(store, "sampled_rationales")["run_id"] == old_lineage["run_id"]

    # 3. config reverted: unchanged, skipped, and the blocking check passes on the old rows
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(MICRO))
    result = _materialize(tmp_path, "micro-b", selection=sampled)
    assert _meta(result, "sampled_rationales")["skipped_unchanged"] is True
    assert _check(result, "n_samples_per_question") is True
    assert _samples(store) == old_rows

    # 4. the changed config again: resumes from its committed chunk, then replaces the old rows
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(changed))
    result = _materialize(tmp_path, "micro-b", selection=sampled)
    meta = _meta(result, "sampled_rationales")
    assert meta["skipped_unchanged"] is False and meta["chunks_resumed"] == 1 and meta["chunks"] == 2
    assert _check(result, "n_samples_per_question") is True
    new_rows = _samples(store)
    assert len(new_rows) == 24 * 2 and len({r[0] for r in new_rows}) == 48
    # the killed run's chunk and this run's: every old row replaced, none mixed in
    assert {r[2] for r in new_rows} == {killed_run, result.run_id}
    assert _count(store, "samples_staged", "micro-b") == 0
    assert store.query("SELECT * FROM chunks WHERE experiment = 'micro-b'").empty
    assert _latest(store, "sampled_rationales")["status"] == "done"


def _gsm8k_row(question: str, gold: str) -> str:
    return json.dumps({"question": question, "answer": f"She adds 2 and 3.\n#### {gold}"}) + "\n"


def _gsm8k_experiment(tmp: Path, monkeypatch, text: str | bytes) -> Path:
    data = tmp / "tasks.jsonl"
    data.write_bytes(text if isinstance(text, bytes) else text.encode())
    # gsm8k-shared is a partition of the imported graph; here it reads the file above
    exps = _experiments(tmp, "exps.yaml", "gsm8k-shared", {"task": {"train_path": str(data), "test_path": str(data), "n_dev": 0}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(exps))
    return data


def test_task_file_edited_in_place_reruns_task_dataset(tmp_path, monkeypatch):
    data = _gsm8k_experiment(tmp_path, monkeypatch, _gsm8k_row("What is 2 + 3?", "5") + _gsm8k_row("What is 1 + 1?", "2"))
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    assert _materialize(tmp_path, "gsm8k-shared", selection=["task_dataset"]).success
    again = _materialize(tmp_path, "gsm8k-shared", selection=["task_dataset"])
    assert _meta(again, "task_dataset")["skipped_unchanged"] is True  # same bytes: the cheap re-run
    data.write_text(data.read_text().replace("#### 5", "#### 777"))
    result = _materialize(tmp_path, "gsm8k-shared", selection=["task_dataset"])
    assert _meta(result, "task_dataset")["skipped_unchanged"] is False
    answers = store.query("SELECT DISTINCT answer FROM questions WHERE experiment = 'gsm8k-shared' ORDER BY 1")["answer"]
    assert answers.tolist() == ["2", "777"]


def test_checkpoint_hash_covers_every_file(tmp_path):
    def checkpoint(name: str, files: dict[str, bytes]) -> Path:
        d = tmp_path / name
        for rel, content in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(content)
        return d

    base = {"config.json": b"{}", "pytorch_model.bin": b"weights-a", "modeling_x.py": b"code-a"}
    a = checkpoint("a", base)
    assert checkpoint_hash(a) == checkpoint_hash(checkpoint("a2", base))
    assert checkpoint_hash(a) != checkpoint_hash(checkpoint("bin", {**base, "pytorch_model.bin": b"weights-b"}))
    assert checkpoint_hash(a) != checkpoint_hash(checkpoint("py", {**base, "modeling_x.py": b"code-b"}))
    assert checkpoint_hash(a) != checkpoint_hash(checkpoint("pt", {**base, "extra/optimizer.pt": b"x"}))
    # download bookkeeping of huggingface-cli (.cache/) is not the model
    assert checkpoint_hash(a) == checkpoint_hash(checkpoint("cache", {**base, ".cache/huggingface/x.metadata": b"etag"}))


def test_missing_checkpoint_names_the_asset_to_rematerialize(tmp_path):
    assert _materialize(tmp_path, "micro-b", selection=["task_dataset", "base_model"]).success
    shutil.rmtree(tmp_path / "checkpoints" / "micro-b" / "base_model")
    with pytest.raises(dg.Failure, match=r"checkpoint missing: .*base_model.*re-materialize base_model") as e:
        _materialize(tmp_path, "micro-b", selection=["sft_checkpoint"])
    assert e.value.allow_retries is False
    # the asset itself is not "unchanged" any more: it is built again
    result = _materialize(tmp_path, "micro-b", selection=["base_model"])
    assert _meta(result, "base_model")["skipped_unchanged"] is False
    assert (tmp_path / "checkpoints" / "micro-b" / "base_model" / "model.safetensors").exists()


def test_empty_task_file_fails_before_anything_is_written(tmp_path, monkeypatch):
    _gsm8k_experiment(tmp_path, monkeypatch, "\n")
    with pytest.raises(dg.Failure, match=r"tasks\.jsonl: no rows \(empty file\)"):
        _materialize(tmp_path, "gsm8k-shared", selection=["task_dataset"])
    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    assert _count(store, "questions", "gsm8k-shared") == 0 and _count(store, "lineage", "gsm8k-shared") == 0


def test_bad_task_files_name_file_and_line(tmp_path):
    ok = _gsm8k_row("What is 2 + 3?", "5")
    bad_bytes = tmp_path / "latin1.jsonl"
    bad_bytes.write_bytes(ok.encode() + '{"question": "Caf\xe9?", "answer": "#### 5"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.jsonl:2: not UTF-8 \(byte 0xe9"):
        load_jsonl(bad_bytes, "gsm8k", "train")
    long_q = tmp_path / "long.jsonl"
    long_q.write_text(ok + _gsm8k_row("What is 2 + 3?" + " 1" * MAX_FIELD_CHARS, "5"))
    with pytest.raises(DatasetError, match=r"long\.jsonl:2: question of [\d,]+ characters, over the limit of 20,000"):
        load_jsonl(long_q, "gsm8k", "train")
    long_r = tmp_path / "long_math.jsonl"
    long_r.write_text(json.dumps({"problem": "x?", "solution": "y" * (MAX_FIELD_CHARS + 1) + " The answer is: 1"}) + "\n")
    with pytest.raises(DatasetError, match=r"long_math\.jsonl:1: solution of"):
        load_jsonl(long_r, "math", "train")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DatasetError, match=r"empty\.jsonl: no rows"):
        load_jsonl(empty, "gsm8k", "train")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + ok.encode())
    assert load_jsonl(bom, "gsm8k", "train")[0].answer == "5"
