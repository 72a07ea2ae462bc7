"""Process rewards from first pits (issue 25): process_reward_model (a PRM trained on
``step_labels``, sx_dagster.assets.step_labels) and best_of_n (N test samples reranked by it).

Exploration already knows, for each rejected rationale, which step prefixes still reach the gold
answer and which step is the first pit; a correct sample's steps are all good. The labels cost no
generation; the PRM costs one training stage; best-of-N one sampling pass and one scoring pass.
"""

import json
from collections import Counter

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import bar_plot
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step, train_metadata
from sx_dagster.assets._training import run_training
from sx_dagster.assets.evaluate import MODELS
from sx_dagster.assets.step_labels import synthetic_problems
from sx_dagster.config import ExperimentConfig, TrainSection
from sx_dagster.core.answers import grade
from sx_dagster.core.best_of_n import AGGREGATES, Candidate, auc, best_of_n_correct, rationale_score
from sx_dagster.core.prompts import question_prompt
from sx_dagster.core.step_labels import (
    first_low_step,
)
from sx_dagster.core.steps import split_steps, step_separator
from sx_dagster.core.synthetic import true_first_error
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore

CODE = code_version("prm")
PARTITIONS = experiment_partitions()
GROUP = "dpo_and_eval"  # a trained model and its evaluation, beside the DPO models and eval_scores
# What PRM training reads: the trainer's fields, the backbone and the low-score threshold of its
# own evaluation; not best-of-N's fields, so a change there re-runs best_of_n alone.
PRM_TRAIN_READS = (
    *(f"prm.{f}" for f in TrainSection.model_fields),
    "prm.backbone",
    "prm.correct_per_question",
    "prm.threshold",
    "lora",
    "distributed",
    "seed",
    "task.name",
    "model.trust_remote_code",
)
RULES = {  # best_of_n_scores.rule -> the column of the report
    "greedy": "greedy",
    "first_sample": "one sample",
    "majority": "majority@N",
    "prm_min": "PRM min@N",
    "prm_last": "PRM last@N",
    "pass_at_n": "pass@N",
}


def _stepwise_rows(lineage: LineageStore, experiment: str, split: str) -> pd.DataFrame:
    df = lineage.query(
        "SELECT e.id, e.sample_id, e.question_id, e.prompt, e.completions, e.labels, e.true_first_error, l.kind FROM prm_examples e "
        "JOIN (SELECT DISTINCT sample_id, kind FROM step_labels WHERE experiment = ?) l ON l.sample_id = e.sample_id "
        "WHERE e.experiment = ? AND e.split = ? ORDER BY e.id",
        [experiment, experiment, split],
    )
    df["completions"] = df["completions"].map(json.loads)
    df["labels"] = df["labels"].map(json.loads)
    return df


def prm_training_rows(lineage: LineageStore, exp: ExperimentConfig) -> tuple[list[dict], str]:
    """The rows the PRM trains on (the train split: every rejected rationale and, with
    ``prm.correct_per_question``, the first n correct ones of each question), each with its
    step separator, and the asset of its backbone. Also what ``benchmarks/screens/prm_screen.py`` trains on."""
    cfg = exp.prm
    train = _stepwise_rows(lineage, exp.name, "train")
    if cfg.correct_per_question is not None:
        keep = (train["kind"] == "rejected") | (train.groupby(["question_id", "kind"]).cumcount() < cfg.correct_per_question)
        train = train[keep]
    sep = step_separator(exp.task.name)
    rows = [dict(prompt=r.prompt, completions=r.completions, labels=r.labels, separator=sep) for r in train.itertuples()]
    return rows, "sft_checkpoint" if cfg.backbone == "sft" else "rft_checkpoint"


