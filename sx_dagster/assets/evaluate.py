"""eval_scores: greedy test (or, while choosing hyperparameters, dev) accuracy of base (few-shot), SFT, RFT, outcome DPO and
Self-Explore (paper §4, Table 1), stored per question and as a table. On the synthetic task,
whose every step is checkable, also how many rationales have every step right: the paper
grades the final answer only, and a wrong step can still land on the right one."""

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import bar_plot, lines_plot
from sx_dagster.assets._rounds import PER_ROUND, schema
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
    # Round r >= 2 grades its own models; few-shot and SFT are the same in every round (round 1 graded them).
    models = {k: a for k, a in MODELS.items() if stage.round == 1 or a in PER_ROUND}
    for label, asset in models.items():
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
    if stage.round > 1:
        report = rounds_report(lineage, stage.name, stage.round, current=writes["eval_scores"])
        meta["rounds_table"] = dg.MetadataValue.md(format_rounds(report))
        meta["rounds_chart"] = rounds_chart(report, split)
    return stage.done(meta)


ROUND_MODELS = ("RFT", "outcome DPO", "Self-Explore")  # the models each round trains


def rounds_report(lineage: LineageStore, experiment: str, upto: int, current: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per round 1..``upto`` that has rows: its sampler's sample accuracy, D_pair, the
    pits found, D_g-pair, and the accuracy of each model it trained (round ``upto``'s scores
    from ``current`` when given, before they are written)."""
    have = set(lineage.query("SELECT schema_name FROM information_schema.schemata")["schema_name"])
    rows = []
    for r in range(1, upto + 1):
        s = schema(r)
        if s not in have:
            break
        counts = lineage.query(
            f"SELECT (SELECT avg(correct::INT) FROM {s}.samples WHERE experiment = $1) AS sample_accuracy, "
            f"(SELECT count(*) FROM {s}.outcome_pairs WHERE experiment = $1) AS outcome_pairs, "
            f"(SELECT count(*) FROM {s}.pits WHERE experiment = $1 AND pit IS NOT NULL) AS pits, "
            f"(SELECT count(*) FROM {s}.dpo_pairs WHERE experiment = $1) AS g_pairs",
            [experiment],
        ).iloc[0]
        scores = lineage.query(f"SELECT * FROM {s}.eval_scores WHERE experiment = ?", [experiment])
        if current is not None and r == upto:
            scores = current
        if scores.empty:
            break
        acc = dict(zip(scores["model"], 100 * scores["accuracy"], strict=True))
        rows.append(
            dict(
                round=r,
                sample_accuracy=None if pd.isna(counts["sample_accuracy"]) else 100 * float(counts["sample_accuracy"]),
                outcome_pairs=int(counts["outcome_pairs"]),
                pits=int(counts["pits"]),
                g_pairs=int(counts["g_pairs"]),
                **{m: acc.get(m) for m in ("SFT", *ROUND_MODELS)},
                split=scores["split"].iloc[0],
            )
        )
    return pd.DataFrame(rows)


def format_rounds(df: pd.DataFrame) -> str:
    """Accuracy against round for the models every round trains, with its sampler's sample
    accuracy and the pair and pit counts the round trained on (SFT: round 1, shared by all)."""
    head = "| round | sample accuracy | D_pair | pits | D_g-pair | " + " | ".join(ROUND_MODELS) + " |"
    lines = [head, "|" + "---:|" * (5 + len(ROUND_MODELS))]
    fmt = lambda v: "" if v is None or pd.isna(v) else f"{v:.2f}"  # noqa: E731
    for r in df.to_dict("records"):
        cells = [str(r["round"]), fmt(r["sample_accuracy"]), str(r["outcome_pairs"]), str(r["pits"]), str(r["g_pairs"])]
        lines.append("| " + " | ".join(cells + [fmt(r[m]) for m in ROUND_MODELS]) + " |")
    if len(df) and df["SFT"].notna().any():
        lines.append(f"\nSFT (the round-1 sampler, shared by every round): {df['SFT'].dropna().iloc[0]:.2f}")
    return "\n".join(lines)


def rounds_chart(df: pd.DataFrame, split: str) -> dg.MetadataValue:
    return lines_plot(df["round"].tolist(), {m: df[m].tolist() for m in ROUND_MODELS}, f"{split} accuracy by round", "round", "%")


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
