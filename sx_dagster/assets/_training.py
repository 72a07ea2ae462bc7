"""Where a training stage runs: in the Dagster process (the laptop default) or, when the
experiment's ``distributed`` section says so, as a Dagster Pipes subprocess launched by
torchrun (CPU, gloo) or ``accelerate launch`` (GPUs: DDP, FSDP or DeepSpeed ZeRO)."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import dagster as dg

from sx_dagster.assets._stage import Stage
from sx_dagster.config import DistributedSection
from sx_dagster.parent import guarded


def parallel_args(dist: DistributedSection) -> dict:
    """Trainer arguments for the sharding strategy (DDP needs none)."""
    if dist.strategy == "fsdp":
        return {"fsdp": "full_shard auto_wrap"}
    if dist.strategy == "deepspeed":
        auto = "auto"
        return {
            "deepspeed": {
                "zero_optimization": {"stage": dist.zero_stage},
                "bf16": {"enabled": auto},
                "fp16": {"enabled": auto},
                "train_micro_batch_size_per_gpu": auto,
                "gradient_accumulation_steps": auto,
                "train_batch_size": auto,
            }
        }
    return {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(dist: DistributedSection, device: str, spec: Path) -> list[str]:
    """The command line of one training stage."""
    entry = ["-m", "sx_dagster.ml.train_job", str(spec)]
    if dist.num_processes == 1:
        return [sys.executable, *entry]
    if device == "cpu":
        # accelerate runs multi-process CPU jobs only through MPI; torchrun + gloo needs nothing.
        return [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(dist.num_processes),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *entry,
        ]  # fmt: skip
    mode = {"ddp": ["--multi_gpu"], "fsdp": ["--use_fsdp"], "deepspeed": ["--use_deepspeed", "--zero_stage", str(dist.zero_stage)]}
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(dist.num_processes), "--num_machines", "1",
        "--main_process_port", str(_free_port()), *mode[dist.strategy], *entry,
    ]  # fmt: skip


def count_truncated(model_path: str, rows: list[dict], max_length: int, trust_remote_code: bool = False) -> int:
    """SFT/RFT rows longer than ``max_length`` tokens (EOS included), which the trainer would cut.
    DPO pairs need no count here: the pair assets' blocking checks stop any that are too long."""
    from sx_dagster.ml.models import load_tokenizer, token_counts

    tok = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    return sum(n + 1 > max_length for n in token_counts(tok, [r["prompt"] + r["completion"] for r in rows]))


def _rows_label(kind: str, section) -> str:
    """What the rows are called in a message: RFT trains with the sft trainer, on rft rows."""
    return "rft" if type(section).__name__ == "RFTSection" else kind


def run_training(
    stage: Stage, accelerator, kind: str, model_path: str, rows: list[dict], section, out_dir: Path, ref_path: str | None = None
):
    """Train ``kind`` (sft | dpo) into ``out_dir`` and return the TrainResult."""
    from sx_dagster.ml.training import TrainResult, train

    exp, precision = stage.exp, accelerator.precision()
    stage.log(f"{kind} training: {accelerator.describe()}")
    trust = exp.model.trust_remote_code  # every load of this stage, here and in a Pipes job, says it
    truncated = count_truncated(model_path, rows, section.max_length, trust) if kind == "sft" else 0
    if truncated:
        stage.context.log.warning(
            f"[{exp.name}] {truncated} of {len(rows)} {_rows_label(kind, section)} rows are longer than "
            f"max_length {section.max_length} tokens "
            "and will be truncated by the trainer (dropped when the prompt alone is longer); raise max_length in the experiment section"
        )
    lora = exp.lora if exp.lora.r > 0 else None
    parallel = parallel_args(exp.distributed) if exp.distributed.num_processes > 1 else None
    if not exp.distributed.external:
        result = train(
            kind,
            model_path,
            ref_path,
            rows,
            out_dir,
            section,
            precision=precision,
            seed=exp.seed,
            log=stage.log,
            lora=lora,
            parallel=parallel,
            trust_remote_code=trust,
        )
        result.extra["truncated_rows"] = float(truncated)
        result.device, result.dtype = precision.device, precision.dtype
        return result

    from sx_dagster.ml.train_job import TrainSpec, write_spec

    job_dir = out_dir.parent / f"{out_dir.name}.job"  # beside the checkpoint, not inside it
    train_spec = TrainSpec.of(
        section,
        kind=kind,
        model_path=str(model_path),
        ref_path=str(ref_path) if ref_path is not None else None,
        out_dir=str(out_dir),
        precision={"device": precision.device, "dtype": precision.dtype, "gradient_checkpointing": precision.gradient_checkpointing},
        seed=exp.seed,
        lora=lora,
        parallel=parallel,
        world_size=exp.distributed.num_processes,
        trust_remote_code=trust,
    )
    spec = write_spec(job_dir, train_spec, rows)
    cmd = launch_command(exp.distributed, precision.device, spec)
    stage.log(f"launching {kind} as a Pipes subprocess: {' '.join(cmd)}")
    try:
        # guarded: the launcher (torchrun, accelerate) dies with this step; its workers arm the same
        invocation = dg.PipesSubprocessClient().run(
            context=stage.context, command=guarded(cmd), extras={"experiment": exp.name, "kind": kind}
        )
        messages = [m["train_result"] for m in invocation.get_custom_messages() if isinstance(m, dict) and "train_result" in m]
        raw = messages[-1] if messages else json.loads((job_dir / "result.json").read_text())
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    result = TrainResult(**{**raw, "losses": [tuple(x) for x in raw["losses"]]})
    result.extra["truncated_rows"] = float(truncated)
    result.device, result.dtype = precision.device, precision.dtype
    return result
