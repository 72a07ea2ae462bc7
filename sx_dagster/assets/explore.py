"""first_pit_labels: self-exploration (paper §3.2). The explorer (the RFT model) writes k
completions from each step prefix of every rejected rationale in D_pair; the first step
from which none reaches the gold answer is the first pit. Committed in chunks."""

from collections import Counter, defaultdict

import dagster as dg
import pandas as pd

from sx_dagster.assets._chunks import run_chunks
from sx_dagster.assets._plots import bar_plot
from sx_dagster.assets._stage import Stage, code_version, experiment_partitions, gpu_step
from sx_dagster.core.answers import extract_answer, is_correct
from sx_dagster.core.pits import ExplorationPlan, explorable_steps, pool_proven
from sx_dagster.core.prompts import prefix_prompt
from sx_dagster.core.steps import split_steps
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error
from sx_dagster.failures import step
from sx_dagster.resources import AcceleratorResource, GeneratorResource, LineageStore

CODE = code_version("explore")


def correct_samples(lineage: LineageStore, experiment: str, task: str) -> dict[str, list[tuple[str, list[str]]]]:
    """(id, steps) of every correct sampled rationale, by question: pool-reuse's free proofs,
    and the chosen continuations of the prefixes they proved (dpo_pairs)."""
    rows = lineage.query("SELECT id, question_id, text FROM samples WHERE experiment = ? AND correct ORDER BY id", [experiment])
    pool: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for sid, q, text in zip(rows["id"], rows["question_id"], rows["text"], strict=True):
        pool[q].append((sid, split_steps(text, task)))
    return dict(pool)


def correct_sample_pool(lineage: LineageStore, experiment: str, task: str) -> dict[str, list[list[str]]]:
    """The steps of every correct sampled rationale, by question."""
    return {q: [steps for _, steps in v] for q, v in correct_samples(lineage, experiment, task).items()}


