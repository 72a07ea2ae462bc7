"""The generation backend resource (sampling, exploration, evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from sx_dagster.resources.accelerator import AcceleratorResource


class GeneratorResource(dg.ConfigurableResource):
    """``hf``: batched Hugging Face generate (CPU or GPU). ``vllm`` plugs in behind the same
    interface (``sx_dagster.ml.generation.GenerationBackend``)."""

    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int | None = Field(None, description="sequences per batch; None = the experiment's gen_batch_size")

    def load(self, model_path: str | Path, accelerator: AcceleratorResource, batch_size: int, log: Callable[[str], None] | None = None):
        if self.backend == "vllm":
            raise NotImplementedError("the vLLM backend is not available in this version; use backend 'hf' (the real-scale path adds it)")
        from sx_dagster.ml.generation import HFBackend

        return HFBackend(
            model_path,
            device=accelerator.resolve_device(),
            dtype=accelerator.resolve_dtype(),
            batch_size=self.batch_size or batch_size,
            log=log,
        )
