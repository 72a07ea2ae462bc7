"""One training stage as its own process: ``python -m sx_dagster.ml.train_job SPEC.json``.

Launched by the training assets through Dagster Pipes (directly, under ``torchrun`` for
data-parallel CPU runs, or under ``accelerate launch`` on GPUs). Rank 0 streams its logs and
the final :class:`TrainResult` to the Dagster run; every rank trains; rank 0 writes the
checkpoint. When the process exits, all of its GPU memory is released.

The spec is a :class:`TrainSpec` (written by :func:`write_spec`, JSON): the training kind,
the stage's own config section (SFT, RFT or DPO, read back as the same class), paths, precision,
seed, LoRA, the sharding arguments and the number of processes; the rows travel beside it as JSONL.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sx_dagster.config import DPOSection, LoRASection, PRMSection, RFTSection, TrainSection
from sx_dagster.parent import die_with_run

# The section classes a spec may carry, by name: the name travels with the section so that
# an RFTSection comes back as an RFTSection (a TrainSection forbids RFT's extra fields).
SECTIONS: dict[str, type[TrainSection] | type[DPOSection]] = {
    "sft": TrainSection,
    "rft": RFTSection,
    "dpo": DPOSection,
    "prm": PRMSection,
}


class PrecisionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str
    dtype: str
    gradient_checkpointing: bool = False


class TrainSpec(BaseModel):
    """One training stage, as it crosses the process boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sft", "dpo", "prm"] = Field(description="the trainer: sft (SFT and RFT), dpo or prm")
    section_kind: Literal["sft", "rft", "dpo", "prm"] = Field(description="which config section `section` is")
    section: TrainSection | RFTSection | DPOSection | PRMSection
    model_path: str
    ref_path: str | None = None
    rows: str = Field("", description="the JSONL file of training rows (set by write_spec)")
    out_dir: str
    precision: PrecisionSpec
    seed: int
    lora: LoRASection | None = None
    parallel: dict | None = None
    world_size: int = Field(1, ge=1, description="training processes (the global batch counts them)")
    trust_remote_code: bool = Field(False, description="the experiment's model.trust_remote_code")

    @field_validator("section", mode="before")
    @classmethod
    def _section_by_kind(cls, v: object, info) -> object:
        # Validate a dict as the class its kind names, never as whichever union member fits first.
        kind = info.data.get("section_kind")
        return SECTIONS[kind].model_validate(v) if isinstance(v, dict) and kind in SECTIONS else v

    @classmethod
    def of(cls, section: TrainSection | DPOSection, **fields) -> TrainSpec:
        """A spec for ``section``, its kind named from its class."""
        kind = next(k for k, c in SECTIONS.items() if type(section) is c)
        return cls(section_kind=kind, section=section, **fields)


def write_spec(job_dir: Path, spec: TrainSpec, rows: list[dict]) -> Path:
    """Rows to JSONL and the spec to JSON inside ``job_dir``; returns the spec path."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / "rows.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    path = job_dir / "spec.json"
    path.write_text(spec.model_copy(update={"rows": str(job_dir / "rows.jsonl")}).model_dump_json(indent=1))
    return path


def read_spec(path: Path) -> TrainSpec:
    return TrainSpec.model_validate_json(Path(path).read_text())


def run(spec: TrainSpec, log) -> dict:
    from sx_dagster.ml.training import Precision, train

    with open(spec.rows) as f:
        rows = [json.loads(line) for line in f]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != spec.world_size:  # the schedule was planned for spec.world_size processes
        raise RuntimeError(f"the spec plans {spec.world_size} training processes but this job runs in {world}")
    common = dict(
        precision=Precision(**spec.precision.model_dump()),
        seed=spec.seed,
        log=log,
        lora=spec.lora,
        parallel=spec.parallel,
        world_size=spec.world_size,
        trust_remote_code=spec.trust_remote_code,
    )
    return asdict(train(spec.kind, spec.model_path, spec.ref_path, rows, Path(spec.out_dir), spec.section, **common))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    # Die with whoever started this job (the step, or torchrun / accelerate for a worker): a
    # trainer must not outlive its run (sx_dagster.parent).
    die_with_run()
    spec = read_spec(Path(argv[1]))
    rank = int(os.environ.get("RANK", "0"))
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    launched_by_dagster = DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ
    pipes_cm = open_dagster_pipes() if rank == 0 and launched_by_dagster else contextlib.nullcontext(None)
    with pipes_cm as pipes:
        log = pipes.log.info if pipes is not None else (lambda m: print(f"[rank {rank}] {m}", flush=True))
        world = os.environ.get("WORLD_SIZE", "1")
        log(f"{spec.section_kind} training in process {os.getpid()} (rank {rank} of {world})")
        result = run(spec, log if rank == 0 else None)
        result["extra"]["world_size"] = float(world)
        if rank == 0:
            Path(argv[1]).with_name("result.json").write_text(json.dumps(result))
            if pipes is not None:
                pipes.report_custom_message({"train_result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
