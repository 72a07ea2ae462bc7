"""eval_scores: greedy test (or, while choosing hyperparameters, dev) accuracy of base (few-shot), SFT, RFT, outcome DPO and
Self-Explore (paper §4, Table 1), stored per question and as a table. On the synthetic task,
whose every step is checkable, also how many rationales have every step right: the paper
grades the final answer only, and a wrong step can still land on the right one."""

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import bar_plot
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step
from sx_dagster.core.answers import grade
from sx_dagster.core.prompts import few_shot_prompt, question_prompt
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error
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

    exp, task, split = stage.exp, stage.exp.task.name, stage.exp.eval.split
    # eval.split: dev while hyperparameters are chosen, test (read once per configuration) for the report.
    test = lineage.query(
        "SELECT id, question, answer, meta FROM questions WHERE experiment = ? AND split = ? ORDER BY id", [stage.name, split]
    )
    problems = {q: SyntheticProblem.from_json(m) for q, m in zip(test["id"], test["meta"], strict=True)} if task == "synthetic" else {}
    shots = lineage.query(
        "SELECT question, rationale FROM questions WHERE experiment = ? AND split = 'train' AND rationale IS NOT NULL ORDER BY id LIMIT ?",
        [stage.name, exp.model.few_shot],
    )
    shot_pairs = list(zip(shots["question"], shots["rationale"], strict=True))
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=exp.eval.max_new_tokens, seed=exp.seed, task=task)
    preds, scores, tokens, seconds = [], [], 0, 0.0
    for label, asset in MODELS.items():
        path, ckpt = stage.input_checkpoint(asset)
        prompts = [few_shot_prompt(q, shot_pairs) if asset == "base_model" else question_prompt(q) for q in test["question"]]
        backend = generator.load(path, accelerator, exp.eval.batch_size, trust_remote_code=exp.model.trust_remote_code)
        outs = backend.generate(prompts, params)
        tokens, seconds = tokens + backend.stats.generated_tokens, seconds + backend.stats.seconds
        backend.close()
        n_ok, n_steps = 0, 0
        for qid, gold, gens in zip(test["id"], test["answer"], outs, strict=True):
            pred, ok = grade(gens[0].text, gold, task)
            steps_right = true_first_error(problems[qid], gens[0].text) is None if problems else None
            n_ok += ok
            n_steps += bool(steps_right)
            preds.append(
                dict(
                    model=label,
                    question_id=qid,
                    text=gens[0].text,
                    pred=pred,
                    gold=gold,
                    correct=ok,
                    steps_right=steps_right,
                    n_tokens=gens[0].n_tokens,
                    split=split,
                    checkpoint_id=ckpt,
                    parent_id=qid,
                )
            )
        acc = n_ok / len(test) if len(test) else 0.0
        scores.append(
            dict(
                model=label,
                n=len(test),
                n_correct=n_ok,
                accuracy=acc,
                n_steps_right=n_steps if problems else None,
                split=split,
                checkpoint_id=ckpt,
                parent_id=ckpt,
            )
        )
        stage.log(f"{label}: {acc:.1%} ({n_ok}/{len(test)} {split})" + (f", every step right {n_steps}" if problems else ""))
    writes = {"eval_predictions": pd.DataFrame(preds), "eval_scores": pd.DataFrame(scores)}
    for df in writes.values():
        df["experiment"], df["run_id"] = stage.name, stage.run_id
    stage.replace(writes)
    table = format_scores(writes["eval_scores"])
    meta = {f"accuracy/{s['model']}": round(s["accuracy"], 4) for s in scores}
    if problems:
        meta.update({f"steps_right/{s['model']}": round(s["n_steps_right"] / max(len(test), 1), 4) for s in scores})
    meta["n_test" if split == "test" else "n_dev"] = len(test)
    meta["split"] = split
    meta["generated_tokens_per_s"] = round(tokens / seconds, 1) if seconds else None
    meta["table"] = dg.MetadataValue.md(table)
    meta["chart"] = bar_plot([s["model"] for s in scores], [100 * s["accuracy"] for s in scores], f"{split} accuracy", "%", ymax=100)
    return stage.done(meta)


def format_scores(df: pd.DataFrame) -> str:
    """The eval table as markdown (also what the main command prints); with a column of
    rationales whose every step is right where the task can check steps (synthetic)."""
    steps = "n_steps_right" in df and df["n_steps_right"].notna().all()
    lines = ["| model | accuracy | correct / n |", "|---|---:|---:|"]
    if steps:
        lines = [lines[0] + " every step right |", lines[1] + "---:|"]
    for r in df.itertuples():
        cell = f" {100 * r.n_steps_right / max(r.n, 1):.2f} |" if steps else ""
        lines.append(f"| {r.model} | {100 * r.accuracy:.2f} | {r.n_correct} / {r.n} |{cell}")
    return "\n".join(lines)