@dg.asset(
    partitions_def=PARTITIONS,
    group_name=GROUP,
    kinds={"pytorch", "huggingface"},
    code_version=CODE,
    **gpu_step(),
    deps=["step_labels", "sft_checkpoint", "rft_checkpoint"],
    description="A process reward model: a token-classification head on the SFT (or explorer) backbone, trained on "
    "step_labels to score each step boundary; evaluated on the held-out questions' labelled steps.",
)
@step
def process_reward_model(
    context: dg.AssetExecutionContext, lineage: LineageStore, checkpoints: CheckpointStore, accelerator: AcceleratorResource
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "process_reward_model", CODE, reads=PRM_TRAIN_READS)
    if (skip := stage.unchanged(checkpoints)) is not None:
        return skip
    cfg = stage.exp.prm
    rows, backbone = prm_training_rows(lineage, stage.exp)
    if not rows:
        raise dg.Failure(f"[{stage.name}] step_labels has no training rationales: nothing to train the PRM on", allow_retries=False)
    start_path, start_id = stage.input_checkpoint(backbone)
    stage.log(f"PRM on {len(rows)} labelled rationales from {backbone} (lr {cfg.learning_rate}, {cfg.epochs} epochs)")
    fit = lambda tmp: run_training(stage, accelerator, "prm", start_path, rows, cfg, tmp)  # noqa: E731
    path, digest, result = stage.write_checkpoint(checkpoints, "process_reward_model", fit, start_id)
    meta = {"rationales": len(rows), "backbone": backbone, **train_metadata(result, "PRM loss")}
    if cut := int(result.extra.get("prm_rows_cut", 0)):
        stage.context.log.warning(
            f"[{stage.name}] {cut} of {len(rows)} labelled rationales are longer than prm.max_length {cfg.max_length} tokens: "
            "their later steps were left out of PRM training; raise prm.max_length"
        )
    meta["rationales_cut"] = cut
    held = held_out_metrics(lineage, stage.exp, path, accelerator.precision())
    meta.update(held)
    if held["held_out_rationales"]:
        stage.log(
            f"PRM held out: step accuracy {held['held_out_step_accuracy']} (good {held['held_out_good_step_accuracy']}, "
            f"bad {held['held_out_bad_step_accuracy']} of {held['held_out_bad_steps']})"
            + (f"; first low step = true first error {held['held_out_first_low_equals_true_first_error']:.1%}"
               if "held_out_first_low_equals_true_first_error" in held else "")
        )  # fmt: skip
    return stage.done(meta, path, digest)


def held_out_metrics(lineage: LineageStore, exp: ExperimentConfig, prm_path: str, precision) -> dict:
    """Step-level accuracy on the held-out questions' labels (good and bad steps apart: bad ones are
    rare) and, on the synthetic task, how often the PRM's first low-scored step of a held-out
    rejected rationale (all its steps scored) is its true first error. Also what
    ``benchmarks/screens/prm_screen.py`` reads, so a screen and the asset measure alike."""
    from sx_dagster.ml.prm import score_steps

    cfg, task = exp.prm, exp.task.name
    held = _stepwise_rows(lineage, exp.name, "held_out")
    if held.empty:
        return {"held_out_rationales": 0}
    sep = step_separator(task)
    score = lambda items: score_steps(prm_path, items, precision, sep, exp.eval.batch_size, cfg.max_length, exp.model.trust_remote_code)  # noqa: E731
    scores = score([(r.prompt, r.completions) for r in held.itertuples()])
    hits = {True: [0, 0], False: [0, 0]}  # label -> [right, total]
    for labels, s in zip(held["labels"], scores, strict=True):
        for lab, p in zip(labels, s, strict=False):
            hits[bool(lab)][0] += (p >= cfg.threshold) == bool(lab)
            hits[bool(lab)][1] += 1
    right, total = hits[True][0] + hits[False][0], hits[True][1] + hits[False][1]
    meta = {
        "held_out_rationales": len(held),
        "held_out_step_accuracy": round(right / total, 4) if total else None,
        "held_out_good_step_accuracy": round(hits[True][0] / hits[True][1], 4) if hits[True][1] else None,
        "held_out_bad_step_accuracy": round(hits[False][0] / hits[False][1], 4) if hits[False][1] else None,
        "held_out_bad_steps": hits[False][1],
    }
    wrong = held[(held["kind"] == "rejected") & held["true_first_error"].notna()]
    if len(wrong):
        texts = lineage.query(
            "SELECT s.id, s.text FROM samples s WHERE s.experiment = ? AND s.id IN (SELECT unnest(?::VARCHAR[]))",
            [exp.name, wrong["sample_id"].tolist()],
        ).set_index("id")["text"]
        full = score([(r.prompt, split_steps(texts[r.sample_id], task)) for r in wrong.itertuples()])
        same = sum(first_low_step(s, cfg.threshold) == int(t) for s, t in zip(full, wrong["true_first_error"], strict=True))
        meta["held_out_wrong_rationales"] = len(wrong)
        meta["held_out_first_low_equals_true_first_error"] = round(same / len(wrong), 4)
    return meta


