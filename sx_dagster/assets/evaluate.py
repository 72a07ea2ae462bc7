"""eval_scores: greedy test accuracy of base (few-shot), SFT, RFT, outcome DPO and
Self-Explore (paper §4, Table 1), stored per question and as a table."""

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import bar_plot
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step
from sx_dagster.core.answers import grade
from sx_dagster.core.prompts import few_shot_prompt, question_prompt
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, GeneratorResource, LineageStore

CODE = code_version("evaluate")
# Evaluated model -> the asset that made it; names as in the paper's tables.
MODELS = {
    "base (few-shot)": "base_model",
    "SFT": "sft_checkpoint",
    "RFT": "rft_checkpoint",
    "outcome DPO": "outcome_dpo_model",
    "Self-Explore": "trained_model",
}


@dg.asset(
    partitions_def=experiment_partitions(),
    group_name="dpo_and_eval",
    kinds={"pytorch", "duckdb"},
    code_version=CODE,
    **gpu_step(),
    deps=["task_dataset", *MODELS.values()],
    description="Greedy test accuracy of base (few-shot), SFT, RFT, outcome DPO and Self-Explore.",
)
@step
def eval_scores(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    accelerator: AcceleratorResource,
    generator: GeneratorResource,
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "eval_scores", CODE, reads=("eval", "model.few_shot", "seed", "task.name", "model.trust_remote_code"))
    if (skip := stage.unchanged()) is not None:
        return skip
    from sx_dagster.ml.generation import SamplingParams

    exp, task = stage.exp, stage.exp.task.name
    test = lineage.query("SELECT id, question, answer FROM questions WHERE experiment = ? AND split = 'test' ORDER BY id", [stage.name])
    shots = lineage.query(
        "SELECT question, rationale FROM questions WHERE experiment = ? AND split = 'train' AND rationale IS NOT NULL ORDER BY id LIMIT ?",
        [stage.name, exp.model.few_shot],
    )
    shot_pairs = list(zip(shots["question"], shots["rationale"], strict=True))
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=exp.eval.max_new_tokens, seed=exp.seed, task=task)
    preds, scores = [], []
    for label, asset in MODELS.items():
        path, ckpt = stage.input_checkpoint(asset)
        prompts = [few_shot_prompt(q, shot_pairs) if asset == "base_model" else question_prompt(q) for q in test["question"]]
        backend = generator.load(path, accelerator, exp.eval.batch_size, trust_remote_code=exp.model.trust_remote_code)
        outs = backend.generate(prompts, params)
        backend.close()
        n_ok = 0
        for qid, gold, gens in zip(test["id"], test["answer"], outs, strict=True):
            pred, ok = grade(gens[0].text, gold, task)
            n_ok += ok
            preds.append(
                dict(
                    model=label,
                    question_id=qid,
                    text=gens[0].text,
                    pred=pred,
                    gold=gold,
                    correct=ok,
                    checkpoint_id=ckpt,
                    parent_id=qid,
                )
            )
        acc = n_ok / len(test) if len(test) else 0.0
        scores.append(dict(model=label, n=len(test), n_correct=n_ok, accuracy=acc, checkpoint_id=ckpt, parent_id=ckpt))
        stage.log(f"{label}: {acc:.1%} ({n_ok}/{len(test)})")
    writes = {"eval_predictions": pd.DataFrame(preds), "eval_scores": pd.DataFrame(scores)}
    for df in writes.values():
        df["experiment"], df["run_id"] = stage.name, stage.run_id
    stage.replace(writes)
    table = format_scores(writes["eval_scores"])
    meta = {f"accuracy/{s['model']}": round(s["accuracy"], 4) for s in scores}
    meta["n_test"] = len(test)
    meta["table"] = dg.MetadataValue.md(table)
    meta["chart"] = bar_plot([s["model"] for s in scores], [100 * s["accuracy"] for s in scores], "test accuracy", "%", ymax=100)
    return stage.done(meta)


def format_scores(df: pd.DataFrame) -> str:
    """The eval table as markdown (also what the main command prints)."""
    lines = ["| model | accuracy | correct / n |", "|---|---:|---:|"]
    for r in df.itertuples():
        lines.append(f"| {r.model} | {100 * r.accuracy:.2f} | {r.n_correct} / {r.n} |")
    return "\n".join(lines)
