"""A change re-runs only what it touches (issue 11 part 1): each stage fingerprints the config
fields it reads, its Dagster deps and the code of the modules it imports. The code half is here;
the config half runs on a copy of the micro graph that tests/test_pipeline.py builds
(``test_a_config_change_reruns_only_the_stages_that_read_it``), so the graph is trained once."""

from sx_dagster.assets import ALL_ASSETS
from sx_dagster.assets._stage import code_version, imported_modules


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
