"""Which device and precision the heavy steps use. Nothing touches CUDA at import."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field


class AcceleratorResource(dg.ConfigurableResource):
    """Device and dtype for training and generation.

    ``auto`` picks CUDA when present, else CPU. dtype ``auto`` is bf16 (on CPU: bf16
    autocast over fp32 weights, ~2x faster on 2 cores; on GPU: bf16 weights where supported,
    else fp16).
    """

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gradient_checkpointing: bool = Field(False, description="trade compute for memory in training (large models)")

    def resolve_device(self) -> str:
        import torch  # lazily: importing this module must not initialise CUDA

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"accelerator device {self.device!r} requested but CUDA is not available")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"unknown accelerator device {self.device!r}; use auto, cpu, cuda or cuda:N")
        return self.device

    def resolve_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        device = self.resolve_device()
        if device == "cpu":
            return "bfloat16"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def precision(self):
        from sx_dagster.ml.training import Precision

        return Precision(self.resolve_device(), self.resolve_dtype(), self.gradient_checkpointing)
