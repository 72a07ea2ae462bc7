"""A change re-runs only what it touches (issue 11 part 1): each stage fingerprints the config
fields it reads, its Dagster deps and the code of the modules it imports."""

from pathlib import Path

from test_pipeline import ASSET_NAMES, _materialize
from test_recovery import _experiments

from sx_dagster.assets import ALL_ASSETS
from sx_dagster.assets._stage import code_version, imported_modules

PARTITION = "micro"  # micro-b finds no D_pair to train on
DPO = {"trained_model", "outcome_dpo_model", "eval_scores", "best_of_n"}
PRM = {"step_labels", "process_reward_model", "best_of_n"}
EXPLORE = {"first_pit_labels", "dpo_pairs", "trained_model", "eval_scores", *PRM}


def _ran(tmp: Path) -> set[str]:
    """The assets that ran (not skipped as unchanged) when the whole graph is materialized."""
    result = _materialize(tmp, PARTITION)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(meta) == set(ASSET_NAMES)
    return {a for a, m in meta.items() if not m["skipped_unchanged"].value}


def test_a_config_change_reruns_only_the_stages_that_read_it(tmp_path, monkeypatch):
    assert _ran(tmp_path) == set(ASSET_NAMES)
    assert _ran(tmp_path) == set()  # nothing changed: everything skipped
    # A DPO hyperparameter reaches the two DPO models, and through them the evaluation only.
    lr = _experiments(tmp_path, "lr.yaml", PARTITION, {"dpo": {"learning_rate": 2.0e-5}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(lr))
    assert _ran(tmp_path) == DPO
    # k reaches exploration, D_g-pair, Self-Explore and the evaluation; D_pair and its DPO stay.
    k = _experiments(tmp_path, "k.yaml", PARTITION, {"dpo": {"learning_rate": 2.0e-5}, "explore": {"k": 3}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(k))
    assert _ran(tmp_path) == EXPLORE
    # A PRM hyperparameter re-trains the PRM and re-ranks best-of-N; SFT through DPO and eval stay.
    prm = _experiments(tmp_path, "prm.yaml", PARTITION, {"dpo": {"learning_rate": 2.0e-5}, "explore": {"k": 3}, "prm": {"epochs": 1}})
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(prm))
    assert _ran(tmp_path) == {"process_reward_model", "best_of_n"}
    # N of best-of-N re-runs best-of-N alone
    n = _experiments(
        tmp_path, "n.yaml", PARTITION, {"dpo": {"learning_rate": 2.0e-5}, "explore": {"k": 3}, "prm": {"epochs": 1, "best_of_n": 2}}
    )
    monkeypatch.setenv("SX_EXPERIMENTS_FILE", str(n))
    assert _ran(tmp_path) == {"best_of_n"}


def _versions(changed: dict[str, bytes] | None = None) -> dict[str, str]:
    modules = {a.key.to_user_string(): a.op.compute_fn.decorated_fn.__module__.rpartition(".")[2] for a in ALL_ASSETS}
    return {a: code_version(m, changed=changed) for a, m in modules.items()}


def test_code_versions_follow_the_imports():
    before = _versions()
    # Dagster's code version of each asset is the one its fingerprint uses.
    assert {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in ALL_ASSETS} == before
    vllm = "sx_dagster.ml.vllm_backend"
    after = _versions({vllm: b"# edited\n"})
    # the generation stages run vLLM; training, data and pairs do not
    assert {a for a in before if before[a] != after[a]} == {
        "sampled_rationales",
        "first_pit_labels",
        "eval_scores",
        "best_of_n",
        "process_reward_model",  # best_of_n's module
    }
    # the Pipes training job is not something sampling, exploration or evaluation run
    job = _versions({"sx_dagster.ml.train_job": b"# edited\n"})
    assert {a for a in before if before[a] != job[a]} == {
        "base_model",
        "sft_checkpoint",
        "rft_checkpoint",
        "trained_model",
        "outcome_dpo_model",
        "process_reward_model",
        "best_of_n",  # one module with the PRM (assets/prm.py): code versions are per module
    }
    # the PRM trainer is the PRM's and best-of-N's alone: training.train reaches it by name
    prm = _versions({"sx_dagster.ml.prm": b"# edited\n"})
    assert {a for a in before if before[a] != prm[a]} == {"process_reward_model", "best_of_n"}
    # a change to a method module reaches what imports it, not the rest
    gp = _versions({"sx_dagster.core.gpairs": b"# edited\n"})
    assert {a for a in before if before[a] != gp[a]} == {"outcome_pairs", "dpo_pairs"}
    # the SQL a stage reads its rows through is part of its code (per module: pairs.py holds both pair assets)
    q = _versions({"sx_dagster.resources.queries": b"# edited\n"})
    assert {a for a in before if before[a] != q[a]} == {"first_pit_labels", "outcome_pairs", "dpo_pairs"}
    pq = _versions({"sx_dagster.resources.pit_queries": b"# edited\n"})
    assert {a for a in before if before[a] != pq[a]} == {"outcome_pairs", "dpo_pairs"}
    assert "sx_dagster.ml.vllm_backend" not in imported_modules("sx_dagster.assets.models")
