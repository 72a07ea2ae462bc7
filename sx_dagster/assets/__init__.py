"""One module per stage of the paper; each asset body reads like the step it implements."""

from sx_dagster.assets._rounds import PER_ROUND, round_assets
from sx_dagster.assets.data import task_dataset
from sx_dagster.assets.dpo import outcome_dpo_model, trained_model
from sx_dagster.assets.evaluate import eval_scores
from sx_dagster.assets.explore import first_pit_labels
from sx_dagster.assets.models import base_model, rft_checkpoint, sft_checkpoint
from sx_dagster.assets.pairs import dpo_pairs, outcome_pairs
from sx_dagster.assets.prm import best_of_n, process_reward_model
from sx_dagster.assets.sampling import sampled_rationales
from sx_dagster.assets.step_labels import step_labels

ALL_ASSETS = [
    task_dataset,
    base_model,
    sft_checkpoint,
    sampled_rationales,
    rft_checkpoint,
    outcome_pairs,
    first_pit_labels,
    dpo_pairs,
    trained_model,
    outcome_dpo_model,
    eval_scores,
    step_labels,
    process_reward_model,
    best_of_n,
]


def rounds_graph(rounds: int) -> list:
    """The whole graph with rounds 2..``rounds`` of the per-round assets (issue 26)."""
    return ALL_ASSETS + round_assets([a for a in ALL_ASSETS if a.key.to_user_string() in PER_ROUND], rounds)
