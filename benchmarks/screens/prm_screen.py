"""Issue 25's PRM screen: train the process reward model with other settings on an experiment
whose graph has run (its step_labels), and measure each on the **held-out** questions' labels
(carved from the training data: a screen chooses there, never on test).

    SX_DATA_DIR=/tmp/sxd python benchmarks/screens/prm_screen.py --experiment tiny-synthetic \
        --set prm.epochs=4 --set prm.learning_rate=1e-3 [--set prm.backbone=explorer] --label e4-lr1e-3

Every ``--set`` is a field of the experiment's ``prm`` section (``prm.epochs=4``). Trains into
a temporary directory with the same trainer as the ``process_reward_model`` asset
(``sx_dagster.ml.prm.train_prm``), scores with the asset's own held-out measure
(``sx_dagster.assets.prm.held_out_metrics``) and appends a row to
``benchmarks/results/prm_screen_runs.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "prm_screen_runs.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny-synthetic")
    p.add_argument("--set", action="append", default=[], metavar="prm.FIELD=VALUE")
    p.add_argument("--label", default="")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()

    import torch

    from sx_dagster.assets._stage import checkpoint_id  # noqa: F401 - the package's import order
    from sx_dagster.assets.prm import held_out_metrics, prm_training_rows
    from sx_dagster.config import get_experiment
    from sx_dagster.ml.prm import train_prm
    from sx_dagster.ml.training import Precision
    from sx_dagster.resources import AcceleratorResource, LineageStore

    if args.threads:
        torch.set_num_threads(args.threads)
    exp = get_experiment(args.experiment)
    changes = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not key.startswith("prm."):
            raise SystemExit(f"--set {item}: only prm.* fields are screened here")
        changes[key.removeprefix("prm.")] = yaml.safe_load(value)
    exp = exp.model_copy(update={"prm": exp.prm.model_validate({**exp.prm.model_dump(), **changes})})
    cfg, store = exp.prm, LineageStore()
    acc = AcceleratorResource()
    precision = Precision(acc.resolve_device(), acc.resolve_dtype())
    rows, backbone = prm_training_rows(store, exp)
    if not rows:
        raise SystemExit(f"no step_labels for {exp.name!r} in {store.path()}: materialize the graph first")
    start = store.latest_lineage(exp.name, backbone)["checkpoint_path"]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = train_prm(start, rows, Path(tmp) / "prm", cfg, precision, exp.seed)
        wall = time.perf_counter() - t
        meta = held_out_metrics(store, exp, str(Path(tmp) / "prm"), precision)
    row = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "label": args.label,
        "experiment": exp.name,
        "overrides": " ".join(args.set),
        "rows": len(rows),
        "steps": result.steps,
        "final_loss": round(result.final_loss or 0.0, 4),
        "train_s": round(wall, 1),
        "threads": torch.get_num_threads(),
        "dtype": precision.dtype,
        **{k.removeprefix("held_out_"): v for k, v in meta.items()},
    }
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    new = not RESULTS.exists()
    fields = list(row) if new else next(csv.reader(RESULTS.open()))
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
