"""base_model, sft_checkpoint, rft_checkpoint: the supervised stages (paper §3.1).

SFT and RFT both fine-tune the *base* model; the RFT model is the explorer, the DPO
reference and the DPO starting point.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step, train_metadata
from sx_dagster.assets._training import run_training
from sx_dagster.core.prompts import question_prompt
from sx_dagster.core.rft import select_rft
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, CheckpointStore, LineageStore
from sx_dagster.resources.checkpoints import checkpoint_hash

CODE = code_version("models")
PARTITIONS = experiment_partitions()


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="sft_and_rft",
    kinds={"pytorch", "huggingface"},
    code_version=CODE,
    deps=["task_dataset"],
    description="The base model: a Hugging Face id or local path, or 'tiny' (a Llama-style model and BPE built here).",
)
@step
def base_model(context: dg.AssetExecutionContext, lineage: LineageStore, checkpoints: CheckpointStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "base_model", CODE, reads=("model.name", "model.tiny", "seed", "model.trust_remote_code"))
    if (skip := stage.unchanged(checkpoints)) is not None:
        return skip
    from sx_dagster.ml.models import ModelLoadError, check_remote_code, load_tokenizer

    m = stage.exp.model
    if m.name != "tiny":
        try:
            # Before any load: a model that ships code is refused here, at the first step, unless trusted.
            code = check_remote_code(m.name, m.trust_remote_code)
            tok = load_tokenizer(m.name, trust_remote_code=m.trust_remote_code)  # cheap: fails early, naming the model
        except ModelLoadError as e:
            raise dg.Failure(f"[{stage.name}] {e}", allow_retries=False) from None
        if code:
            stage.context.log.warning(f"[{stage.name}] model.trust_remote_code is true: {m.name} runs its own code ({'; '.join(code)})")
        local = Path(m.name).is_dir()
        digest = checkpoint_hash(m.name) if local else None
        stage.record_checkpoint("base_model", m.name, digest, None)
        meta = {"model": m.name, "vocab_size": len(tok), "local": local, "runs_model_code": bool(code)}
        return stage.done(meta, m.name, digest)

    from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer

    texts = lineage.query(
        "SELECT question || chr(10) || coalesce(rationale, '') AS t FROM questions WHERE experiment = ? AND split = 'train'",
        [stage.name],
    )["t"].tolist()
    tokenizer = train_tokenizer(texts, m.tiny.vocab_size)
    model = build_tiny_model(m.tiny, tokenizer, stage.exp.seed)
    path, digest, _ = stage.write_checkpoint(checkpoints, "base_model", lambda tmp: save_tiny(model, tokenizer, tmp), None)
    n_params = sum(p.numel() for p in model.parameters())
    stage.log(f"tiny model: {n_params:,} parameters, vocabulary {len(tokenizer)}")
    return stage.done({"model": "tiny", "parameters": n_params, "vocab_size": len(tokenizer)}, path, digest)


def _train(stage: Stage, checkpoints, accelerator, name: str, rows: list[dict], section, extra: dict | None = None) -> dg.MaterializeResult:
    if not rows:  # it would fail the same way on every retry
        raise dg.Failure(f"[{stage.name}] {name}: no training rows (for RFT: no sample was kept)", allow_retries=False)
    base_path, base_id = stage.input_checkpoint("base_model")
    stage.log(f"fine-tuning {base_path} on {len(rows)} rows ({section.epochs} epochs, lr {section.learning_rate})")
    train = lambda tmp: run_training(stage, accelerator, "sft", base_path, rows, section, tmp)  # noqa: E731
    path, digest, result = stage.write_checkpoint(checkpoints, name, train, base_id)
    return stage.done({"train_rows": len(rows), **train_metadata(result, "training loss"), **(extra or {})}, path, digest)


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="sft_and_rft",
    kinds={"pytorch", "trl"},
    code_version=CODE,
    **gpu_step(),
    deps=["base_model", "task_dataset"],
    description="SFT: the base model fine-tuned on the gold training rationales (TRL SFTTrainer).",
)
@step
def sft_checkpoint(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    checkpoints: CheckpointStore,
    accelerator: AcceleratorResource,
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "sft_checkpoint", CODE, reads=("sft", "lora", "distributed", "seed", "model.trust_remote_code"))
    if (skip := stage.unchanged(checkpoints)) is not None:
        return skip
    q = lineage.query(
        "SELECT question, rationale FROM questions WHERE experiment = ? AND split = 'train' AND rationale IS NOT NULL ORDER BY id",
        [stage.name],
    )
    rows = [{"prompt": question_prompt(a), "completion": b} for a, b in zip(q["question"], q["rationale"], strict=True)]
    return _train(stage, checkpoints, accelerator, "sft_checkpoint", rows, stage.exp.sft)


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="sft_and_rft",
    kinds={"pytorch", "trl"},
    code_version=CODE,
    **gpu_step(),
    deps=["base_model", "sampled_rationales", "task_dataset"],
    description="RFT: the base model fine-tuned on correct, de-duplicated samples (<= 8 per question). "
    "The explorer, DPO reference and DPO start.",
)
@step
def rft_checkpoint(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    checkpoints: CheckpointStore,
    accelerator: AcceleratorResource,
) -> dg.MaterializeResult:
    stage = Stage(
        context,
        lineage,
        "rft_checkpoint",
        CODE,
        reads=("rft", "lora", "distributed", "seed", "task.name", "model.trust_remote_code"),
    )
    if (skip := stage.unchanged(checkpoints)) is not None:
        return skip
    exp = stage.exp
    samples = lineage.query(
        "SELECT s.id, s.question_id, s.text, s.correct, q.question, q.rationale FROM samples s "
        "JOIN questions q ON q.experiment = s.experiment AND q.id = s.question_id "
        "WHERE s.experiment = ? ORDER BY s.question_id, s.idx",
        [stage.name],
    )
    records = []
    for qid, g in samples.groupby("question_id", sort=True):
        texts = g["text"].tolist()
        for i in select_rft(texts, g["correct"].tolist(), exp.task.name, exp.rft.max_per_question):
            records.append(
                dict(
                    id=f"{qid}/rft/{g['id'].iloc[i]}",
                    question_id=qid,
                    sample_id=g["id"].iloc[i],
                    source="sample",
                    prompt=question_prompt(g["question"].iloc[0]),
                    completion=texts[i],
                    parent_id=g["id"].iloc[i],
                )
            )
    n_selected = len(records)
    if exp.rft.include_gold:
        gold = lineage.query(
            "SELECT id, question, rationale FROM questions WHERE experiment = ? AND split = 'train' AND rationale IS NOT NULL",
            [stage.name],
        )
        for qid, qq, r in zip(gold["id"], gold["question"], gold["rationale"], strict=True):
            records.append(
                dict(
                    id=f"{qid}/rft/gold",
                    question_id=qid,
                    sample_id=None,
                    source="gold",
                    prompt=question_prompt(qq),
                    completion=r,
                    parent_id=qid,
                )
            )
    df = pd.DataFrame(records)
    df["experiment"], df["run_id"] = stage.name, stage.run_id
    stage.replace({"rft_data": df})  # written with the checkpoint's lineage row, once training succeeded
    n_q = df[df.source == "sample"]["question_id"].nunique() if len(df) else 0
    stage.log(f"RFT data: {n_selected} selected samples over {n_q} questions (+ gold: {exp.rft.include_gold})")
    rows = [{"prompt": p, "completion": c} for p, c in zip(df["prompt"], df["completion"], strict=True)]
    extra = {"rft_selected_samples": n_selected, "rft_questions_covered": int(n_q)}
    return _train(stage, checkpoints, accelerator, "rft_checkpoint", rows, exp.rft, extra)
