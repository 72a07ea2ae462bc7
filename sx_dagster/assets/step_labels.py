"""step_labels (issue 25): the process labels that exploration already proves, at no extra
generation: steps before a rejected rationale's first pit good (a completion from there, or the
pool, reached the gold answer), the pit bad (k completions, none did), every step of a kept
correct sample good; exported as a Hugging Face `datasets` dataset in TRL's stepwise format."""

import json
from collections import Counter

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import examples_table
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions
from sx_dagster.core.prompts import question_prompt
from sx_dagster.core.step_labels import (
    Completion,
    StepLabel,
    agrees_with_truth,
    held_out,
    label_correct_sample,
    label_rejected,
    stepwise_example,
)
from sx_dagster.core.steps import split_steps
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error
from sx_dagster.failures import step
from sx_dagster.resources import CheckpointStore, LineageStore

CODE = code_version("step_labels")
GROUP = "exploration"  # exploration's labels, beside first_pit_labels and the pairs in the UI
LABEL_EXAMPLE_COLUMNS = (("sample_id", "sample"), ("step", "step"), ("text", "step text"), ("good", "good"), ("source", "proven by"))


def synthetic_problems(lineage: LineageStore, experiment: str) -> dict[str, SyntheticProblem]:
    q = lineage.query("SELECT id, meta FROM questions WHERE experiment = ? AND meta IS NOT NULL", [experiment])
    return {i: SyntheticProblem.from_json(m) for i, m in zip(q["id"], q["meta"], strict=True)}


def _labels(lineage: LineageStore, experiment: str, task: str) -> tuple[list[StepLabel], dict[str, dict]]:
    """Every label exploration proves, and per labelled sample its question, text, kind and the
    checkpoint that wrote its proof."""
    pits = lineage.query(
        "SELECT t.pair_id, t.sample_id, t.question_id, t.pit, coalesce(t.proven, 0) AS proven, t.k, t.checkpoint_id, "
        "p.rejected AS text FROM pits t JOIN outcome_pairs p ON p.experiment = t.experiment AND p.id = t.pair_id "
        "WHERE t.experiment = ? ORDER BY t.pair_id",
        [experiment],
    ).drop_duplicates("sample_id")  # a rejected rationale in several pairs is explored once per pair: label it once
    comps = lineage.query(
        "SELECT pair_id, id, step, correct FROM explorations WHERE experiment = ? ORDER BY pair_id, step, idx", [experiment]
    )
    by_pair = {
        k: [Completion(i, int(s), bool(c)) for i, s, c in zip(g["id"], g["step"], g["correct"], strict=True)]
        for k, g in comps.groupby("pair_id")
    }
    correct = lineage.query(
        "SELECT r.question_id, r.sample_id, r.completion AS text, s.checkpoint_id FROM rft_data r "
        "JOIN samples s ON s.experiment = r.experiment AND s.id = r.sample_id "
        "WHERE r.experiment = ? AND r.source = 'sample' ORDER BY r.sample_id",
        [experiment],
    )
    labels: list[StepLabel] = []
    samples: dict[str, dict] = {}
    for r in correct.itertuples():
        steps = split_steps(r.text, task)
        labels += label_correct_sample(r.sample_id, steps)
        samples[r.sample_id] = dict(question_id=r.question_id, text=r.text, kind="correct", pair_id=None, checkpoint_id=r.checkpoint_id)
    for r in pits.itertuples():
        steps = split_steps(r.text, task)
        pit = None if pd.isna(r.pit) else int(r.pit)
        labels += label_rejected(r.sample_id, steps, pit, int(r.proven), by_pair.get(r.pair_id, []), int(r.k))
        samples[r.sample_id] = dict(
            question_id=r.question_id, text=r.text, kind="rejected", pair_id=r.pair_id, checkpoint_id=r.checkpoint_id
        )
    return labels, samples


def _label_checks(df: pd.DataFrame, agreement: float | None) -> list[dg.AssetCheckResult]:
    out = [dg.AssetCheckResult(check_name="non_empty", passed=len(df) > 0, metadata={"labelled_steps": len(df)})]
    if agreement is not None:
        out.append(
            dg.AssetCheckResult(
                check_name="labels_agree_with_truth",
                passed=agreement >= 0.95,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"agreement": round(agreement, 4), "target": 0.95},
            )
        )
    return out


