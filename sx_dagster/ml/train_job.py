"""One training stage as its own process: ``python -m sx_dagster.ml.train_job SPEC.json``.

Launched by the training assets through Dagster Pipes (directly, under ``torchrun`` for
data-parallel CPU runs, or under ``accelerate launch`` on GPUs). Rank 0 streams its logs and
the final :class:`TrainResult` to the Dagster run; every rank trains; rank 0 writes the
checkpoint. When the process exits, all of its GPU memory is released.

The spec (written by :func:`write_spec`): kind (sft | dpo), model_path, ref_path, rows
(a JSONL file), out_dir, section, precision, seed, lora, parallel (extra trainer arguments
for FSDP / DeepSpeed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def write_spec(job_dir: Path, **spec) -> Path:
    """Rows to JSONL and the rest to JSON inside ``job_dir``; returns the spec path."""
    job_dir.mkdir(parents=True, exist_ok=True)
    rows = spec.pop("rows")
    with (job_dir / "rows.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    path = job_dir / "spec.json"
    path.write_text(json.dumps({**spec, "rows": str(job_dir / "rows.jsonl")}, indent=1, default=str))
    return path


def run(spec: dict, log) -> dict:
    from sx_dagster.config import DPOSection, LoRASection, TrainSection
    from sx_dagster.ml.training import Precision, train

    with open(spec["rows"]) as f:
        rows = [json.loads(line) for line in f]
    precision = Precision(**spec["precision"])
    lora = LoRASection(**spec["lora"]) if spec.get("lora") else None
    out_dir = Path(spec["out_dir"])
    common = dict(precision=precision, seed=spec["seed"], log=log, lora=lora, parallel=spec.get("parallel"))
    section = (TrainSection if spec["kind"] == "sft" else DPOSection)(**spec["section"])
    return asdict(train(spec["kind"], spec["model_path"], spec["ref_path"], rows, out_dir, section, **common))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    launched_by_dagster = DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ
    pipes_cm = open_dagster_pipes() if rank == 0 and launched_by_dagster else contextlib.nullcontext(None)
    with pipes_cm as pipes:
        log = pipes.log.info if pipes is not None else (lambda m: print(f"[rank {rank}] {m}", flush=True))
        world = os.environ.get("WORLD_SIZE", "1")
        log(f"{spec['kind']} training in process {os.getpid()} (rank {rank} of {world})")
        result = run(spec, log if rank == 0 else None)
        result["extra"]["world_size"] = float(world)
        if rank == 0:
            Path(argv[1]).with_name("result.json").write_text(json.dumps(result))
            if pipes is not None:
                pipes.report_custom_message({"train_result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
