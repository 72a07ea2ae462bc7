"""trained_model (Self-Explore: DPO on D_g-pair) and outcome_dpo_model (the baseline: the
same DPO on D_pair). Both start from the RFT model with the RFT model as reference
(paper §3.3)."""

import dagster as dg

from sx_dagster.assets._rounds import schema
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step, train_metadata
from sx_dagster.assets._training import run_training
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, CheckpointStore, LineageStore

CODE = code_version("dpo")
DPO_READS = ("dpo", "lora", "distributed", "seed", "model.trust_remote_code")  # the config fields DPO training reads
PARTITIONS = experiment_partitions()


def training_pairs(lineage, stage: Stage, pairs_table: str):
    """The pairs DPO trains on: the round's own, or under ``rounds.pairs: accumulate`` those of
    rounds 1..r (each round's rows in its schema), in round then pair order."""
    rounds = range(1, stage.round + 1) if stage.exp.rounds.pairs == "accumulate" else [stage.round]
    union = " UNION ALL ".join(
        f"SELECT id, prompt, chosen, rejected, {r} AS round FROM {schema(r)}.{pairs_table} WHERE experiment = ?" for r in rounds
    )
    return lineage.query(f"SELECT prompt, chosen, rejected, round FROM ({union}) ORDER BY round, id", [stage.name] * len(rounds))


def _dpo(stage: Stage, lineage, checkpoints, accelerator, pairs_table: str, name: str) -> dg.MaterializeResult:
    df = training_pairs(lineage, stage, pairs_table)
    if df.empty:
        raise dg.Failure(f"[{stage.name}] {pairs_table} is empty: nothing to train {stage.asset} on", allow_retries=False)
    # The start and reference: the RFT model in round 1; in round r >= 2 what rounds.train_from names
    start_path, start_id = stage.input_checkpoint("rft_checkpoint")
    cfg = stage.exp.dpo
    rounds = f" of round(s) {', '.join(map(str, sorted(set(df['round']))))}" if stage.round > 1 else ""
    stage.log(
        f"DPO on {len(df)} {pairs_table}{rounds} from {start_id} (beta {cfg.beta}, lr {cfg.learning_rate}, "
        f"{cfg.epochs} epochs, loss {cfg.loss_type})"
    )
    records = df.drop(columns="round").to_dict("records")
    train = lambda tmp: run_training(stage, accelerator, "dpo", start_path, records, cfg, tmp, ref_path=start_path)  # noqa: E731
    path, digest, result = stage.write_checkpoint(checkpoints, name, train, start_id)
    meta = {"pairs": len(df), "start": start_id, **train_metadata(result, "DPO loss")}
    return stage.done(meta, path, digest)


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
