"""Which g-pair setting gives cleaner step pairs, judged by the synthetic task's ground truth.

    python benchmarks/gpair_filter.py --db data/sx.duckdb --experiment tiny-synthetic

Rebuilds D_g-pair from a materialized synthetic experiment's pits (``first_pit_labels``) with
``gpair.chosen_excludes_rejected`` off (the reference) and on, and scores each pair with
``true_first_error`` (``sx_dagster/core/synthetic.py``):

- ``rejected_is_first_error``: the rejected step is the rationale's true first error (the
  pit is right); ``rejected_correct``: the rejected step comes before the true first error,
  so the pair pushes down a correct step (a chance pit);
- ``chosen_error_free``: the prefix + chosen continuation is a fully correct rationale;
- ``clean``: both of the first and the third.

Prints one row per setting (and per chosen source) and writes them as CSV to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

from sx_dagster.config import get_experiment
from sx_dagster.core.explore import sample_pool
from sx_dagster.core.gpair_inputs import pit_records
from sx_dagster.core.gpairs import GPair, PitRecord, build_g_pairs
from sx_dagster.core.steps import join_steps
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error
from sx_dagster.resources import LineageStore, pit_queries, queries


def score(pair: GPair, record: PitRecord, problem: SyntheticProblem) -> dict[str, bool]:
    """Ground truth for one pair: is the rejected step the first error, is the chosen side right."""
    tfe = true_first_error(problem, join_steps(list(record.steps), "synthetic"))
    chosen_full = pair.chosen if pair.pit == 1 else join_steps([*record.steps[: pair.pit - 1], pair.chosen], "synthetic")
    first_error = tfe == pair.pit
    chosen_ok = true_first_error(problem, chosen_full) is None
    return {
        "rejected_is_first_error": first_error,
        "rejected_correct": tfe is not None and pair.pit < tfe,
        "chosen_error_free": chosen_ok,
        "clean": first_error and chosen_ok,
    }


def summarize(setting: str, source: str, scored: list[dict[str, bool]], pits: int, dropped: Counter) -> dict:
    n = len(scored)
    row = {"setting": setting, "chosen_source": source, "pits": pits, "pairs": n}
    for key in ("rejected_is_first_error", "rejected_correct", "chosen_error_free", "clean"):
        row[key] = round(sum(s[key] for s in scored) / n, 4) if n else None
    row["no_pair"] = "; ".join(f"{k}={v}" for k, v in sorted(dropped.items())) if source == "all" else ""
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True)
    p.add_argument("--experiment", default="tiny-synthetic")
    args = p.parse_args()
    exp = get_experiment(args.experiment)
    if exp.task.name != "synthetic":
        raise SystemExit("true_first_error is known for the synthetic task only")
    store = LineageStore(database=args.db)
    found = pit_queries.found_pits(store, exp.name)
    pool = sample_pool(queries.correct_samples(store, exp.name), "synthetic") if any(f.after_pool_proof for f in found) else None
    records = pit_records(found, "synthetic", pool)
    if not records:
        raise SystemExit(f"{args.db}: no pits for {exp.name}: materialize first_pit_labels first")
    meta = store.query("SELECT id, meta FROM questions WHERE experiment = ?", [exp.name])
    problems = {q: SyntheticProblem.from_json(m) for q, m in zip(meta["id"], meta["meta"], strict=True)}
    by_pair = {r.pair_id: r for r in records}
    rows = []
    for setting, flag in (("reference (no filter)", False), ("chosen excludes rejected", True)):
        built = build_g_pairs(records, "synthetic", chosen_excludes_rejected=flag)
        scored = [(g.chosen_source, score(g, by_pair[g.pair_id], problems[g.question_id])) for g in built.pairs]
        rows.append(summarize(setting, "all", [s for _, s in scored], len(records), built.dropped))
        for source in sorted({src for src, _ in scored}):
            rows.append(summarize(setting, source, [s for src, s in scored if src == source], len(records), built.dropped))
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join("" if r[c] is None else str(r[c]) for c in cols))
    out = Path(__file__).parent / "out" / f"gpair_filter_{exp.name}.csv"
    out.parent.mkdir(exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
