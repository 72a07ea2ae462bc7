"""Generation backends: one interface for sampling, exploration and evaluation.

A backend takes prompts and :class:`SamplingParams` and returns, per prompt, ``n``
continuations already cut by :func:`sx_dagster.core.prompts.clean_completion`. The HF
backend batches prompts (left padding, sorted by length), keeps the KV cache on, stops each
sequence at its answer line, and seeds sampling. With ``prefix_cache`` on it also prefills
each prompt once for its ``n`` samples and reuses the KV of earlier prompts that share a
token prefix (exploration asks for step i+1 right after step i of the same rationale), the
way vLLM's automatic prefix caching does. A vLLM backend serves the same contract.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from sx_dagster.core.prompts import answer_complete, clean_completion
from sx_dagster.ml.models import load_model, load_tokenizer
from sx_dagster.stopping import check as check_stop
from sx_dagster.stopping import graceful


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
    prefill_tokens: int = 0  # prompt tokens computed for it (0 where a shared prefix was reused)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # prompt tokens of every sequence (what re-prefilling each would cost)
    prefill_tokens: int = 0  # prompt tokens actually computed
    generated_tokens: int = 0
    over_context: int = 0  # prompts whose prompt + max_new_tokens exceed the model's context
    seconds: float = 0.0

    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


class GenerationBackend(Protocol):
    """``generate(prompts, params, first_sample)`` returns, per prompt, ``params.n``
    generations. Sample j of a prompt is drawn from its own random stream, keyed by
    (``params.seed``, the prompt, ``first_sample[i] + j``): the same sample whatever the batch
    it lands in, so drawing samples 0..3 at once or one at a time gives the same four."""

    stats: GenerationStats

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, first_sample: Sequence[int] | None = None
    ) -> list[list[Generation]]: ...

    def close(self) -> None: ...


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """The random stream of sample ``index`` of ``prompt``: a 63-bit key, stable across runs."""
    digest = hashlib.blake2b(f"{seed}\x00{index}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class _StreamSampler(LogitsProcessor):
    """Temperature + top-p sampling by the Gumbel-max trick, each row with its own generator.

    ``generate`` runs greedy on top of it: argmax(log p + Gumbel noise) is a draw from p, and
    the noise of a row comes only from that row's seed, so batching cannot change a sample.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: str) -> None:
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= self.top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        u = torch.stack([torch.rand(logits.shape[-1], generator=g, device=logits.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
        return logits.log_softmax(-1) + gumbel


class _StopAtAnswer(StoppingCriteria):
    """Per-sequence stop once its continuation holds a finished answer line.

    Incremental: each step decodes only the newest token of each sequence and appends it to
    that sequence's text, so the cost per step is one token per sequence, not the whole
    continuation (the markers it looks for are ASCII, so per-token decoding is exact enough).
    """

    def __init__(self, tokenizer, prompt_len: int, task: str) -> None:
        self.tokenizer, self.prompt_len, self.task = tokenizer, prompt_len, task
        self.texts: list[str] = []
        self.done: list[bool] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.done is None:
            self.texts = [""] * input_ids.shape[0]
            self.done = [False] * input_ids.shape[0]  # on the host: one transfer per step, not one sync per row
        if input_ids.shape[1] > self.prompt_len:
            last = self.tokenizer.batch_decode(input_ids[:, -1:], skip_special_tokens=True)
            for i, piece in enumerate(last):
                if not self.done[i]:
                    self.texts[i] += piece
                    self.done[i] = answer_complete(self.texts[i][-200:], self.task)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


class _PrefixCache:
    """LRU of per-prompt KV caches keyed by token ids: the longest cached prefix of a new
    prompt is reused and only the rest is prefilled."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._kv: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def lookup(self, ids: Sequence[int], limit: int) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        for m in range(min(limit, len(ids)), 0, -1):
            kv = self._kv.get(tuple(ids[:m]))
            if kv is not None:
                self._kv.move_to_end(tuple(ids[:m]))
                return m, kv
        return 0, None

    def store(self, ids: Sequence[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if self.entries <= 0 or not ids:
            return
        self._kv[tuple(ids)] = kv
        self._kv.move_to_end(tuple(ids))
        while len(self._kv) > self.entries:
            self._kv.popitem(last=False)

    def clear(self) -> None:
        self._kv.clear()


@dataclass
class HFBackend:
    """Batched Hugging Face ``generate``; ``batch_size`` counts sequences (prompts x n).

    ``prefix_cache``: prefill each prompt once for its n samples and reuse the KV of earlier
    prompts sharing a token prefix (an LRU of ``prefix_cache_entries`` prompts). Off, every
    sequence re-prefills its whole prompt (the reference behaviour, kept for benchmarks).
    """

    model_path: str | Path
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 64
    log: Callable[[str], None] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    prefix_cache: bool = True
    prefix_cache_entries: int = 512
    trust_remote_code: bool = False  # the experiment's model.trust_remote_code (ml.models.check_remote_code)

    def __post_init__(self) -> None:
        self.tokenizer = load_tokenizer(self.model_path, padding_side="left", trust_remote_code=self.trust_remote_code)
        self.model = load_model(self.model_path, self.device, self.dtype, trust_remote_code=self.trust_remote_code)
        self._cache = _PrefixCache(self.prefix_cache_entries if self.prefix_cache else 0)

    def _autocast(self):
        if self.device == "cpu" and self.dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], params: SamplingParams, first_sample: Sequence[int] | None = None) -> list[list[Generation]]:
        out: list[list[Generation]] = [[] for _ in prompts]
        if not prompts:
            return out
        first = list(first_sample) if first_sample is not None else [0] * len(prompts)
        t0 = time.perf_counter()
        ids = [self.tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
        context = getattr(self.model.config, "max_position_embeddings", None)
        over = sum(len(x) + params.max_new_tokens > context for x in ids) if context else 0
        if over:
            self.stats.over_context += over
            if self.log:
                self.log(
                    f"warning: {over} of {len(prompts)} prompts + max_new_tokens {params.max_new_tokens} exceed the model's "
                    f"context of {context} tokens; their completions may be cut short"
                )
        if self.prefix_cache:
            # Batch prompts with similar uncached suffixes: a batch recomputes its longest one.
            hits = [self._cache.lookup(x, len(x) - 1)[0] for x in ids]
            order = sorted(range(len(prompts)), key=lambda i: (len(ids[i]) - hits[i], len(ids[i])))
        else:
            order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
        per_batch = max(1, self.batch_size // params.n)
        with graceful():  # SIGTERM/SIGINT stop between batches, not inside one
            for b, start in enumerate(range(0, len(order), per_batch)):
                check_stop(f"between generation batches ({start}/{len(order)} prompts done)")
                idx = order[start : start + per_batch]
                seeds = [sample_seed(params.seed, prompts[i], first[i] + j) for i in idx for j in range(params.n)]
                if self.prefix_cache:
                    seqs, prompt_len, prefill = self._generate_reusing([ids[i] for i in idx], params, seeds)
                else:
                    seqs, prompt_len, prefill = self._generate_plain([ids[i] for i in idx], params, seeds)
                self._collect(seqs, prompt_len, idx, ids, prefill, params, out)
                if self.log and (b + 1) % 10 == 0:
                    self.log(f"generated {min(start + per_batch, len(order))}/{len(order)} prompts")
        self.stats.seconds += time.perf_counter() - t0
        return out

    def _pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, batch))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.device)
        return input_ids, mask

    def _generate_kwargs(self, params: SamplingParams, prompt_len: int, seeds: list[int]) -> dict:
        # Always greedy decoding; sampling is the per-row stream sampler's Gumbel noise.
        processors = [_StreamSampler(seeds, params.temperature, params.top_p, self.device)] if params.temperature > 0 else []
        return dict(
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            stopping_criteria=StoppingCriteriaList([_StopAtAnswer(self.tokenizer, prompt_len, params.task)]),
            logits_processor=LogitsProcessorList(processors),
            use_cache=True,
            do_sample=False,
        )

    def _generate_plain(self, batch: list[list[int]], params: SamplingParams, seeds: list[int]) -> tuple[torch.Tensor, int, list[int]]:
        input_ids, mask = self._pad(batch)
        input_ids, mask = input_ids.repeat_interleave(params.n, 0), mask.repeat_interleave(params.n, 0)  # each copy prefills
        kwargs = self._generate_kwargs(params, input_ids.shape[1], seeds)
        with self._autocast():
            seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        return seqs, input_ids.shape[1], [len(x) * params.n for x in batch]

    def _generate_reusing(self, batch: list[list[int]], params: SamplingParams, seeds: list[int]) -> tuple[torch.Tensor, int, list[int]]:
        """Prefill all but the last prompt token once per prompt, computing only what no cached
        prefix covers; then stack the KV (left-padded), expand it n ways and let ``generate``
        continue from it."""
        from transformers import DynamicCache

        kvs, prefill = self._prefill(batch)
        input_ids, mask = self._pad(batch)
        width = input_ids.shape[1]
        cache = DynamicCache()
        for layer in range(len(kvs[0])):
            keys, values = (self._left_pad([kv[layer][t] for kv in kvs], width - 1) for t in (0, 1))
            cache.update(keys, values, layer)
        if params.n > 1:
            cache.batch_repeat_interleave(params.n)
            input_ids, mask = input_ids.repeat_interleave(params.n, 0), mask.repeat_interleave(params.n, 0)
        with self._autocast():
            seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, cache=cache, **self._generate_kwargs(params, width, seeds))
        return seqs, width, [p + params.n for p in prefill]  # + the last prompt token of each copy

    @staticmethod
    def _left_pad(parts: list[torch.Tensor], width: int) -> torch.Tensor:
        """Stack per-sequence [1, heads, len, dim] KV into [batch, heads, width, dim]; the zeros
        under the pads are masked out by the attention mask."""
        like = parts[0]
        out = like.new_zeros(len(parts), like.shape[1], width, like.shape[3])
        for i, part in enumerate(parts):
            if part.shape[2]:
                out[i, :, width - part.shape[2] :] = part[0]
        return out

    def _prefill(self, batch: list[list[int]]) -> tuple[list[list[tuple[torch.Tensor, torch.Tensor]]], list[int]]:
        """KV of each prompt minus its last token, and how many tokens had to be computed.

        Prompts are grouped by uncached suffix length, so a group's suffixes need no padding
        and no cached token is recomputed; the cached prefixes are left-padded and masked.
        """
        from transformers import DynamicCache

        found = [self._cache.lookup(x, len(x) - 1) for x in batch]
        kvs: list = [kv if m == len(x) - 1 else None for x, (m, kv) in zip(batch, found, strict=True)]
        groups: dict[int, list[int]] = {}
        for i, (x, (m, _)) in enumerate(zip(batch, found, strict=True)):
            if kvs[i] is None:
                groups.setdefault(len(x) - 1 - m, []).append(i)
        layers = self.model.config.num_hidden_layers
        for suffix, members in groups.items():
            width = max(found[i][0] for i in members)  # the longest cached prefix in the group
            cache = DynamicCache()
            if width:
                like = next(found[i][1] for i in members if found[i][1] is not None)[0][0]
                empty = like[:, :, :0]
                for layer in range(layers):
                    keys, values = (
                        self._left_pad([found[i][1][layer][t] if found[i][0] else empty for i in members], width) for t in (0, 1)
                    )
                    cache.update(keys, values, layer)
            ids = torch.tensor([batch[i][found[i][0] : found[i][0] + suffix] for i in members], device=self.device)
            mask = torch.tensor([[0] * (width - found[i][0]) + [1] * (found[i][0] + suffix) for i in members], device=self.device)
            positions = torch.tensor([list(range(found[i][0], found[i][0] + suffix)) for i in members], device=self.device)
            with self._autocast():
                self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
            for row, i in enumerate(members):
                start = width - found[i][0]
                kvs[i] = [
                    (layer.keys[row : row + 1, :, start:].clone(), layer.values[row : row + 1, :, start:].clone()) for layer in cache.layers
                ]
                self._cache.store(batch[i][:-1], kvs[i])
        prefill = [len(x) - 1 - m for x, (m, _) in zip(batch, found, strict=True)]
        return kvs, prefill

    def _collect(self, seqs, prompt_len, idx, ids, prefill, params, out) -> None:
        eos = self.tokenizer.eos_token_id
        new = seqs[:, prompt_len:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        for j, text in enumerate(texts):
            row = new[j]
            stop = (row == eos).nonzero()
            used = int(stop[0, 0]) + 1 if len(stop) else int((row != self.tokenizer.pad_token_id).sum())
            p = j // params.n
            i = idx[p]
            computed = prefill[p] if j % params.n == 0 else 0  # a prompt's prefill is booked on its first sample
            out[i].append(Generation(clean_completion(text, params.task), used, len(ids[i]), computed))
            self.stats.generated_tokens += used
            self.stats.prompt_tokens += len(ids[i])
            self.stats.prefill_tokens += computed

    def close(self) -> None:
        self._cache.clear()
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