@dg.asset(
    partitions_def=PARTITIONS,
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    code_version=CODE,
    **gpu_step(),
    deps=["task_dataset", "process_reward_model", "eval_scores", *sorted({MODELS[m] for m in ("SFT", "Self-Explore")})],
    description="Best-of-N: N samples per test question from the SFT and Self-Explore models, picked by the PRM (lowest "
    "step score; last step score) against majority vote over the same N, pass@N and greedy.",
)
@step
def best_of_n(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    accelerator: AcceleratorResource,
    generator: GeneratorResource,
) -> dg.MaterializeResult:
    reads = ("prm.best_of_n", "prm.temperature", "prm.models", "prm.threshold", "prm.max_length", "eval", "seed", "task.name",
             "model.trust_remote_code")  # fmt: skip
    stage = Stage(context, lineage, "best_of_n", CODE, reads=reads)
    if (skip := stage.unchanged()) is not None:
        return skip
    from sx_dagster.ml.generation import SamplingParams
    from sx_dagster.ml.prm import score_steps

    exp, cfg, task, split = stage.exp, stage.exp.prm, stage.exp.task.name, stage.exp.eval.split
    test = lineage.query("SELECT id, question, answer FROM questions WHERE experiment = ? AND split = ? ORDER BY id", [stage.name, split])
    problems = synthetic_problems(lineage, stage.name) if task == "synthetic" else {}
    prm_path, prm_id = stage.input_checkpoint("process_reward_model")
    params = SamplingParams(n=cfg.best_of_n, temperature=cfg.temperature, max_new_tokens=exp.eval.max_new_tokens, seed=exp.seed, task=task)
    prompts = [question_prompt(q) for q in test["question"]]
    rows = []
    for label in cfg.models:
        path, ckpt = stage.input_checkpoint(MODELS[label])
        backend = generator.load(path, accelerator, exp.eval.batch_size, trust_remote_code=exp.model.trust_remote_code)
        outs = backend.generate(prompts, params)
        backend.close()
        for qid, gold, gens in zip(test["id"], test["answer"], outs, strict=True):
            for i, g in enumerate(gens):
                pred, ok = grade(g.text, gold, task)
                tfe = true_first_error(problems[qid], g.text) if qid in problems else None
                rows.append(
                    dict(model=label, question_id=qid, idx=i, text=g.text, pred=pred, correct=ok, true_first_error=tfe, checkpoint_id=ckpt)
                )
        stage.log(f"{label}: {cfg.best_of_n} samples for each of {len(test)} {split} questions")
    df = pd.DataFrame(rows)
    qtext = dict(zip(test["id"], prompts, strict=True))
    items = [(qtext[r.question_id], split_steps(r.text, task)) for r in df.itertuples()]
    scores = score_steps(prm_path, items, accelerator.precision(), step_separator(task), exp.eval.batch_size, cfg.max_length,
                         exp.model.trust_remote_code)  # fmt: skip
    df["step_scores"] = [json.dumps(s) for s in scores]
    df["min_score"] = [rationale_score(s, "min") for s in scores]
    df["last_score"] = [rationale_score(s, "last") for s in scores]
    df["first_low_step"] = [first_low_step(s, cfg.threshold) for s in scores]
    df["prm_checkpoint_id"], df["parent_id"], df["split"] = prm_id, df["question_id"], split
    greedy = lineage.query("SELECT model, n_correct FROM eval_scores WHERE experiment = ? AND split = ?", [stage.name, split])
    greedy = dict(zip(greedy["model"], greedy["n_correct"], strict=True))
    score_rows, meta = [], {}
    for label, g in df.groupby("model", sort=False):
        picks = Counter()
        for _, q in g.groupby("question_id", sort=False):
            cands = [Candidate(p, bool(c), tuple(json.loads(s))) for p, c, s in zip(q["pred"], q["correct"], q["step_scores"], strict=True)]
            picks.update(k for k, ok in best_of_n_correct(cands).items() if ok)
        n = g["question_id"].nunique()
        counts = {"greedy": greedy.get(label), **{k: picks.get(k, 0) for k in RULES if k != "greedy"}}
        for rule, n_ok in counts.items():
            if n_ok is None:
                continue
            score_rows.append(
                dict(model=label, rule=rule, n=n, n_correct=int(n_ok), accuracy=n_ok / n if n else 0.0, best_of=cfg.best_of_n)
            )
            meta[f"accuracy/{label}/{rule}"] = round(n_ok / n, 4) if n else None
    scores_df = pd.DataFrame(score_rows)
    for d in (df, scores_df):
        d["experiment"], d["run_id"], d["split"] = stage.name, stage.run_id, split
    scores_df["parent_id"] = prm_id
    for how in AGGREGATES:  # does the PRM's score separate right from wrong samples at all (0.5: no)
        a = auc(df.loc[df["correct"], f"{how}_score"].tolist(), df.loc[~df["correct"], f"{how}_score"].tolist())
        meta[f"prm_auc_{how}"] = round(a, 4) if a is not None else None
    wrong = df[~df["correct"] & df["true_first_error"].notna()]
    if len(wrong):
        same = (wrong["first_low_step"] == wrong["true_first_error"]).mean()
        meta["wrong_rationales_scored"] = len(wrong)
        meta["prm_first_low_equals_true_first_error"] = round(float(same), 4)
        # read with it: how often a right rationale gets a low step too (a PRM that flags every
        # step 1 "finds" every first error at step 1)
        meta["prm_low_step_on_right_rationales"] = round(float(df.loc[df["correct"], "first_low_step"].notna().mean()), 4)
        stage.log(
            f"PRM: first low step = true first error on {same:.1%} of {len(wrong)} wrong sampled rationales; "
            f"a low step on {meta['prm_low_step_on_right_rationales']:.1%} of the right ones; AUC (min) {meta['prm_auc_min']}"
        )
    stage.replace({"best_of_n_samples": df, "best_of_n_scores": scores_df})
    table = format_best_of_n(scores_df)
    stage.log("\n" + table)
    meta.update({"best_of": cfg.best_of_n, "split": split, "table": dg.MetadataValue.md(table)})
    bars = [(f"{r.model} {RULES[r.rule]}", 100 * r.accuracy) for r in scores_df.itertuples()]
    meta["chart"] = bar_plot([b[0] for b in bars], [b[1] for b in bars], f"{split} accuracy, best of {cfg.best_of_n}", "%", ymax=100)
    return stage.done(meta)


def format_best_of_n(df: pd.DataFrame) -> str:
    """The best-of-N table as markdown: one row per model, one column per selection rule."""
    if df.empty:
        return "(no best-of-N rows)"
    n_best = int(df["best_of"].iloc[0])
    rules = [r for r in RULES if r in set(df["rule"])]
    head = [RULES[r].replace("@N", f"@{n_best}") for r in rules]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(rules)]
    for model, g in df.groupby("model", sort=False):
        acc = dict(zip(g["rule"], g["accuracy"], strict=True))
        lines.append(f"| {model} | " + " | ".join(f"{100 * acc[r]:.2f}" if r in acc else "-" for r in rules) + " |")
    return "\n".join(lines)
