"""outcome_pairs (D_pair, paper §3.1) and dpo_pairs (D_g-pair, paper §3.2, Eq. 3)."""

from collections import Counter

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import bar_plot
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions
from sx_dagster.core.gpairs import Completion, PitRecord, build_g_pairs
from sx_dagster.core.pairs import outcome_pairs as pair_outcomes
from sx_dagster.core.prompts import question_prompt
from sx_dagster.core.steps import split_steps
from sx_dagster.resources import LineageStore

CODE = code_version("pairs")
PARTITIONS = experiment_partitions()


def _pair_checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("non_empty", asset=asset, blocking=True, description="there is at least one pair to train on"),
        dg.AssetCheckSpec("chosen_differs_from_rejected", asset=asset, blocking=True),
        dg.AssetCheckSpec(
            "none_truncated",
            asset=asset,
            blocking=True,
            description="no pair is longer than dpo.max_length (TRL would cut it silently)",
        ),
    ]


def _with_lengths(df: pd.DataFrame, tokenizer_path: str, max_length: int) -> pd.DataFrame:
    from sx_dagster.ml.models import load_tokenizer, token_counts

    tok = load_tokenizer(tokenizer_path)
    df["prompt_tokens"] = token_counts(tok, df["prompt"].tolist())
    df["chosen_tokens"] = token_counts(tok, df["chosen"].tolist())
    df["rejected_tokens"] = token_counts(tok, df["rejected"].tolist())
    # TRL appends EOS to chosen and rejected: +1.
    df["truncated"] = df["prompt_tokens"] + df[["chosen_tokens", "rejected_tokens"]].max(axis=1) + 1 > max_length
    return df


def _check_results(df: pd.DataFrame, max_length: int) -> list[dg.AssetCheckResult]:
    same = int((df["chosen"].str.strip() == df["rejected"].str.strip()).sum()) if len(df) else 0
    cut = int(df["truncated"].sum()) if len(df) else 0
    return [
        dg.AssetCheckResult(check_name="non_empty", passed=len(df) > 0, metadata={"pairs": len(df)}),
        dg.AssetCheckResult(check_name="chosen_differs_from_rejected", passed=same == 0, metadata={"identical": same}),
        dg.AssetCheckResult(check_name="none_truncated", passed=cut == 0, metadata={"truncated": cut, "max_length": max_length}),
    ]