def explore_chunk(
    backend, rows: pd.DataFrame, exp, seed: int, pool: dict[str, list[list[str]]] | None = None
) -> tuple[list[dict], list[dict]]:
    """Run the first-pit search for a chunk of rejected rationales, batched across them.

    ``pool`` (question id -> steps of its correct samples) is used by ``pool-reuse`` only.
    Returns (exploration rows, pit rows) without the bookkeeping columns.
    """
    from sx_dagster.ml.generation import SamplingParams

    task, cfg = exp.task.name, exp.explore
    if cfg.strategy == "pool-reuse" and pool is None:
        raise ValueError("strategy 'pool-reuse' needs the pool of correct sampled rationales")
    items = []
    for r in rows.itertuples():
        steps = split_steps(r.rejected, task)
        n = explorable_steps(steps, cfg.max_steps)  # the answer line included, as in the reference
        proven = min(n, pool_proven(steps, pool.get(r.question_id, []))) if cfg.strategy == "pool-reuse" else 0
        plan = ExplorationPlan(n, cfg.k, cfg.strategy, cfg.batch, proven=proven)
        items.append((r, steps, plan, {"gen": 0, "prompt": 0, "prefill": 0}))
    explorations: list[dict] = []
    while True:
        requests = [(item, req) for item in items for req in item[2].requests()]
        if not requests:
            break
        by_n: dict[int, list] = defaultdict(list)
        for item, req in requests:
            by_n[req.n].append((item, req))
        for n, group in sorted(by_n.items()):
            prompts = [prefix_prompt(item[0].question, item[1], req.step, task) for item, req in group]
            params = SamplingParams(n, cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed, task)
            # Sample j of a prefix is the same draw whichever round asks for it, so early-stop
            # sees exactly linear's first completions and finds linear's pit.
            drawn = [len(item[2].outcomes.get(req.step, [])) for item, req in group]
            for (item, req), gens in zip(group, backend.generate(prompts, params, drawn), strict=True):
                r, _, plan, cost = item
                start = len(plan.outcomes.get(req.step, []))
                outcomes = []
                for j, g in enumerate(gens):
                    # Graded on the completion alone, as the reference does: from a prefix that
                    # ends with the answer line, only a completion that restates the gold answer
                    # counts, so that prefix is a pit unless the explorer does so.
                    pred = extract_answer(g.text, task)
                    ok = is_correct(pred, r.answer, task)
                    outcomes.append(ok)
                    cost["gen"] += g.n_tokens
                    cost["prompt"] += g.prompt_tokens
                    cost["prefill"] += g.prefill_tokens
                    explorations.append(
                        dict(
                            id=f"{r.pair_id}/x{req.step}.{start + j}",
                            pair_id=r.pair_id,
                            sample_id=r.rejected_sample_id,
                            step=req.step,
                            idx=start + j,
                            text=g.text,
                            pred=pred,
                            correct=ok,
                            n_tokens=g.n_tokens,
                            parent_id=r.rejected_sample_id,
                        )
                    )
                plan.record(req.step, outcomes)
    pits = []
    for r, steps, plan, cost in items:
        tfe = None
        if task == "synthetic":
            tfe = true_first_error(SyntheticProblem.from_json(r.meta), r.rejected)
        pits.append(
            dict(
                pair_id=r.pair_id,
                sample_id=r.rejected_sample_id,
                question_id=r.question_id,
                n_steps=len(steps),
                explored_steps=len(plan.outcomes),
                pit=plan.first_pit,
                true_first_error=tfe,
                strategy=cfg.strategy,
                k=cfg.k,
                proven=plan.proven,
                completions=sum(map(len, plan.outcomes.values())),
                generated_tokens=cost["gen"],
                prompt_tokens=cost["prompt"],
                prefill_tokens=cost["prefill"],
                parent_id=r.pair_id,
            )
        )
    return explorations, pits


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
    stage = Stage(context, lineage, "first_pit_labels", CODE, sections=("explore",), upstream=("outcome_pairs", "rft_checkpoint"))
    if (skip := stage.unchanged()) is not None:
        return skip
    exp = stage.exp
    pairs = lineage.query(
        "SELECT p.id AS pair_id, p.question_id, p.rejected_sample_id, p.rejected, q.question, q.answer, q.meta "
        "FROM outcome_pairs p JOIN questions q ON q.experiment = p.experiment AND q.id = p.question_id "
        "WHERE p.experiment = ? ORDER BY p.id",
        [stage.name],
    )
    size = exp.explore.chunk_pairs
    chunks = [pairs.iloc[i : i + size] for i in range(0, len(pairs), size)]
    explorer_path, explorer_id = stage.input_checkpoint("rft_checkpoint")
    pool = correct_sample_pool(lineage, stage.name, exp.task.name) if exp.explore.strategy == "pool-reuse" else None

    def explore(backend, c: int, chunk: pd.DataFrame) -> dict[str, pd.DataFrame]:
        seed = exp.seed * 1_000_003 + 1  # per-sample streams are keyed by prompt: chunking cannot change a draw
        explorations, pits = explore_chunk(backend, chunk, exp, seed, pool)
        x, p = pd.DataFrame(explorations), pd.DataFrame(pits)
        x["checkpoint_id"], x["seed"], p["checkpoint_id"] = explorer_id, seed, explorer_id
        found = int(p["pit"].notna().sum()) if len(p) else 0
        stage.log(f"chunk {c + 1}/{len(chunks)}: {len(p)} rationales explored, {found} pits, {len(x)} completions")
        return {"explorations": x, "pits": p}

    load = lambda: generator.load(explorer_path, accelerator, exp.gen_batch_size, stage.log, exp.model.trust_remote_code)  # noqa: E731
    _, resumed = run_chunks(stage, lineage, ["explorations", "pits"], chunks, load, explore)
    return stage.done(pit_metadata(lineage.query("SELECT * FROM pits WHERE experiment = ?", [stage.name]), len(chunks), resumed))


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
        "pit_histogram": bar_plot(sorted(hist), [hist[k] for k in sorted(hist)], "first pit", "rationales") if hist else None,
    }
    known = pits[pits["true_first_error"].notna()]
    if len(known):
        # Synthetic task only: how often the explorer's pit is the true first error.
        pit = known["pit"].fillna(-1).astype(int)
        tfe = known["true_first_error"].astype(int)
        meta["pit_equals_true_first_error"] = round(float((pit == tfe).mean()), 4)
        meta["pit_earlier_than_true"] = round(float(((pit != -1) & (pit < tfe)).mean()), 4)
        meta["pit_later_than_true"] = round(float((pit > tfe).mean()), 4)
    return meta