@dg.asset(
    partitions_def=experiment_partitions(),
    group_name=GROUP,
    kinds={"duckdb", "huggingface"},
    code_version=CODE,
    deps=["first_pit_labels", "outcome_pairs", "rft_checkpoint"],
    check_specs=[
        dg.AssetCheckSpec("non_empty", asset="step_labels", blocking=True, description="there is at least one labelled step"),
        dg.AssetCheckSpec(
            "labels_agree_with_truth",
            asset="step_labels",
            description="synthetic task: >= 95% of labelled rationales agree with the true first error (warns)",
        ),
    ],
    description="Process labels that exploration proves: steps before the first pit good, the pit bad, every step of a "
    "correct sample good (+ Math-Shepherd's soft label where all k were drawn); exported as a `datasets` dataset in TRL's "
    "stepwise format.",
)
@step
def step_labels(context: dg.AssetExecutionContext, lineage: LineageStore, checkpoints: CheckpointStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "step_labels", CODE, reads=("prm.held_out", "task.name"))

    def stored_checks() -> list[dg.AssetCheckResult]:
        n = lineage.query("SELECT count(*) AS n FROM step_labels WHERE experiment = ?", [stage.name])["n"].iloc[0]
        meta = json.loads((lineage.latest_lineage(stage.name, "step_labels") or {}).get("metadata") or "{}")
        return _label_checks(pd.DataFrame(index=range(int(n))), meta.get("labels_agree_with_true_first_error"))

    if (skip := stage.unchanged(checkpoints, checks=stored_checks)) is not None:
        return skip
    exp, task = stage.exp, stage.exp.task.name
    labels, samples = _labels(lineage, stage.name, task)
    questions = lineage.query("SELECT id, question FROM questions WHERE experiment = ?", [stage.name]).set_index("id")["question"]
    problems = synthetic_problems(lineage, stage.name) if task == "synthetic" else {}
    by_sample: dict[str, list[StepLabel]] = {}
    for lab in labels:
        by_sample.setdefault(lab.sample_id, []).append(lab)
    truth: dict[str, int | None] = {}
    if problems:
        truth = {s: true_first_error(problems[v["question_id"]], v["text"]) for s, v in samples.items() if v["question_id"] in problems}
    rows, examples = [], []
    for sid, labs in by_sample.items():
        s = samples[sid]
        split = "held_out" if held_out(s["question_id"], exp.prm.held_out) else "train"
        for lab in labs:
            rows.append(
                dict(
                    id=f"{sid}/s{lab.step}",
                    sample_id=sid,
                    question_id=s["question_id"],
                    pair_id=s["pair_id"],
                    kind=s["kind"],
                    step=lab.step,
                    text=lab.text,
                    good=lab.good,
                    source=lab.source,
                    soft=lab.soft,
                    evidence_ids=",".join(lab.evidence) or None,
                    true_first_error=truth.get(sid),
                    split=split,
                    checkpoint_id=s["checkpoint_id"],
                    parent_id=sid,
                )
            )
        ex = stepwise_example(question_prompt(questions[s["question_id"]]), labs)
        if ex is not None:
            examples.append(
                dict(
                    id=f"{sid}/prm",
                    sample_id=sid,
                    question_id=s["question_id"],
                    prompt=ex["prompt"],
                    completions=json.dumps(ex["completions"]),
                    labels=json.dumps(ex["labels"]),
                    split=split,
                    true_first_error=truth.get(sid),
                    parent_id=sid,
                )
            )
    cols = ["id", "sample_id", "question_id", "pair_id", "kind", "step", "text", "good", "source", "soft", "evidence_ids",
            "true_first_error", "split", "checkpoint_id", "parent_id"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    ex_cols = ["id", "sample_id", "question_id", "prompt", "completions", "labels", "split", "true_first_error", "parent_id"]
    ex_df = pd.DataFrame(examples, columns=ex_cols)
    for d in (df, ex_df):
        d["experiment"], d["run_id"] = stage.name, stage.run_id
    stage.replace({"step_labels": df, "prm_examples": ex_df})

    def export(tmp) -> int:
        from datasets import Dataset, DatasetDict, Features, List, Value, disable_progress_bars

        disable_progress_bars()  # one bar per split in the run log says nothing
        features = Features({"prompt": Value("string"), "completions": List(Value("string")), "labels": List(Value("bool"))})
        parts = {}
        for split in ("train", "held_out"):
            part = ex_df[ex_df["split"] == split]
            if part.empty:
                continue  # datasets cannot load back a split saved with no rows
            columns = {
                "prompt": part["prompt"].tolist(),
                "completions": [json.loads(c) for c in part["completions"]],
                "labels": [json.loads(c) for c in part["labels"]],
            }
            parts[split] = Dataset.from_dict(columns, features=features)
        DatasetDict(parts).save_to_disk(str(tmp))
        return sum(len(p) for p in parts.values())

    path, digest, n_rows = stage.write_checkpoint(checkpoints, "step_labels", export, None)
    agreement = None
    if truth:
        agree = [agrees_with_truth(by_sample[s], truth[s]) for s in by_sample if s in truth]
        agreement = sum(agree) / len(agree) if agree else None
    sources = Counter(df["source"])
    soft = df["soft"].dropna()
    meta = {
        "labelled_steps": len(df),
        "good_steps": int(df["good"].sum()),
        "bad_steps": int((~df["good"]).sum()),
        "good_share": round(float(df["good"].mean()), 4) if len(df) else None,
        "rationales_correct": int((ex_df["sample_id"].map(lambda s: samples[s]["kind"]) == "correct").sum()) if len(ex_df) else 0,
        "rationales_rejected": int((ex_df["sample_id"].map(lambda s: samples[s]["kind"]) == "rejected").sum()) if len(ex_df) else 0,
        "examples_train": int((ex_df["split"] == "train").sum()),
        "examples_held_out": int((ex_df["split"] == "held_out").sum()),
        "soft_labels": len(soft),
        "soft_label_mean": round(float(soft.mean()), 4) if len(soft) else None,
        **{f"proven_by/{k}": int(v) for k, v in sorted(sources.items())},
        "dataset_path": dg.MetadataValue.path(path),
        "dataset_rows": n_rows,
        "examples": examples_table(
            df[~df["good"]].head(3).to_dict("records") + df[df["good"]].head(2).to_dict("records"), LABEL_EXAMPLE_COLUMNS
        ),
    }
    if agreement is not None:
        meta["labels_agree_with_true_first_error"] = round(agreement, 4)
    stage.log(
        f"step labels: {len(df)} steps ({meta['good_steps']} good, {meta['bad_steps']} bad) over {len(ex_df)} rationales"
        + (f"; {agreement:.1%} agree with the true first error" if agreement is not None else "")
    )
    return stage.done(meta, path, digest, check_results=_label_checks(df, agreement))
