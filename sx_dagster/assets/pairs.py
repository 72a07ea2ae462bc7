"""outcome_pairs (D_pair, paper §3.1) and dpo_pairs (D_g-pair, paper §3.2, Eq. 3)."""

from collections import Counter

import dagster as dg
import pandas as pd

from sx_dagster.assets._plots import EXAMPLE_COLUMNS, bar_plot, examples_table
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions
from sx_dagster.core.explore import sample_pool
from sx_dagster.core.gpair_inputs import pit_records
from sx_dagster.core.gpairs import build_g_pairs
from sx_dagster.core.pairs import outcome_pairs as pair_outcomes
from sx_dagster.core.prompts import question_prompt
from sx_dagster.failures import step
from sx_dagster.resources import LineageStore, pit_queries, queries

CODE = code_version("pairs")
PARTITIONS = experiment_partitions()


def _pair_checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("non_empty", asset=asset, blocking=True, description="there is at least one pair to train on"),
        dg.AssetCheckSpec(
            "chosen_differs_from_rejected", asset=asset, blocking=True, description="no pair whose chosen text equals its rejected text"
        ),
        dg.AssetCheckSpec(
            "none_truncated",
            asset=asset,
            blocking=True,
            description="no pair is longer than dpo.max_length (TRL would cut it silently)",
        ),
    ]


def _with_lengths(df: pd.DataFrame, tokenizer_path: str, max_length: int, trust_remote_code: bool = False) -> pd.DataFrame:
    from sx_dagster.ml.models import load_tokenizer, token_counts

    tok = load_tokenizer(tokenizer_path, trust_remote_code=trust_remote_code)
    df["prompt_tokens"] = token_counts(tok, df["prompt"].tolist())
    df["chosen_tokens"] = token_counts(tok, df["chosen"].tolist())
    # As DPO sees it (ml/training.py): a multi-line rejected without its answer line, and no EOS;
    # the chosen gets EOS: +1.
    from sx_dagster.core.dpo_text import rejected_for_dpo

    df["rejected_tokens"] = token_counts(tok, [rejected_for_dpo(r) for r in df["rejected"]])
    df["truncated"] = df["prompt_tokens"] + pd.concat([df["chosen_tokens"] + 1, df["rejected_tokens"]], axis=1).max(axis=1) > max_length
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
    group_name="exploration",
    kinds={"duckdb"},
    code_version=CODE,
    deps=["rft_checkpoint", "sampled_rationales"],
    check_specs=_pair_checks("outcome_pairs"),
    description="D_pair: each RFT-kept correct sample paired with the farthest wrong sample of its question.",
)
@step
def outcome_pairs(context: dg.AssetExecutionContext, lineage: LineageStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "outcome_pairs", CODE, reads=("dpo.max_length", "task.name", "model.trust_remote_code"))
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
    df = _with_lengths(df, stage.input_checkpoint("rft_checkpoint")[0], exp.dpo.max_length, exp.model.trust_remote_code)
    df["experiment"], df["run_id"] = stage.name, stage.run_id
    stage.replace({"outcome_pairs": df})
    stage.log(f"D_pair: {len(df)} pairs over {df['question_id'].nunique()} questions")
    meta = {"pairs": len(df), "questions": int(df["question_id"].nunique()), "truncated": int(df["truncated"].sum())}
    return stage.done(meta, check_results=_check_results(df, exp.dpo.max_length))


@dg.asset(
    partitions_def=PARTITIONS,
    group_name="exploration",
    kinds={"duckdb"},
    code_version=CODE,
    deps=["first_pit_labels", "outcome_pairs", "rft_checkpoint"],
    check_specs=_pair_checks("dpo_pairs"),
    description="D_g-pair: step-level pairs. Prompt = question + steps before the first pit, rejected = the pit step, "
    "chosen = a correct exploration from the prefix (or the continuation of the correct sample that proved it, under "
    "pool-reuse; or the correct sample when the pit is step 1).",
)
@step
def dpo_pairs(context: dg.AssetExecutionContext, lineage: LineageStore) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "dpo_pairs", CODE, reads=("gpair", "dpo.max_length", "task.name", "model.trust_remote_code"))
    if (skip := stage.unchanged(checks=lambda: _stored_checks(lineage, stage, "dpo_pairs"))) is not None:
        return skip
    exp, task = stage.exp, stage.exp.task.name
    found = pit_queries.found_pits(lineage, stage.name)
    pool = sample_pool(queries.correct_samples(lineage, stage.name), task) if any(f.after_pool_proof for f in found) else None
    records = pit_records(found, task, pool)
    built = build_g_pairs(records, task, exp.gpair.chosen_excludes_rejected)
    gpairs = built.pairs
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
    df = _with_lengths(df, stage.input_checkpoint("rft_checkpoint")[0], exp.dpo.max_length, exp.model.trust_remote_code)
    df["experiment"], df["run_id"] = stage.name, stage.run_id
    stage.replace({"dpo_pairs": df})
    hist = Counter(int(p) for p in df["pit"])
    stage.log(f"D_g-pair: {len(df)} step-level pairs from {len(records)} pits")
    t = lineage.query("SELECT pair_id, true_first_error FROM pits WHERE experiment = ?", [stage.name])
    tfe = {k: None if pd.isna(v) else int(v) for k, v in zip(t["pair_id"], t["true_first_error"], strict=True)}
    examples = [
        dict(
            pair_id=r.pair_id,
            prefix_last_step=r.prompt.rstrip("\n").split("\n")[-1] if r.pit > 1 else "(question)",
            pit_step=r.rejected,
            chosen=r.chosen,
            pit=r.pit,
            true_first_error=tfe.get(r.pair_id),
        )
        for r in df.head(5).itertuples()
    ]
    meta = {
        "pairs": len(df),
        "pits": len(records),
        "pits_without_pair": len(records) - len(df),
        # why each pit without a pair has none (sx_dagster.core.gpairs): these sum to pits_without_pair
        **{f"no_pair/{reason}": n for reason, n in sorted(built.dropped.items())},
        "chosen_from_pool": int((df["chosen_source"] == "pool").sum()),
        "pit_at_step_1": int(hist.get(1, 0)),
        "truncated": int(df["truncated"].sum()),
        "examples": examples_table(examples, EXAMPLE_COLUMNS),
        "pair_pit_histogram": bar_plot(sorted(hist), [hist[k] for k in sorted(hist)], "pit step of pairs", "pairs", integer=True)
        if hist
        else None,
    }
    return stage.done(meta, check_results=_check_results(df, exp.dpo.max_length))
