"""vLLM generation backend: the same contract as :class:`sx_dagster.ml.generation.HFBackend`
(n continuations per prompt, seeded, cut by ``clean_completion``), with vLLM's automatic
prefix caching serving the shared prefixes of exploration.

``vllm`` is an optional extra (``pip install 'sx-dagster[gpu]'``), imported only here and only
when the ``vllm`` backend is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sx_dagster.core.prompts import STOP_STRINGS, clean_completion
from sx_dagster.ml.generation import Generation, GenerationStats, SamplingParams, sample_seed


class BackendUnavailable(RuntimeError):
    """A generation backend was chosen that this environment cannot run."""


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise BackendUnavailable(
            "generator backend 'vllm' was chosen but vllm is not installed: install the GPU extra "
            "(pip install 'sx-dagster[gpu]', in its own CUDA environment) or set generator.backend to 'hf'"
        ) from e
    return vllm


@dataclass
class VLLMBackend:
    """``vllm.LLM`` with prefix caching on. Each sample is its own request (n=1) seeded by
    :func:`sample_seed`, so sample j of a prompt does not depend on the batch; prefix caching
    makes the n requests of a prompt share one prefill."""

    model_path: str | Path
    dtype: str = "bfloat16"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    log: Callable[[str], None] | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)
    trust_remote_code: bool = False  # the experiment's model.trust_remote_code (ml.models.check_remote_code)

    def __post_init__(self) -> None:
        from sx_dagster.ml.models import check_remote_code

        check_remote_code(self.model_path, self.trust_remote_code)  # the same refusal as the HF backend, before vLLM starts
        vllm = _import_vllm()
        self.llm = vllm.LLM(
            model=str(self.model_path),
            trust_remote_code=self.trust_remote_code,
            dtype=self.dtype,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            enable_prefix_caching=True,
        )
        self._sampling = vllm.SamplingParams

    def generate(self, prompts: Sequence[str], params: SamplingParams, first_sample: Sequence[int] | None = None) -> list[list[Generation]]:
        if not prompts:
            return []
        t0 = time.perf_counter()
        first = list(first_sample) if first_sample is not None else [0] * len(prompts)
        sample = params.temperature > 0
        n = params.n if sample else 1  # greedy samples are all the same: decode once
        requests, settings = [], []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                requests.append(prompt)
                settings.append(
                    self._sampling(
                        n=1,
                        temperature=params.temperature if sample else 0.0,
                        top_p=params.top_p if sample else 1.0,
                        max_tokens=params.max_new_tokens,
                        seed=sample_seed(params.seed, prompt, first[i] + j) if sample else None,
                        stop=list(STOP_STRINGS[params.task]),
                    )
                )
        results = self.llm.generate(requests, settings, use_tqdm=False)
        out: list[list[Generation]] = [[] for _ in prompts]
        for r_i, r in enumerate(results):
            i = r_i // n
            c = r.outputs[0]
            prompt_len = len(r.prompt_token_ids)
            prefill = prompt_len - int(getattr(r, "num_cached_tokens", 0) or 0)
            g = Generation(clean_completion(c.text, params.task), len(c.token_ids), prompt_len, prefill)
            out[i].extend([g] * (params.n if not sample else 1))
            self.stats.prompt_tokens += prompt_len
            self.stats.prefill_tokens += prefill
            self.stats.generated_tokens += g.n_tokens
        self.stats.seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
