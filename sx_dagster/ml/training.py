"""Thin wrappers over TRL's SFTTrainer and DPOTrainer (TRL 1.16 API).

Precision and gradient checkpointing are always set explicitly from the accelerator
resource: TRL's defaults (bf16, checkpointing on) fail or silently autocast on CPU.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from sx_dagster.config import DPOSection, LoRASection, TrainSection
from sx_dagster.core.dpo_text import pair_for_dpo
from sx_dagster.core.estimate import Schedule, schedule
from sx_dagster.ml.models import load_model, load_tokenizer
from sx_dagster.stopping import check as check_stop
from sx_dagster.stopping import graceful, requested


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


class _StopOnSignal(TrainerCallback):
    """SIGTERM/SIGINT end training after the current optimizer step (see :mod:`sx_dagster.stopping`)."""

    def on_step_end(self, args, state, control, **kwargs):
        if requested() is not None:
            control.should_training_stop = True
            control.should_save = False  # a stopped stage writes no checkpoint


def stage_schedule(section, n_rows: int, world_size: int = 1) -> Schedule:
    """Steps, warmup and logging of a stage from its global batch: per-device batch x
    accumulation x ``world_size`` training processes."""
    return schedule(n_rows, section.batch_size, section.grad_accum, world_size, section.epochs, section.warmup_ratio)


def trainer_arguments(
    section, precision: Precision, seed: int, out_dir: Path, n_rows: int, parallel: dict | None = None, world_size: int = 1
) -> dict:
    plan = stage_schedule(section, n_rows, world_size)
    return dict(
        output_dir=str(out_dir / "_trainer"),
        num_train_epochs=section.epochs,
        learning_rate=section.learning_rate,
        per_device_train_batch_size=section.batch_size,
        gradient_accumulation_steps=section.grad_accum,
        lr_scheduler_type=section.lr_scheduler,
        warmup_steps=plan.warmup_steps,
        logging_steps=plan.logging_steps,
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


def _result_with_schedule(section, n_rows: int, world_size: int) -> TrainResult:
    plan = stage_schedule(section, n_rows, world_size)
    return TrainResult(extra={"global_batch": float(plan.global_batch), "warmup_steps": float(plan.warmup_steps)})


def _peft_config(lora: LoRASection | None):
    if lora is None or lora.r == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM"
    )


def _load_trainable(model_path: str | Path, precision: Precision, lora: LoRASection | None, trust_remote_code: bool = False):
    four_bit = bool(lora and lora.qlora)
    model = load_model(model_path, precision.device, precision.dtype, four_bit=four_bit, trust_remote_code=trust_remote_code)
    if lora is not None and lora.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=precision.gradient_checkpointing)
    model.train()
    return model


def _finish(
    trainer,
    result: TrainResult,
    out_dir: Path,
    tokenizer,
    model_path,
    precision: Precision,
    lora: LoRASection | None,
    trust_remote_code: bool = False,
) -> TrainResult:
    trainer.remove_callback(PrinterCallback)  # _Progress logs through Dagster instead of print()
    trainer.add_callback(_StopOnSignal())
    with graceful():
        out = trainer.train()
        check_stop(f"after optimizer step {trainer.state.global_step}/{trainer.state.max_steps}; no checkpoint written")
    result.steps = int(out.global_step)
    result.seconds = float(out.metrics.get("train_runtime", 0.0))
    result.final_loss = result.losses[-1][1] if result.losses else float(out.training_loss)
    if not trainer.is_world_process_zero():  # data-parallel ranks > 0 train, rank 0 writes
        return result
    if lora is not None and lora.r > 0:
        _save_merged(trainer.model, out_dir, model_path, precision, lora, trust_remote_code)
    else:
        trainer.model.config.use_cache = True
        trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    (out_dir / "training_args.bin").unlink(missing_ok=True)
    return result


def _save_merged(peft_model, out_dir: Path, model_path, precision: Precision, lora: LoRASection, trust_remote_code: bool = False) -> None:
    """Merge the adapter so the checkpoint is a plain model; keep the adapter beside it."""
    peft_model.save_pretrained(str(out_dir / "adapter"))
    if lora.qlora:
        # A 4-bit base cannot take the merge: reload it in full precision and merge there.
        from peft import PeftModel

        base = load_model(model_path, precision.device, precision.dtype, trust_remote_code=trust_remote_code)
        merged = PeftModel.from_pretrained(base, str(out_dir / "adapter")).merge_and_unload()
    else:
        merged = peft_model.merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(out_dir), safe_serialization=True)


def sft_trainer(
    model_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: TrainSection,
    precision: Precision,
    seed: int,
    log: Callable[[str], None] | None = None,
    lora: LoRASection | None = None,
    parallel: dict | None = None,
    world_size: int = 1,
    trust_remote_code: bool = False,
) -> SFTTrainer:
    """The SFT trainer of :func:`train_sft`, built but not run (its result is ``trainer.sx_result``)."""
    if not rows:
        raise ValueError("no training rows")
    tokenizer = load_tokenizer(model_path, padding_side="right", trust_remote_code=trust_remote_code)
    model = _load_trainable(model_path, precision, lora, trust_remote_code)
    args = SFTConfig(
        **trainer_arguments(section, precision, seed, out_dir, len(rows), parallel, world_size),
        weight_decay=section.weight_decay,
        completion_only_loss=not section.loss_on_prompt,
    )
    result = _result_with_schedule(section, len(rows), world_size)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        callbacks=[_Progress(result, log)],
        peft_config=_peft_config(lora),
    )
    trainer.sx_result = result
    return trainer


def train_sft(
    model_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: TrainSection,
    precision: Precision,
    seed: int,
    **options,
) -> TrainResult:
    """Supervised fine-tuning on prompt/completion rows; the loss covers the completion only
    unless ``section.loss_on_prompt`` (TRL's ``completion_only_loss=False``). With ``lora``
    (r > 0) only an adapter trains, and it is merged into the saved weights. ``world_size``:
    the data-parallel processes this runs in (the global batch counts them). ``options``: the
    keyword arguments of :func:`sft_trainer` (log, lora, parallel, world_size, trust_remote_code)."""
    trainer = sft_trainer(model_path, rows, out_dir, section, precision, seed, **options)
    lora, trust = options.get("lora"), options.get("trust_remote_code", False)
    return _finish(trainer, trainer.sx_result, out_dir, trainer.processing_class, model_path, precision, lora, trust)


class ReferenceDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, tokenizing a pair as the reference trained on it: EOS ends the chosen,
    never the rejected (reference ``dpo/custom_trainer.py``, ``tokenize_row``: "do not add eos
    token for both DPO & step-wise DPO"). TRL 1.16 appends EOS to both and takes no pre-tokenized
    preference data, so the rejected's EOS is dropped right after TRL's own tokenization, before
    anything (the collator, precomputed reference log-probs) reads the ids. Why it matters: with
    "pit step + EOS" DPO can raise its margin by lowering an EOS that greedy decoding never emits."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        eos = self._tokenizer.eos_token_id

        def drop_rejected_eos(example: dict) -> dict:
            ids = example["rejected_ids"]
            return {"rejected_ids": ids[:-1] if ids and ids[-1] == eos else ids}

        return dataset.map(drop_rejected_eos)


def dpo_trainer(
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
    world_size: int = 1,
    trust_remote_code: bool = False,
) -> tuple[ReferenceDPOTrainer, TrainResult, object]:
    """The DPO trainer of :func:`train_dpo`, built but not run: (trainer, result to fill, tokenizer).
    Rows go through :func:`sx_dagster.core.dpo_text.pair_for_dpo` (a multi-line rejected loses
    its answer line) and :class:`ReferenceDPOTrainer` (no EOS on the rejected)."""
    if not rows:
        raise ValueError("no preference pairs")
    tokenizer = load_tokenizer(model_path, padding_side="right", trust_remote_code=trust_remote_code)
    model = _load_trainable(model_path, precision, lora, trust_remote_code)
    peft_config = _peft_config(lora)
    same_ref = Path(str(ref_path)) == Path(str(model_path))
    ref = (
        None
        if peft_config is not None and same_ref
        else load_model(ref_path, precision.device, precision.dtype, trust_remote_code=trust_remote_code)
    )
    args = DPOConfig(
        **trainer_arguments(section, precision, seed, out_dir, len(rows), parallel, world_size),
        beta=section.beta,
        loss_type=list(section.loss_type),
        optim=section.optim,
    )
    result = _result_with_schedule(section, len(rows), world_size)
    trainer = ReferenceDPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list([pair_for_dpo(r) for r in rows]),
        processing_class=tokenizer,
        callbacks=[_Progress(result, log)],
        peft_config=peft_config,
    )
    result.extra["reference_copy_loaded"] = float(ref is not None)
    return trainer, result, tokenizer


def train_dpo(
    model_path: str | Path,
    ref_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: DPOSection,
    precision: Precision,
    seed: int,
    **options,
) -> TrainResult:
    """DPO on prompt/chosen/rejected rows, starting from ``model_path`` with ``ref_path`` as
    the frozen reference (the paper: both are the RFT model). With ``lora`` (r > 0) and
    ``ref_path == model_path`` no reference copy is loaded: TRL scores the reference with
    the adapter disabled, which is the start model. Pairs are shown as the reference showed
    them (:func:`dpo_trainer`, whose keyword arguments ``options`` are)."""
    trainer, result, tokenizer = dpo_trainer(model_path, ref_path, rows, out_dir, section, precision, seed, **options)
    lora, trust = options.get("lora"), options.get("trust_remote_code", False)
    return _finish(trainer, result, out_dir, tokenizer, model_path, precision, lora, trust)


def train(
    kind: str, model_path: str | Path, ref_path: str | Path | None, rows: Sequence[dict], out_dir: Path, section, **common
) -> TrainResult:
    """One training stage by kind: ``sft`` (SFT and RFT), ``dpo`` or ``prm`` (the process reward
    model); in-process and Pipes jobs both come here."""
    if kind == "sft":
        return train_sft(model_path, rows, out_dir, section, **common)
    if kind == "dpo":
        return train_dpo(model_path, ref_path, rows, out_dir, section, **common)
    if kind == "prm":
        # By name, not an import statement: a stage's code version follows its imports
        # (assets/_stage.code_version), and SFT, RFT and DPO never run the PRM trainer; the PRM
        # asset imports sx_dagster.ml.prm itself, so its code version does follow it.
        train_prm = importlib.import_module("sx_dagster.ml.prm").train_prm
        return train_prm(model_path, rows, out_dir, section, **common)
    raise ValueError(f"unknown training kind {kind!r}")
