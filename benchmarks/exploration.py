"""Exploration cost by strategy, on a materialized experiment's explorer and rejected rationales.

    python benchmarks/exploration.py --db data/sx.duckdb --experiment tiny-synthetic --limit 200

Prints, per strategy: generated tokens, prompt tokens (what re-prefilling every prompt costs),
prefill tokens actually computed (with the HF prefix cache), wall time, pits found, agreement
with ``linear`` (the paper) and with the synthetic task's true first error; then HF batched
generation throughput against a one-sequence-at-a-time loop on the same prompts.

A strategy is ``name[@d][:nocache]``: ``@d`` reruns it with seed + d (the sampling-noise
floor), ``:nocache`` turns the prefix cache off (every sequence re-prefills its prompt). Writes the
table as CSV next to this file (benchmarks/out/). Needs the experiment materialized up to
``outcome_pairs`` and ``rft_checkpoint``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from sx_dagster.config import get_experiment
from sx_dagster.core.explore import explore, pit_agreement, pool_steps, sample_pool
from sx_dagster.core.prompts import prefix_prompt
from sx_dagster.core.steps import split_steps
from sx_dagster.ml.explorer import explorer_generate
from sx_dagster.ml.generation import HFBackend, SamplingParams
from sx_dagster.resources import AcceleratorResource, LineageStore, queries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True)
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--limit", type=int, default=200, help="rejected rationales explored")
    p.add_argument(
        "--strategies",
        default="linear:nocache,linear,linear@1,early-stop,pool-reuse,binary",
        help="comma list of name[@seed offset][:nocache]",
    )
    p.add_argument("--k", type=int, default=None, help="completions per prefix (default: the experiment's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    exp = get_experiment(args.experiment)
    store = LineageStore(database=args.db)
    rft = store.latest_lineage(exp.name, "rft_checkpoint")
    if rft is None:
        raise SystemExit(f"{args.db}: rft_checkpoint not materialized for {exp.name}")
    rejected = queries.rejected_rationales(store, exp.name, args.limit)
    acc = AcceleratorResource()
    device, dtype = acc.resolve_device(), acc.resolve_dtype()
    pool = pool_steps(sample_pool(queries.correct_samples(store, exp.name), exp.task.name))
    table, pits_by = [], {}
    for strategy in args.strategies.split(","):
        spec, _, flag = strategy.partition(":")
        name, _, offset = spec.partition("@")
        update = {"strategy": name} | ({"k": args.k} if args.k else {})
        cfg = exp.model_copy(update={"explore": exp.explore.model_copy(update=update)})
        backend = HFBackend(rft["checkpoint_path"], device, dtype, exp.gen_batch_size, prefix_cache=flag != "nocache")
        t = time.perf_counter()
        generate = explorer_generate(backend, cfg.explore, args.seed + int(offset or 0), exp.task.name)
        _, pits = explore(rejected, generate, cfg.explore, exp.task.name, pool)
        wall = time.perf_counter() - t
        pits_by[strategy] = {r.pair_id: r.pit for r in pits}
        table.append(
            dict(
                strategy=strategy,
                rationales=len(pits),
                completions=sum(r.completions for r in pits),
                generated_tokens=sum(r.generated_tokens for r in pits),
                prompt_tokens=sum(r.prompt_tokens for r in pits),
                prefill_tokens=sum(r.prefill_tokens for r in pits),
                wall_s=round(wall, 1),
                pits_found=sum(r.pit is not None for r in pits),
                pit_equals_true_first_error=round(pit_agreement((r.pit, r.true_first_error) for r in pits).equal, 3),
            )
        )
    ref = next((row for row in table if row["strategy"].startswith("linear") and "@" not in row["strategy"]), None)
    base = pits_by[ref["strategy"]] if ref else None
    for row in table:
        mine = pits_by[row["strategy"]]
        row["agreement_with_linear"] = round(sum(mine[k] == base[k] for k in mine) / len(mine), 3) if base else None
        row["tokens_vs_linear"] = round(row["generated_tokens"] / max(1, ref["generated_tokens"]), 3) if ref else None
        row["prefill_vs_reprefill"] = round(row["prefill_tokens"] / max(1, row["prompt_tokens"]), 3)

    # Throughput: the same prefix prompts, batched vs one sequence at a time.
    prompts = []
    for r in rejected[:32]:
        steps = split_steps(r.text, exp.task.name)
        prompts.append(prefix_prompt(r.question, steps, 1, exp.task.name))
    params = SamplingParams(4, exp.explore.temperature, exp.explore.top_p, exp.explore.max_new_tokens, args.seed, exp.task.name)
    batched = HFBackend(rft["checkpoint_path"], device, dtype, exp.gen_batch_size)
    batched.generate(prompts, params)
    naive = HFBackend(rft["checkpoint_path"], device, dtype, batch_size=1, prefix_cache=False)
    one = SamplingParams(1, params.temperature, params.top_p, params.max_new_tokens, args.seed, params.task)
    t = time.perf_counter()
    for prompt in prompts:
        for _ in range(params.n):
            naive.generate([prompt], one)
    naive.stats.seconds = time.perf_counter() - t

    cols = list(table[0])
    print(" | ".join(cols))
    for row in table:
        print(" | ".join(str(row.get(c)) for c in cols))
    b, n = batched.stats.tokens_per_second(), naive.stats.tokens_per_second()
    print(
        f"\nHF generation on {len(prompts)} prefixes x n={params.n}: batched {b:,.0f} tokens/s, "
        f"one-at-a-time {n:,.0f} tokens/s ({b / max(n, 1e-9):.1f}x)"
    )
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    with (out / "exploration.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(table)


if __name__ == "__main__":
    main()
