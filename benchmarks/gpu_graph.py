"""The whole graph on a GPU through Dagster, as a user with a GPU box first runs it (issue 28).

    python benchmarks/gpu_graph.py --device cuda                              # the embedded default on CUDA
    python benchmarks/gpu_graph.py --device cuda --experiment synthetic-gpu   # the default's task, 34M parameters
    python benchmarks/gpu_graph.py --device cpu --experiment micro \\
        --experiments-file tests/experiments_micro.yaml                        # what CI runs: it cannot rot

Materializes every asset of one experiment with ``dagster asset materialize`` in a fresh
``$DAGSTER_HOME`` and data dir under ``--out`` (the executor ``SX_EXECUTOR=auto`` picks: a
process per step where there is a GPU), with the accelerator resource set to ``--device``.
Then prints, per asset: wall time (Dagster's step stats), the stage's peak GPU memory
(``torch.cuda.max_memory_allocated``, reset per stage; recorded in its lineage metadata),
generation tokens/s of sampling, exploration and eval, and the time ``sx-dagster estimate``
predicted for the same device; then the eval table. Appends one row per asset to
``--results`` (default ``benchmarks/results/gpu_graph_runs.csv``). Exits non-zero if the run
failed. Needs Dagster, TRL, datasets and DuckDB where it runs (carried as wheels to a GPU box).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "gpu_graph_runs.csv"
# Dagster step -> the estimate's stage (both DPO models share one estimate row).
ESTIMATED = {
    "sft_checkpoint": "sft_checkpoint",
    "sampled_rationales": "sampled_rationales",
    "rft_checkpoint": "rft_checkpoint",
    "first_pit_labels": "first_pit_labels",
    "outcome_dpo_model": "DPO (x2)",
    "trained_model": "DPO (x2)",
    "eval_scores": "eval_scores",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the accelerator resource's device)")
    p.add_argument("--dtype", default="auto", help="the accelerator resource's dtype (auto: bf16 on GPUs that have it)")
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--experiments-file", default=None, help="another experiments YAML (SX_EXPERIMENTS_FILE)")
    p.add_argument("--out", default=str(HERE / "out" / "gpu_graph"), help="fresh DAGSTER_HOME and data dir go here")
    p.add_argument("--results", type=Path, default=RESULTS, help="CSV the per-asset rows are appended to")
    p.add_argument("--label", default="", help="a note for the results rows")
    p.add_argument("--time-limit", type=float, default=0, help="seconds before the run is stopped (SIGTERM) and what finished is reported")
    args = p.parse_args(argv)

    out = Path(args.out).resolve() / f"{args.experiment}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    home, data = out / "dagster_home", out / "data"
    home.mkdir(parents=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "SX_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.experiments_file:
        env["SX_EXPERIMENTS_FILE"] = str(Path(args.experiments_file).resolve())
    os.environ.update(env)  # this process reads the same instance, store and experiments
    run_config = out / "run_config.yaml"
    run_config.write_text(json.dumps({"resources": {"accelerator": {"config": {"device": args.device, "dtype": args.dtype}}}}))
    cmd = [sys.executable, "-m", "sx_dagster.cli", "init"]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "sx_dagster.definitions", "--select", "*"]
    cmd += ["--partition", args.experiment, "-c", str(run_config)]
    print(f"$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        proc.wait(timeout=args.time_limit or None)
    except subprocess.TimeoutExpired:
        print(f"time limit {args.time_limit:.0f} s: stopping the run (SIGTERM); the stages that finished are reported", flush=True)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    rows, table = report(args.experiment, args.device, wall)
    print(f"\n{args.experiment} on {args.device}: {machine(args.device)}; whole graph {wall:.0f} s (dagster asset materialize)")
    print(format_rows(rows))
    print(f"\n{table}" if table else "\nno eval table: the run did not reach eval_scores")
    stamp = {"date": dt.datetime.now().isoformat(timespec="minutes"), "experiment": args.experiment, "device": args.device}
    stamp.update({"machine": machine(args.device), "whole_graph_s": round(wall, 1), "label": args.label})
    append_rows(args.results, [{**stamp, **r} for r in rows])
    return 0 if proc.returncode == 0 and table else 1


def report(experiment: str, device: str, wall: float) -> tuple[list[dict], str]:
    """Per-asset rows (wall, peak GPU memory, tokens/s, estimate) and the eval table."""
    import dagster as dg

    from sx_dagster.assets.evaluate import format_scores
    from sx_dagster.cli import experiment_estimate
    from sx_dagster.config import get_experiment
    from sx_dagster.resources import LineageStore

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(limit=1)
    steps = {s.step_key: s for s in instance.get_run_step_stats(runs[0].run_id)} if runs else {}
    store = LineageStore()
    latest = "QUALIFY row_number() OVER (PARTITION BY asset ORDER BY created_at DESC) = 1"
    lineage = store.query(f"SELECT asset, metadata FROM lineage WHERE experiment = ? {latest}", [experiment])
    meta = {a: json.loads(m or "{}") for a, m in zip(lineage["asset"], lineage["metadata"], strict=True)}
    exp = get_experiment(experiment)
    estimated, _ = experiment_estimate(exp, "cuda" if device.startswith("cuda") else "cpu", exp.distributed.num_processes)
    est = {e.stage: e.seconds for e in estimated}
    rows = []
    for key, s in sorted(steps.items(), key=lambda kv: kv[1].start_time or 0):
        seconds = (s.end_time or 0) - (s.start_time or 0)
        m = meta.get(key, {})
        predicted = est.get(ESTIMATED.get(key, ""))
        if key in ("outcome_dpo_model", "trained_model") and predicted is not None:
            predicted /= 2  # the estimate's row holds both DPO models
        rows.append(
            {
                "asset": key,
                "status": s.status.value if s.status else "",
                "wall_s": round(seconds, 1),
                "peak_gpu_gib": m.get("peak_gpu_memory_gib"),
                "tokens_per_s": m.get("generated_tokens_per_s"),
                "train_steps": m.get("steps"),
                "estimate_s": round(predicted, 1) if predicted is not None else None,
                "estimate_over_actual": round(predicted / seconds, 2) if predicted and seconds > 0 else None,
            }
        )
    scores = store.query("SELECT * FROM eval_scores WHERE experiment = ? ORDER BY rowid", [experiment]) if "eval_scores" in meta else None
    return rows, format_scores(scores) if scores is not None and len(scores) else ""


def format_rows(rows: list[dict]) -> str:
    cols = ["asset", "status", "wall_s", "peak_gpu_gib", "tokens_per_s", "train_steps", "estimate_s", "estimate_over_actual"]
    lines = ["| " + " | ".join(cols) + " |", "|---|---|" + "---:|" * (len(cols) - 2)]
    for r in rows:
        lines.append("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cap = torch.backends.cpu.get_cpu_capability()
    return f"{platform.machine()} CPU ({cap}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def append_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
