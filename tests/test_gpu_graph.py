"""benchmarks/gpu_graph.py, the prepared whole-graph GPU run, runs in CI on the CPU (so it cannot
rot before a GPU session uses it), here on an experiment graded on its dev split."""

import importlib.util
from pathlib import Path

from sx_dagster.resources import LineageStore

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_graph.py"


def test_gpu_graph_materializes_the_whole_graph_through_the_cli_and_reports_each_asset(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_graph", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = tmp_path / "runs.csv"
    argv = ["--device", "cpu", "--experiment", "micro-dev", "--experiments-file", str(ROOT / "tests" / "experiments_micro.yaml")]
    assert mod.main([*argv, "--out", str(tmp_path / "out"), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    for asset in ("sft_checkpoint", "sampled_rationales", "first_pit_labels", "trained_model", "eval_scores"):
        assert f"| {asset} | SUCCESS |" in out
    assert "| Self-Explore |" in out and "/ 16 |" in out  # the eval table, on the 16 dev questions
    assert len(results.read_text().splitlines()) > 10
    # eval.split: dev grades the held-out dev questions, which no stage trained or sampled on
    db = next((tmp_path / "out").glob("micro-dev-*/data/sx.duckdb"))
    store = LineageStore(database=str(db))
    scores = store.query("SELECT DISTINCT split, n FROM eval_scores WHERE experiment = 'micro-dev'")
    assert scores.to_dict("list") == {"split": ["dev"], "n": [16]}
    graded = set(store.query("SELECT question_id FROM eval_predictions WHERE experiment = 'micro-dev'")["question_id"])
    dev = set(store.query("SELECT id FROM questions WHERE experiment = 'micro-dev' AND split = 'dev'")["id"])
    sampled = set(store.query("SELECT question_id FROM samples WHERE experiment = 'micro-dev'")["question_id"])
    assert graded == dev and not dev & sampled
    tokens = store.query("SELECT n_tokens FROM eval_predictions WHERE experiment = 'micro-dev'")["n_tokens"]
    assert (tokens > 0).all()
