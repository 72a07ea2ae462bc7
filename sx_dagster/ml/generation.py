"""Generation backends: one interface for sampling, exploration and evaluation.

A backend takes prompts and :class:`SamplingParams` and returns, per prompt, ``n``
continuations already cut by :func:`sx_dagster.core.prompts.clean_completion`. The HF
backend batches prompts (left padding, sorted by length), keeps the KV cache on, stops each
sequence at its answer line, and seeds sampling. A vLLM backend serves the same contract.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from sx_dagster.core.prompts import answer_complete, clean_completion
from sx_dagster.ml.models import load_model, load_tokenizer


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    task: str = "gsm8k"  # how completions are cut (stop strings, answer line)


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int  # generated tokens, up to the stop
    prompt_tokens: int = 0  # tokens of the prompt it continued


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # prefilled tokens (each of n copies counts)
    generated_tokens: int = 0
    seconds: float = 0.0
    calls: int = 0

    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


class GenerationBackend(Protocol):
    stats: GenerationStats

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Generation]]: ...

    def close(self) -> None: ...


class _StopAtAnswer(StoppingCriteria):
    """Per-sequence stop once its continuation holds a finished answer line.

    Incremental: each step decodes only the newest token of each sequence and appends it to
    that sequence's text, so the cost per step is one token per sequence, not the whole
    continuation (the markers it looks for are ASCII, so per-token decoding is exact enough).
    """

    def __init__(self, tokenizer, prompt_len: int, task: str) -> None:
        self.tokenizer, self.prompt_len, self.task = tokenizer, prompt_len, task
        self.texts: list[str] = []
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.done is None:
            self.texts = [""] * input_ids.shape[0]
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if input_ids.shape[1] <= self.prompt_len:
            return self.done.clone()
        last = self.tokenizer.batch_decode(input_ids[:, -1:], skip_special_tokens=True)
        for i, piece in enumerate(last):
            if not self.done[i]:
                self.texts[i] += piece
                if answer_complete(self.texts[i][-200:], self.task):
                    self.done[i] = True
        return self.done.clone()


@dataclass
class HFBackend:
    """Batched Hugging Face ``generate``; ``batch_size`` counts sequences (prompts x n)."""

    model_path: str | Path
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 64
    log: Callable[[str], None] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __post_init__(self) -> None:
        self.tokenizer = load_tokenizer(self.model_path, padding_side="left")
        self.model = load_model(self.model_path, self.device, self.dtype)

    def _autocast(self):
        if self.device == "cpu" and self.dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Generation]]:
        out: list[list[Generation]] = [[] for _ in prompts]
        if not prompts:
            return out
        t0 = time.perf_counter()
        lengths = [len(self.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        per_batch = max(1, self.batch_size // params.n)
        sample = params.temperature > 0
        eos = self.tokenizer.eos_token_id
        for b, start in enumerate(range(0, len(order), per_batch)):
            idx = order[start : start + per_batch]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(self.device)
            prompt_len = enc["input_ids"].shape[1]
            # One seed per batch: the same prompts in the same order give the same samples.
            torch.manual_seed(params.seed * 100_003 + b)
            kwargs = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p) if sample else dict(do_sample=False)
            with self._autocast():
                seqs = self.model.generate(
                    **enc,
                    max_new_tokens=params.max_new_tokens,
                    num_return_sequences=params.n,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=eos,
                    stopping_criteria=StoppingCriteriaList([_StopAtAnswer(self.tokenizer, prompt_len, params.task)]),
                    use_cache=True,
                    **kwargs,
                )
            new = seqs[:, prompt_len:]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for j, text in enumerate(texts):
                row = new[j]
                stop = (row == eos).nonzero()
                used = int(stop[0, 0]) + 1 if len(stop) else int((row != self.tokenizer.pad_token_id).sum())
                i = idx[j // params.n]
                out[i].append(Generation(clean_completion(text, params.task), used, lengths[i]))
                self.stats.generated_tokens += used
            self.stats.prompt_tokens += int(enc["attention_mask"].sum()) * params.n
            if self.log and (b + 1) % 10 == 0:
                self.log(f"generated {min(start + per_batch, len(order))}/{len(order)} prompts")
        self.stats.seconds += time.perf_counter() - t0
        self.stats.calls += 1
        return out

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
