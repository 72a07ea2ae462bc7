"""The process reward model (issue 25): a token-classification head (2 labels: bad, good) on a
policy's backbone, trained with transformers' ``Trainer`` on TRL's stepwise rows (``prompt``,
``completions`` = the steps, ``labels``), and the scorer that reads it back.

TRL 1.16 ships no PRMTrainer; its earlier one (TRL <= 0.2x) set the layout kept here: the prompt,
then each step followed by the step separator, the label on the last token of each step and
-100 elsewhere. Steps are tokenized one by one, so a step's boundary token never merges with the
next step's first token, and training and scoring see the same ids (:func:`step_features`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from sx_dagster.config import LoRASection, PRMSection
from sx_dagster.ml.models import DTYPES, ModelLoadError, check_remote_code, load_tokenizer
from sx_dagster.ml.training import Precision, TrainResult, _finish, _Progress, _result_with_schedule, trainer_arguments

IGNORE = -100  # not a step boundary: no loss, no score


def step_features(
    tokenizer, prompt: str, steps: Sequence[str], labels: Sequence[bool] | None = None, separator: str = "\n", max_length: int | None = None
) -> tuple[list[int], list[int], list[int]]:
    """(input ids, token labels, boundary positions) of one rationale. ``labels`` None: scoring,
    every boundary gets label 0 (unused). Steps that would end past ``max_length`` are dropped,
    so every boundary kept has its whole step before it."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    targets = [IGNORE] * len(ids)
    ends: list[int] = []
    for i, step in enumerate(steps):
        seg = tokenizer(step + separator, add_special_tokens=False)["input_ids"]
        if not seg or (max_length is not None and len(ids) + len(seg) > max_length):
            break
        ids += seg
        targets += [IGNORE] * (len(seg) - 1) + [int(labels[i]) if labels is not None else 0]
        ends.append(len(ids) - 1)
    return ids, targets, ends


def load_prm(path: str | Path, device: str, dtype: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """A checkpoint as a 2-label token classifier: a causal LM's backbone gets a fresh head
    (transformers warns that ``score`` is newly initialized: that is the head the PRM trains)."""
    check_remote_code(path, trust_remote_code)
    torch_dtype = DTYPES[dtype] if device != "cpu" else torch.float32
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            str(path), num_labels=2, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_kernels=False
        )
    except Exception as e:  # noqa: BLE001 - re-raised with the name and the reason
        raise ModelLoadError(f"cannot load {str(path)!r} as a process reward model: {type(e).__name__}: {e}") from e
    return model.to(device)


def _features(tokenizer, rows: Sequence[dict], max_length: int) -> tuple[list[dict], int]:
    """Token features of the rows, and how many rows lost steps to ``max_length``."""
    out, cut = [], 0
    for r in rows:
        ids, targets, ends = step_features(tokenizer, r["prompt"], r["completions"], r["labels"], r.get("separator", "\n"), max_length)
        cut += len(ends) < len(r["completions"])
        if ends:
            out.append({"input_ids": ids, "labels": targets})
    return out, cut


def train_prm(
    model_path: str | Path,
    rows: Sequence[dict],
    out_dir: Path,
    section: PRMSection,
    precision: Precision,
    seed: int,
    log: Callable[[str], None] | None = None,
    lora: LoRASection | None = None,
    parallel: dict | None = None,
    world_size: int = 1,
    trust_remote_code: bool = False,
) -> TrainResult:
    """Train the PRM on stepwise rows (each may carry its ``separator``; default a newline) and
    save it (merged, with LoRA) into ``out_dir``. Cross-entropy over the step boundaries only."""
    if not rows:
        raise ValueError("no labelled rationales to train the process reward model on")
    if lora is not None and lora.qlora:
        raise ValueError("lora.qlora is not supported for the process reward model: use lora.r without qlora")
    tokenizer = load_tokenizer(model_path, padding_side="right", trust_remote_code=trust_remote_code)
    # The new head's initial weights come from the global RNG: seed it here, or a PRM trained
    # alone (a prm.* change) starts from other weights than one trained after the whole graph.
    set_seed(seed)
    model = load_prm(model_path, precision.device, precision.dtype, trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    if lora is not None and lora.r > 0:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="TOKEN_CLS",  # keeps the new head trainable (modules_to_save)
        )
        model = get_peft_model(model, config)
    model.train()
    features, cut = _features(tokenizer, rows, section.max_length)
    args = trainer_arguments(section, precision, seed, out_dir, len(features), parallel, world_size)
    args.pop("max_length")  # a TRL field; step_features cuts at it
    result = _result_with_schedule(section, len(features), world_size)
    result.extra["prm_rows"] = float(len(features))
    result.extra["prm_rows_cut"] = float(cut)  # steps past max_length have no label position: the asset warns
    weights = class_weights(features) if section.balance_classes else None
    if weights is not None:
        result.extra["bad_step_weight"], result.extra["good_step_weight"] = weights
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args, weight_decay=section.weight_decay),
        train_dataset=Dataset.from_list(features),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        callbacks=[_Progress(result, log)],
        compute_loss_func=_weighted_loss(weights) if weights is not None else None,
    )
    return _finish(trainer, result, out_dir, tokenizer, model_path, precision, lora, trust_remote_code)


def class_weights(features: Sequence[dict]) -> tuple[float, float] | None:
    """(bad, good) loss weights that make both classes weigh the same in total (n / (2 n_class)):
    a bad step is one per rejected rationale, rare beside every step of every correct one.
    None when a class is missing (nothing to balance)."""
    labels = [t for f in features for t in f["labels"] if t != IGNORE]
    bad, good = labels.count(0), labels.count(1)
    if not bad or not good:
        return None
    return len(labels) / (2 * bad), len(labels) / (2 * good)


def _weighted_loss(weights: tuple[float, float]):
    """Class-weighted cross-entropy over the step boundaries, summed and divided by the boundaries
    in the (accumulated) batch, as the Trainer expects of a ``compute_loss_func``."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        w = torch.tensor(weights, device=logits.device)
        ce = torch.nn.functional.cross_entropy(logits.view(-1, 2), labels.view(-1), weight=w, ignore_index=IGNORE, reduction="sum")
        n = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE).sum()
        return ce / n

    return loss


@torch.no_grad()
def score_steps(
    model_path: str | Path,
    items: Sequence[tuple[str, Sequence[str]]],
    precision: Precision,
    separator: str = "\n",
    batch_size: int = 64,
    max_length: int | None = None,
    trust_remote_code: bool = False,
) -> list[list[float]]:
    """P(step good) at each step boundary of each (prompt, steps) item; steps past ``max_length``
    get no score (the list is shorter)."""
    tokenizer = load_tokenizer(model_path, padding_side="right", trust_remote_code=trust_remote_code)
    model = load_prm(model_path, precision.device, precision.dtype, trust_remote_code).eval()
    feats = [step_features(tokenizer, p, s, None, separator, max_length) for p, s in items]
    order = sorted(range(len(feats)), key=lambda i: len(feats[i][0]))  # similar lengths batch together
    out: list[list[float]] = [[] for _ in feats]
    pad = tokenizer.pad_token_id
    cast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision.device == "cpu" and precision.dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(feats[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(feats[i][0])
            ids[row, :n] = torch.tensor(feats[i][0])
            mask[row, :n] = 1
        with cast:
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        good = torch.softmax(logits.float(), dim=-1)[..., 1].cpu()
        for row, i in enumerate(batch):
            out[i] = [round(float(good[row, e]), 6) for e in feats[i][2]]
    return out
