"""A quick probe of the first stage alone: SFT accuracy of a configuration over seeds.

    python benchmarks/sft_probe.py --seeds 1,2 --set sft.epochs=24 --label sft24

Runs task_dataset, base_model and sft_checkpoint of ``<experiment>-s<seed>`` (the same YAML
overrides as ``paper_table.py``) and evaluates the SFT model greedily on ``--n-test`` test
questions. Appends one row per seed to ``benchmarks/results/sft_probe_runs.csv``: the cheap
screen used before paying for a whole ``paper_table.py`` run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "sft_probe_runs.csv"


def main() -> None:
    from paper_table import write_experiments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--label", default="probe")
    p.add_argument("--out", default=str(HERE / "out" / "sft_probe"))
    args = p.parse_args()
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = write_experiments(args.experiment, seeds, args.set, out)
    os.environ["SX_EXPERIMENTS_FILE"] = str(out / "experiments.yaml")
    os.environ["SX_DATA_DIR"] = str(out / "data")

    import dagster as dg

    from sx_dagster.assets import ALL_ASSETS
    from sx_dagster.core.answers import grade
    from sx_dagster.core.prompts import question_prompt
    from sx_dagster.definitions import resources
    from sx_dagster.ml.generation import HFBackend, SamplingParams

    rows = []
    for seed, name in zip(seeds, names, strict=True):
        res = resources()
        t = time.perf_counter()
        dg.materialize(ALL_ASSETS, partition_key=name, resources=res, selection=["task_dataset", "base_model", "sft_checkpoint"])
        wall = time.perf_counter() - t
        store, acc = res["lineage"], res["accelerator"]
        sql = "SELECT question, answer FROM questions WHERE experiment = ? AND split = 'test' ORDER BY id LIMIT ?"
        q = store.query(sql, [name, args.n_test])
        backend = HFBackend(store.latest_lineage(name, "sft_checkpoint")["checkpoint_path"], acc.resolve_device(), acc.resolve_dtype(), 256)
        gens = backend.generate([question_prompt(x) for x in q["question"]], SamplingParams(1, 0.0, 1.0, 64, 0, "synthetic"))
        right = sum(grade(g[0].text, a, "synthetic")[1] for g, a in zip(gens, q["answer"], strict=True))
        rows.append({"seed": seed, "sft_accuracy": round(100 * right / len(q), 1), "n_test": len(q), "sft_wall_s": round(wall, 1)})
        print(f"[{name}] SFT {rows[-1]['sft_accuracy']}% ({wall:.0f} s)", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date", "label", "overrides", *rows[0]])
        if new:
            w.writeheader()
        now = dt.datetime.now().isoformat(timespec="minutes")
        for r in rows:
            w.writerow({"date": now, "label": args.label, "overrides": " ".join(args.set), **r})


if __name__ == "__main__":
    main()
