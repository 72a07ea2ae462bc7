"""The generation backend resource (sampling, exploration, evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from sx_dagster.resources.accelerator import AcceleratorResource


class GeneratorResource(dg.ConfigurableResource):
    """``hf``: batched Hugging Face generate (CPU or GPU) with its own prefix cache. ``vllm``:
    vLLM with automatic prefix caching (GPU; ``pip install 'sx-dagster[gpu]'``). Both serve
    ``sx_dagster.ml.generation.GenerationBackend``."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf (any device) or vllm (CUDA, optional extra)")
    batch_size: int | None = Field(None, description="hf: sequences per batch; None = the experiment's gen_batch_size")
    prefix_cache: bool = Field(True, description="hf: prefill each prompt once for its n samples and reuse shared prefixes' KV")
    prefix_cache_entries: int = Field(512, ge=0, description="hf: prompts whose KV the prefix cache keeps (LRU)")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model is sharded over")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vllm: fraction of GPU memory for weights + KV cache")
    max_model_len: int | None = Field(None, description="vllm: context length; None = the model's")

    def load(
        self,
        model_path: str | Path,
        accelerator: AcceleratorResource,
        batch_size: int,
        log: Callable[[str], None] | None = None,
        trust_remote_code: bool = False,
    ):
        """A backend for ``model_path``; ``trust_remote_code`` is the experiment's ``model.trust_remote_code``."""
        if log is not None:
            log(f"generation ({self.backend}): {accelerator.describe()}")
        if self.backend == "vllm":
            from sx_dagster.ml.vllm_backend import VLLMBackend

            return VLLMBackend(
                model_path,
                dtype=accelerator.resolve_dtype(),
                tensor_parallel_size=self.tensor_parallel_size,
                gpu_memory_utilization=self.gpu_memory_utilization,
                max_model_len=self.max_model_len,
                log=log,
                trust_remote_code=trust_remote_code,
            )
        from sx_dagster.ml.generation import HFBackend

        return HFBackend(
            model_path,
            device=accelerator.resolve_device(),
            dtype=accelerator.resolve_dtype(),
            batch_size=self.batch_size or batch_size,
            log=log,
            prefix_cache=self.prefix_cache,
            prefix_cache_entries=self.prefix_cache_entries,
            trust_remote_code=trust_remote_code,
        )
