"""first_pit_labels: self-exploration (paper §3.2). The explorer (the RFT model) writes k
completions from each step prefix of every rejected rationale in D_pair; the first step
from which none reaches the gold answer is the first pit. Committed in chunks."""

from collections import Counter
from dataclasses import asdict, fields

import dagster as dg
import pandas as pd

from sx_dagster.assets._chunks import run_chunks
from sx_dagster.assets._plots import EXAMPLE_COLUMNS, bar_plot, examples_table
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step
from sx_dagster.core.explore import (
    Exploration,
    FirstPit,
    RejectedRationale,
    exploration_seed,
    explore,
    pit_agreement,
    pool_steps,
    sample_pool,
)
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, GeneratorResource, LineageStore, queries

CODE = code_version("explore")


@dg.asset(
    partitions_def=experiment_partitions(),
    group_name="exploration",
    kinds={"pytorch", "duckdb"},
    code_version=CODE,
    **gpu_step(),
    deps=["outcome_pairs", "rft_checkpoint"],
    description="Self-exploration: the first pit of every rejected rationale in D_pair, found by the RFT explorer "
    "(k completions per step prefix).",
)
@step
def first_pit_labels(
    context: dg.AssetExecutionContext,
    lineage: LineageStore,
    accelerator: AcceleratorResource,
    generator: GeneratorResource,
) -> dg.MaterializeResult:
    stage = Stage(context, lineage, "first_pit_labels", CODE, reads=("explore", "seed", "task.name", "model.trust_remote_code"))
    if (skip := stage.unchanged()) is not None:
        return skip
    exp = stage.exp
    rejected = queries.rejected_rationales(lineage, stage.name)
    size = exp.explore.chunk_pairs
    chunks = [rejected[i : i + size] for i in range(0, len(rejected), size)]
    explorer_path, explorer_id = stage.input_checkpoint("rft_checkpoint")
    pool = (
        pool_steps(sample_pool(queries.correct_samples(lineage, stage.name), exp.task.name))
        if exp.explore.strategy == "pool-reuse"
        else None
    )
    seed = exploration_seed(exp.seed)

    def explore_chunk(backend, c: int, chunk: list[RejectedRationale]) -> dict[str, pd.DataFrame]:
        from sx_dagster.ml.explorer import explorer_generate

        explorations, pits = explore(chunk, explorer_generate(backend, exp.explore, seed, exp.task.name), exp.explore, exp.task.name, pool)
        x, p = _frame(explorations, Exploration), _frame(pits, FirstPit)
        x["parent_id"], x["checkpoint_id"], x["seed"] = x["sample_id"], explorer_id, seed
        p["parent_id"], p["checkpoint_id"] = p["pair_id"], explorer_id
        found = int(p["pit"].notna().sum()) if len(p) else 0
        stage.log(f"chunk {c + 1}/{len(chunks)}: {len(p)} rationales explored, {found} pits, {len(x)} completions")
        return {"explorations": x, "pits": p}

    load = lambda: generator.load(explorer_path, accelerator, exp.gen_batch_size, stage.log, exp.model.trust_remote_code)  # noqa: E731
    gen_stats, resumed = run_chunks(stage, lineage, ["explorations", "pits"], chunks, load, explore_chunk)
    pits = lineage.query("SELECT * FROM pits WHERE experiment = ?", [stage.name])
    meta = pit_metadata(pits, len(chunks), resumed)
    if gen_stats is not None:
        meta["generated_tokens_per_s"] = round(gen_stats.tokens_per_second(), 1)
    done = lineage.query(
        "SELECT x.pair_id, x.text FROM explorations x JOIN pits t ON t.experiment = x.experiment AND t.pair_id = x.pair_id "
        "AND x.step = t.pit - 1 WHERE x.experiment = ? AND x.correct ORDER BY x.pair_id, x.idx",
        [stage.name],
    )
    meta["examples"] = examples_table(
        pit_examples(rejected, pits, dict(done.drop_duplicates("pair_id").values.tolist()), exp.task.name), EXAMPLE_COLUMNS
    )
    return stage.done(meta)


def pit_examples(rejected: list[RejectedRationale], pits: pd.DataFrame, chosen: dict[str, str], task: str, limit: int = 5) -> list[dict]:
    """A few pits as a researcher eyeballs them: the step before the pit, the pit step, a correct
    continuation explored from the prefix before it (``chosen``: pair id -> text; what D_g-pair
    will take as chosen), and the synthetic task's true first error."""
    from sx_dagster.core.steps import split_steps

    found = pits[pits["pit"].notna()].set_index("pair_id")
    rows = []
    for r in [r for r in rejected if r.pair_id in found.index][:limit]:
        pit, t = int(found.at[r.pair_id, "pit"]), found.at[r.pair_id, "true_first_error"]
        steps = split_steps(r.text, task)
        rows.append(
            dict(
                pair_id=r.pair_id,
                prefix_last_step=steps[pit - 2] if pit > 1 else "(question)",
                pit_step=steps[pit - 1] if pit <= len(steps) else "",
                chosen=chosen.get(r.pair_id, "(the correct sample)" if pit == 1 else "(none explored: proven by a correct sample)"),
                pit=pit,
                true_first_error=None if pd.isna(t) else int(t),
            )
        )
    return rows


def _frame(rows: list, cls: type) -> pd.DataFrame:
    return pd.DataFrame(map(asdict, rows), columns=[f.name for f in fields(cls)])


def pit_metadata(pits: pd.DataFrame, n_chunks: int, n_resumed: int) -> dict:
    found = pits[pits["pit"].notna()]
    hist = Counter(int(p) for p in found["pit"])
    meta = {
        "rejected_explored": len(pits),
        "pits_found": len(found),
        "no_pit_dropped": int(pits["pit"].isna().sum()),
        "completions": int(pits["completions"].sum()),
        "generated_tokens": int(pits["generated_tokens"].sum()),
        "strategy": ", ".join(sorted(set(pits["strategy"]))),
        "prompt_tokens": int(pits["prompt_tokens"].sum()),
        "prefill_tokens": int(pits["prefill_tokens"].sum()),
        "steps_proven_by_pool": int(pits["proven"].sum()),
        "pit_at_last_step": int((found["pit"] == found["n_steps"]).sum()),  # the answer line, when there is one
        "chunks": n_chunks,
        "chunks_resumed": n_resumed,
        "pit_histogram": bar_plot(sorted(hist), [hist[k] for k in sorted(hist)], "first pit", "rationales", integer=True) if hist else None,
    }
    # Synthetic task only: how often the explorer's pit is the true first error.
    pit = [None if pd.isna(x) else int(x) for x in pits["pit"]]
    tfe = [None if pd.isna(x) else int(x) for x in pits["true_first_error"]]
    agree = pit_agreement(zip(pit, tfe, strict=True))
    if agree.rationales:
        meta["pit_equals_true_first_error"] = round(agree.equal, 4)
        meta["pit_earlier_than_true"] = round(agree.earlier, 4)
        meta["pit_later_than_true"] = round(agree.later, 4)
    return meta
