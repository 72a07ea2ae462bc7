"""A rough memory and time estimate of one experiment, printed before a run starts.

Counts, per stage, the tokens trained on or generated, and turns them into time with a
throughput per device (FLOP/s for training at 6 FLOPs per parameter per token, tokens/s for
generation), and into memory per device from bytes per parameter. The throughputs are
assumptions stated in :data:`DEVICES` (the CPU row is calibrated on this project's measured
tiny-model run); every number is an order of magnitude, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Shapes of the paper's models (their public config.json files): vocab, hidden, layers,
# FFN size, attention heads, key/value heads, tied embeddings.
KNOWN_SHAPES = {
    "mistralai/Mistral-7B-v0.1": (32000, 4096, 32, 14336, 32, 8, False),
    "EleutherAI/llemma_7b": (32016, 4096, 32, 11008, 32, 32, False),
    "deepseek-ai/deepseek-math-7b-base": (102400, 4096, 30, 11008, 32, 32, False),
}

# Mean tokens of one rationale (prompt + completion) and of one generated completion.
TASK_TOKENS = {"synthetic": (60, 30), "gsm8k": (230, 130), "math": (450, 300)}


def optimizer_steps(n_rows: int, batch_size: int, grad_accum: int, world_size: int, epochs: float) -> int:
    """Optimizer steps of one training stage, from the global batch (per-device batch x
    accumulation x processes), counted as the HF Trainer counts them under accelerate: the
    batches of one epoch are dealt to the processes, a partial accumulation still steps."""
    batches_per_process = math.ceil(math.ceil(n_rows / batch_size) / world_size)
    per_epoch = max(math.ceil(batches_per_process / grad_accum), 1)
    return math.ceil(epochs * per_epoch)


@dataclass(frozen=True)
class Schedule:
    """The step counts a training stage is configured with (what the trainer gets)."""

    steps: int
    warmup_steps: int
    logging_steps: int
    global_batch: int


def schedule(n_rows: int, batch_size: int, grad_accum: int, world_size: int, epochs: float, warmup_ratio: float) -> Schedule:
    """Steps, warmup steps (rounded down, as this project always did) and a logging interval of
    about 40 logs per run, all from the global batch."""
    steps = optimizer_steps(n_rows, batch_size, grad_accum, world_size, epochs)
    return Schedule(steps, int(warmup_ratio * steps), max(1, steps // 40), batch_size * grad_accum * world_size)


@dataclass(frozen=True)
class ModelShape:
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool = True

    @property
    def params(self) -> int:
        kv = self.hidden * self.kv_heads // self.heads
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * per_layer + self.hidden


@dataclass(frozen=True)
class Device:
    train_flops: float  # effective FLOP/s of a training step
    gen_tokens_per_s_1b: float  # batched generation tokens/s for a 1B-parameter model (scales ~1/params)
    memory_gb: float
    # Floors for models too small to keep the device busy (launch- and Python-bound): seconds per
    # optimizer step, and the most generated tokens/s, whatever the FLOPs say.
    step_floor_s: float = 0.0
    max_gen_tokens_per_s: float = float("inf")


DEVICES = {
    # 2 CPU cores, bf16 autocast: measured 0.53 s per SFT step of the 1.9M tiny model at batch 64
    # (~80 GFLOP/s), HF batched sampling ~5k tokens/s.
    "cpu": Device(train_flops=8e10, gen_tokens_per_s_1b=5e3 * 1.9e6 / 1e9, memory_gb=16),
    # one H100/A100-class GPU: ~30% MFU of bf16 peak; vLLM decoding of a 7B model ~2.5k tokens/s.
    # Floors from the 0.58M-parameter default on an H200 (2026-12-04, benchmarks/results/gpu_graph_runs.md):
    # 63 ms per SFT step of 16 through TRL, HF sampling 11.4k tokens/s (the FLOP rates said 0.0 s).
    "cuda": Device(train_flops=3e14, gen_tokens_per_s_1b=2.5e3 * 7, memory_gb=80, step_floor_s=0.063, max_gen_tokens_per_s=1.1e4),
}


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    tokens: float
    seconds: float
    memory_gb: float  # per device
    steps: int = 0  # optimizer steps of a training stage (from the global batch); 0 for generation


def train_memory_gb(params: int, devices: int, lora: bool, qlora: bool, zero: int, reference: bool) -> float:
    """Weights, gradients and Adam states per device (activations not counted).

    Full fine-tuning keeps bf16 weights (2 B) and grads (2 B) and fp32 master weights, m and v
    (12 B) per parameter; ZeRO stage ``zero`` shards the optimizer states (1), also the grads
    (2), also the weights (3, = FSDP full shard) over ``devices``.
    """
    if qlora:
        per = 0.55 * params
    elif lora:
        per = 2.0 * params
    else:
        d = max(1, devices)
        per = {0: 16.0, 1: 4.0 + 12.0 / d, 2: 2.0 + 14.0 / d, 3: 16.0 / d}[zero] * params
    if reference and not (lora or qlora):
        per += 2.0 * params / (devices if zero == 3 else 1)  # DPO's frozen reference copy
    return per / 1e9


def estimate(
    shape: ModelShape,
    task: str,
    device: str,
    devices: int,
    n_train: int,
    n_test: int,
    n_samples: int,
    k: int,
    epochs: dict[str, float],
    lora: bool = False,
    qlora: bool = False,
    zero: int = 0,
    batches: dict[str, tuple[int, int]] | None = None,
    include_gold: bool = True,
    sampled_questions: int | None = None,
    prm_correct_per_question: int | None = None,
    best_of_n: int = 0,
    best_of_n_models: int = 2,
) -> list[StageEstimate]:
    """Per-stage tokens, time, memory and optimizer steps of one experiment (``epochs``: sft,
    rft, dpo; ``batches``: per-device batch and accumulation of each, over ``devices`` processes;
    ``include_gold``: RFT trains on the gold rationales too; ``sampled_questions``: the training
    questions sampled and explored, ``sampling.questions``; None = all). With ``epochs["prm"]``
    the process reward model is counted too (every rejected rationale and
    ``prm_correct_per_question`` correct ones per sampled question, None = all RFT kept), and with
    ``best_of_n`` > 0 best-of-N: N samples per test question from ``best_of_n_models`` policies,
    each scored by the PRM (one forward pass)."""
    dev = DEVICES[device]
    p = shape.params
    seq, comp = TASK_TOKENS[task]
    gen_tps = min(dev.gen_tokens_per_s_1b * 1e9 / p, dev.max_gen_tokens_per_s) * devices
    train_s = lambda tokens, flops_per_token=6: flops_per_token * p * tokens / (dev.train_flops * devices)  # noqa: E731
    gen_mem = 2.0 * p / 1e9  # bf16 weights on each device (data-parallel generation); the KV cache takes the rest
    sft_tokens = n_train * seq * epochs["sft"]
    sampled = n_train if sampled_questions is None else sampled_questions
    rft_rows = 2 * sampled + n_train * int(include_gold)  # ~2 kept samples per sampled question (+ every gold rationale)
    rft_tokens = rft_rows * seq * epochs["rft"]
    pairs = 0.4 * sampled  # D_pair: questions with both a correct and a wrong sample
    dpo_tokens = pairs * 2 * seq * epochs["dpo"]
    batches = batches or {}

    def steps(stage: str, rows: float) -> int:
        bs, accum = batches.get(stage, (1, 1))
        return optimizer_steps(math.ceil(rows), bs, accum, devices, epochs[stage]) if stage in batches else 0

    sample_tokens = sampled * n_samples * comp
    explore_tokens = pairs * 2.5 * k * comp  # ~2.5 prefixes explored per rejected rationale
    eval_tokens = 5 * n_test * comp
    mem = lambda ref: train_memory_gb(p, devices, lora, qlora, zero, ref)  # noqa: E731
    floor = lambda n_steps: n_steps * dev.step_floor_s  # noqa: E731
    sft_steps, rft_steps, dpo_steps = steps("sft", n_train), steps("rft", rft_rows), steps("dpo", pairs)
    extra = []
    if "prm" in epochs:
        correct = 2 * sampled if prm_correct_per_question is None else min(prm_correct_per_question, 2) * sampled
        prm_rows = pairs + correct
        prm_tokens = prm_rows * seq * epochs["prm"]
        prm_steps = steps("prm", prm_rows)
        extra.append(StageEstimate("process_reward_model", prm_tokens, max(train_s(prm_tokens), floor(prm_steps)), mem(False), prm_steps))
    if best_of_n:
        bon_tokens = best_of_n_models * n_test * best_of_n * comp
        # generation, then the PRM reads prompt + rationale once (2 FLOPs per parameter and token)
        bon_s = bon_tokens / gen_tps + train_s(bon_tokens * seq / comp, 2)
        extra.append(StageEstimate("best_of_n", bon_tokens, bon_s, gen_mem))
    return [
        StageEstimate("sft_checkpoint", sft_tokens, max(train_s(sft_tokens), floor(sft_steps)), mem(False), sft_steps),
        StageEstimate("sampled_rationales", sample_tokens, sample_tokens / gen_tps, gen_mem),
        StageEstimate("rft_checkpoint", rft_tokens, max(train_s(rft_tokens), floor(rft_steps)), mem(False), rft_steps),
        StageEstimate("first_pit_labels", explore_tokens, explore_tokens / gen_tps, gen_mem),
        # policy forward + backward (6) and the reference forward (2) per token, two DPO models
        StageEstimate("DPO (x2)", 2 * dpo_tokens, max(train_s(2 * dpo_tokens, 8), floor(2 * dpo_steps)), mem(True), dpo_steps),
        StageEstimate("eval_scores", eval_tokens, eval_tokens / gen_tps, gen_mem),
        *extra,
    ]


def format_estimate(rows: list[StageEstimate], params: int, device: str, devices: int, memory_gb: float) -> str:
    lines = [
        f"Rough estimate: {params / 1e9:.3g}B parameters on {devices} x {device} ({memory_gb:g} GB each); "
        "order of magnitude only (sx_dagster/core/estimate.py)",
        "| stage | tokens | optimizer steps | time | memory per device |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        warn = "  <- more than one device holds" if r.memory_gb > memory_gb else ""
        steps = f"{r.steps:,}" if r.steps else ""
        lines.append(f"| {r.stage} | {r.tokens:,.0f} | {steps} | {_duration(r.seconds)} | {r.memory_gb:.2f} GB{warn} |")
    lines.append(f"| total | {sum(r.tokens for r in rows):,.0f} | | {_duration(sum(r.seconds for r in rows))} | |")
    return "\n".join(lines)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
