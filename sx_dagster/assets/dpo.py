"""trained_model (Self-Explore: DPO on D_g-pair) and outcome_dpo_model (the baseline: the
same DPO on D_pair). Both start from the RFT model with the RFT model as reference
(paper §3.3)."""

import dagster as dg

from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step, train_metadata
from sx_dagster.assets._training import run_training
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, CheckpointStore, LineageStore

CODE = code_version("dpo")
DPO_READS = ("dpo", "lora", "distributed", "seed", "model.trust_remote_code")  # the config fields DPO training reads
PARTITIONS = experiment_partitions()


def _dpo(stage: Stage, lineage, checkpoints, accelerator, pairs_table: str, name: str) -> dg.MaterializeResult:
    df = lineage.query(f"SELECT prompt, chosen, rejected FROM {pairs_table} WHERE experiment = ? ORDER BY id", [stage.name])
    if df.empty:
        raise dg.Failure(f"[{stage.name}] {pairs_table} is empty: nothing to train {name} on", allow_retries=False)
    rft_path, rft_id = stage.input_checkpoint("rft_checkpoint")
    cfg = stage.exp.dpo
    stage.log(f"DPO on {len(df)} {pairs_table} (beta {cfg.beta}, lr {cfg.learning_rate}, {cfg.epochs} epochs, loss {cfg.loss_type})")
    records = df.to_dict("records")
    train = lambda tmp: run_training(stage, accelerator, "dpo", rft_path, records, cfg, tmp, ref_path=rft_path)  # noqa: E731
    path, digest, result = stage.write_checkpoint(checkpoints, name, train, rft_id)
    return stage.done({"pairs": len(df), **train_metadata(result, "DPO loss")}, path, digest)


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="dpo_and_eval",
    kinds={"pytorch", "trl"},
    code_version=CODE,
    **gpu_step(),
    deps=["dpo_pairs", "rft_checkpoint"],
    description="Self-Explore: DPO on the step-level pairs D_g-pair, from and against the RFT model.",
)
@step
def trained_model(
    context: dg.AssetExecutionContext, lineage: LineageStore, checkpoints: CheckpointStore, accelerator: AcceleratorResource
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "trained_model", CODE, reads=DPO_READS)
    return stage.unchanged(checkpoints) or _dpo(stage, lineage, checkpoints, accelerator, "dpo_pairs", "trained_model")


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="dpo_and_eval",
    kinds={"pytorch", "trl"},
    code_version=CODE,
    **gpu_step(),
    deps=["outcome_pairs", "rft_checkpoint"],
    description="Baseline: the same DPO on the outcome-level pairs D_pair.",
)
@step
def outcome_dpo_model(
    context: dg.AssetExecutionContext, lineage: LineageStore, checkpoints: CheckpointStore, accelerator: AcceleratorResource
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "outcome_dpo_model", CODE, reads=DPO_READS)
    return stage.unchanged(checkpoints) or _dpo(stage, lineage, checkpoints, accelerator, "outcome_pairs", "outcome_dpo_model")