def _stored_checks(lineage: LineageStore, stage: Stage, table: str) -> list[dg.AssetCheckResult]:
    df = lineage.query(f"SELECT chosen, rejected, truncated FROM {table} WHERE experiment = ?", [stage.name])
    return _check_results(df, stage.exp.dpo.max_length)


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="pairs",
    kinds={"duckdb"},
    code_version=CODE,
    deps=["rft_checkpoint", "sampled_rationales"],
    check_specs=_pair_checks("outcome_pairs"),
    description="D_pair: each RFT-kept correct sample paired with the farthest wrong sample of its question.",
)
def outcome_pairs(context: dg.AssetExecutionContext, lineage: LineageStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "outcome_pairs", CODE, sections=("dpo",), upstream=("sampled_rationales", "rft_checkpoint"))
    if (skip := stage.unchanged(checks=lambda: _stored_checks(lineage, stage, "outcome_pairs"))) is not None:
        return skip
    exp = stage.exp
    kept = lineage.query(
        "SELECT question_id, sample_id, completion AS text FROM rft_data WHERE experiment = ? AND source = 'sample' "
        "ORDER BY question_id, sample_id",
        [stage.name],
    )
    wrong = lineage.query(
        "SELECT question_id, id AS sample_id, text FROM samples WHERE experiment = ? AND NOT correct ORDER BY question_id, idx",
        [stage.name],
    )
    questions = lineage.query("SELECT id, question FROM questions WHERE experiment = ?", [stage.name]).set_index("id")["question"]
    wrong_by_q = {q: g for q, g in wrong.groupby("question_id")}
    rows = []
    for qid, good in kept.groupby("question_id", sort=True):
        bad = wrong_by_q.get(qid)
        if bad is None:
            continue
        for n, (i, j) in enumerate(pair_outcomes(good["text"].tolist(), bad["text"].tolist(), exp.task.name)):
            rows.append(
                dict(
                    id=f"{qid}/op{n}",
                    question_id=qid,
                    chosen_sample_id=good["sample_id"].iloc[i],
                    rejected_sample_id=bad["sample_id"].iloc[j],
                    prompt=question_prompt(questions[qid]),
                    chosen=good["text"].iloc[i],
                    rejected=bad["text"].iloc[j],
                    parent_id=bad["sample_id"].iloc[j],
                )
            )
    cols = ["id", "question_id", "chosen_sample_id", "rejected_sample_id", "prompt", "chosen", "rejected", "parent_id"]
    df = pd.DataFrame(rows, columns=cols)
    df = _with_lengths(df, stage.input_checkpoint("rft_checkpoint")[0], exp.dpo.max_length)
    df["experiment"], df["run_id"] = stage.name, stage.run_id
    lineage.replace_partition(stage.name, {"outcome_pairs": df})
    stage.log(f"D_pair: {len(df)} pairs over {df['question_id'].nunique()} questions")
    meta = {"pairs": len(df), "questions": int(df["question_id"].nunique()), "truncated": int(df["truncated"].sum())}
    return stage.done(meta, check_results=_check_results(df, exp.dpo.max_length))


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="pairs",
    kinds={"duckdb"},
    code_version=CODE,
    deps=["first_pit_labels", "outcome_pairs", "rft_checkpoint"],
    check_specs=_pair_checks("dpo_pairs"),
    description="D_g-pair: step-level pairs. Prompt = question + steps before the first pit, rejected = the pit step, "
    "chosen = a correct exploration from the prefix (or the correct sample when the pit is step 1).",
)
def dpo_pairs(context: dg.AssetExecutionContext, lineage: LineageStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "dpo_pairs", CODE, sections=("dpo",), upstream=("first_pit_labels", "outcome_pairs", "rft_checkpoint"))
    if (skip := stage.unchanged(checks=lambda: _stored_checks(lineage, stage, "dpo_pairs"))) is not None:
        return skip
    exp, task = stage.exp, stage.exp.task.name
    pits = lineage.query(
        "SELECT t.pair_id, t.pit, p.question_id, p.chosen_sample_id, p.chosen, p.rejected, q.question "
        "FROM pits t JOIN outcome_pairs p ON p.experiment = t.experiment AND p.id = t.pair_id "
        "JOIN questions q ON q.experiment = t.experiment AND q.id = p.question_id "
        "WHERE t.experiment = ? AND t.pit IS NOT NULL ORDER BY t.pair_id",
        [stage.name],
    )
    before = lineage.query(
        "SELECT x.pair_id, x.id, x.text, x.correct FROM explorations x JOIN pits t "
        "ON t.experiment = x.experiment AND t.pair_id = x.pair_id AND x.step = t.pit - 1 "
        "WHERE x.experiment = ? ORDER BY x.pair_id, x.idx",
        [stage.name],
    )
    comps = {
        k: tuple(Completion(i, t, bool(c)) for i, t, c in zip(g["id"], g["text"], g["correct"], strict=True))
        for k, g in before.groupby("pair_id")
    }
    records = [
        PitRecord(
            r.question_id,
            r.question,
            r.pair_id,
            r.chosen_sample_id,
            r.chosen,
            tuple(split_steps(r.rejected, task)),
            int(r.pit),
            comps.get(r.pair_id, ()),
        )
        for r in pits.itertuples()
    ]
    gpairs = build_g_pairs(records, task)
    df = pd.DataFrame(
        [dict(id=f"{g.pair_id}/g", **g.__dict__, parent_id=g.pair_id) for g in gpairs],
        columns=[
            "id",
            "question_id",
            "pair_id",
            "pit",
            "prompt",
            "chosen",
            "rejected",
            "chosen_source",
            "chosen_id",
            "parent_id",
        ],
    )
    df = _with_lengths(df, stage.input_checkpoint("rft_checkpoint")[0], exp.dpo.max_length)
    df["experiment"], df["run_id"] = stage.name, stage.run_id
    lineage.replace_partition(stage.name, {"dpo_pairs": df})
    hist = Counter(int(p) for p in df["pit"])
    stage.log(f"D_g-pair: {len(df)} step-level pairs from {len(records)} pits")
    meta = {
        "pairs": len(df),
        "pits_available": len(records),
        "dropped_no_unused_completion": len(records) - len(df),
        "pit_at_step_1": int(hist.get(1, 0)),
        "truncated": int(df["truncated"].sum()),
        "pair_pit_histogram": bar_plot(sorted(hist), [hist[k] for k in sorted(hist)], "pit step of pairs", "pairs") if hist else None,
    }
    return stage.done(meta, check_results=_check_results(df, exp.dpo.max_length))
