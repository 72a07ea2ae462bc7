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

from sx_dagster.config import DPOSection, LoRASection, TrainSection
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
    device: str = ""  # where it trained and in which precision (recorded in the stage's metadata)
    dtype: str = ""


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


def _common(section, precision: Precision, seed: int, out_dir: Path, n_rows: int, parallel: dict | None = None) -> dict:
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
        **(parallel or {}),
    )


def _peft_config(lora: LoRASection | None):
    if lora is None or lora.r == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM"
    )


def _load_trainable(model_path: str | Path, precision: Precision, lora: LoRASection | None):
    model = load_model(model_path, precision.device, precision.dtype, four_bit=bool(lora and lora.qlora))
    if lora is not None and lora.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=precision.gradient_checkpointing)
    model.train()
    return model


def _finish(
    trainer, result: TrainResult, out_dir: Path, tokenizer, model_path, precision: Precision, lora: LoRASection | None
) -> TrainResult:
    trainer.remove_callback(PrinterCallback)  # _Progress logs through Dagster instead of print()
    out = trainer.train()
    result.steps = int(out.global_step)
    result.seconds = float(out.metrics.get("train_runtime", 0.0))
    result.final_loss = result.losses[-1][1] if result.losses else float(out.training_loss)
    if not trainer.is_world_process_zero():  # data-parallel ranks > 0 train, rank 0 writes
        return result
    if lora is not None and lora.r > 0:
        _save_merged(trainer.model, out_dir, model_path, precision, lora)
    else:
        trainer.model.config.use_cache = True
        trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    (out_dir / "training_args.bin").unlink(missing_ok=True)
    return result


def _save_merged(peft_model, out_dir: Path, model_path, precision: Precision, lora: LoRASection) -> None:
    """Merge the adapter so the checkpoint is a plain model; keep the adapter beside it."""
    peft_model.save_pretrained(str(out_dir / "adapter"))
    if lora.qlora:
        # A 4-bit base cannot take the merge: reload it in full precision and merge there.
        from peft import PeftModel

        base = load_model(model_path, precision.device, precision.dtype)
        merged = PeftModel.from_pretrained(base, str(out_dir / "adapter")).merge_and_unload()
    else:
        merged = peft_model.merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(out_dir), safe_serialization=True)


def train_sft(
    model_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: TrainSection,
    precision: Precision,
    seed: int,
    log: Callable[[str], None] | None = None,
    lora: LoRASection | None = None,
    parallel: dict | None = None,
) -> TrainResult:
    """Supervised fine-tuning on prompt/completion rows; the loss covers the completion only.
    With ``lora`` (r > 0) only an adapter trains, and it is merged into the saved weights."""
    if not rows:
        raise ValueError("no training rows")
    tokenizer = load_tokenizer(model_path, padding_side="right")
    model = _load_trainable(model_path, precision, lora)
    args = SFTConfig(**_common(section, precision, seed, out_dir, len(rows), parallel), weight_decay=section.weight_decay)
    result = TrainResult()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        callbacks=[_Progress(result, log)],
        peft_config=_peft_config(lora),
    )
    return _finish(trainer, result, out_dir, tokenizer, model_path, precision, lora)


def train_dpo(
    model_path: str | Path,
    ref_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: DPOSection,
    precision: Precision,
    seed: int,
    log: Callable[[str], None] | None = None,
    lora: LoRASection | None = None,
    parallel: dict | None = None,
) -> TrainResult:
    """DPO on prompt/chosen/rejected rows, starting from ``model_path`` with ``ref_path`` as
    the frozen reference (the paper: both are the RFT model). With ``lora`` (r > 0) and
    ``ref_path == model_path`` no reference copy is loaded: TRL scores the reference with
    the adapter disabled, which is the start model."""
    if not rows:
        raise ValueError("no preference pairs")
    tokenizer = load_tokenizer(model_path, padding_side="right")
    model = _load_trainable(model_path, precision, lora)
    peft_config = _peft_config(lora)
    same_ref = Path(str(ref_path)) == Path(str(model_path))
    ref = None if peft_config is not None and same_ref else load_model(ref_path, precision.device, precision.dtype)
    args = DPOConfig(
        **_common(section, precision, seed, out_dir, len(rows), parallel),
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
        peft_config=peft_config,
    )
    result.extra["reference_copy_loaded"] = float(ref is not None)
    return _finish(trainer, result, out_dir, tokenizer, model_path, precision, lora)


def train(
    kind: str, model_path: str | Path, ref_path: str | Path | None, rows: Sequence[dict], out_dir: Path, section, **common
) -> TrainResult:
    """One training stage by kind: ``sft`` (SFT and RFT) or ``dpo``; in-process and Pipes jobs both come here."""
    if kind == "sft":
        return train_sft(model_path, rows, out_dir, section, **common)
    if kind == "dpo":
        return train_dpo(model_path, ref_path, rows, out_dir, section, **common)
    raise ValueError(f"unknown training kind {kind!r}")
