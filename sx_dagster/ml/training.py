"""Thin wrappers over TRL's SFTTrainer and DPOTrainer (TRL 1.16 API).

Precision and gradient checkpointing are always set explicitly from the accelerator
resource: TRL's defaults (bf16, checkpointing on) fail or silently autocast on CPU.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from sx_dagster.config import DPOSection, TrainSection
from sx_dagster.ml.models import load_model, load_tokenizer


@dataclass(frozen=True)
class Precision:
    device: str  # "cpu" or "cuda[:N]"
    dtype: str  # "float32" | "bfloat16" | "float16"
    gradient_checkpointing: bool = False

    def trainer_kwargs(self) -> dict:
        return {
            "use_cpu": self.device == "cpu",
            "bf16": self.dtype == "bfloat16",
            "fp16": self.dtype == "float16",
            "gradient_checkpointing": self.gradient_checkpointing,
        }


@dataclass
class TrainResult:
    steps: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    final_loss: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # DPO reward margins, accuracies


class _Progress(TrainerCallback):
    """Streams trainer logs to the Dagster run log and keeps the loss curve."""

    def __init__(self, result: TrainResult, log: Callable[[str], None] | None) -> None:
        self.result, self.log = result, log

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.result.losses.append((state.global_step, float(logs["loss"])))
            for k in ("rewards/margins", "rewards/accuracies"):
                if k in logs:
                    self.result.extra[k] = float(logs[k])
            if self.log:
                shown = {k: round(float(v), 4) for k, v in logs.items() if isinstance(v, (int, float))}
                self.log(f"step {state.global_step}/{state.max_steps} {shown}")


def _common(section, precision: Precision, seed: int, out_dir: Path, n_rows: int) -> dict:
    steps = math.ceil(n_rows / (section.batch_size * section.grad_accum)) * section.epochs
    return dict(
        output_dir=str(out_dir / "_trainer"),
        num_train_epochs=section.epochs,
        learning_rate=section.learning_rate,
        per_device_train_batch_size=section.batch_size,
        gradient_accumulation_steps=section.grad_accum,
        lr_scheduler_type=section.lr_scheduler,
        warmup_steps=int(section.warmup_ratio * steps),
        logging_steps=max(1, int(steps) // 40),
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        max_length=section.max_length,
        disable_tqdm=True,
        log_level="warning",
        **precision.trainer_kwargs(),
    )


def _finish(trainer, result: TrainResult, out_dir: Path, tokenizer) -> TrainResult:
    trainer.remove_callback(PrinterCallback)  # _Progress logs through Dagster instead of print()
    out = trainer.train()
    result.steps = int(out.global_step)
    result.seconds = float(out.metrics.get("train_runtime", 0.0))
    result.final_loss = result.losses[-1][1] if result.losses else float(out.training_loss)
    trainer.model.config.use_cache = True
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    (out_dir / "training_args.bin").unlink(missing_ok=True)
    return result


def train_sft(
    model_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: TrainSection,
    precision: Precision,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Supervised fine-tuning on prompt/completion rows; the loss covers the completion only."""
    if not rows:
        raise ValueError("no training rows")
    tokenizer = load_tokenizer(model_path, padding_side="right")
    model = load_model(model_path, precision.device, precision.dtype)
    model.train()
    args = SFTConfig(**_common(section, precision, seed, out_dir, len(rows)), weight_decay=section.weight_decay)
    result = TrainResult()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        callbacks=[_Progress(result, log)],
    )
    return _finish(trainer, result, out_dir, tokenizer)


def train_dpo(
    model_path: str | Path,
    ref_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: DPOSection,
    precision: Precision,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """DPO on prompt/chosen/rejected rows, starting from ``model_path`` with ``ref_path`` as
    the frozen reference (the paper: both are the RFT model)."""
    if not rows:
        raise ValueError("no preference pairs")
    tokenizer = load_tokenizer(model_path, padding_side="right")
    model = load_model(model_path, precision.device, precision.dtype)
    model.train()
    ref = load_model(ref_path, precision.device, precision.dtype)
    args = DPOConfig(
        **_common(section, precision, seed, out_dir, len(rows)),
        beta=section.beta,
        loss_type=list(section.loss_type),
        optim=section.optim,
    )
    result = TrainResult()
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        callbacks=[_Progress(result, log)],
    )
    return _finish(trainer, result, out_dir, tokenizer)
