"""Which device and precision the heavy steps use. Nothing touches CUDA at import."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere PyTorch
    emulates bf16, and autocast made a training step of the default 17x slower than fp32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class AcceleratorResource(dg.ConfigurableResource):
    """Device and dtype for training and generation.

    ``auto`` picks CUDA when present, else CPU. dtype ``auto``: on GPU bf16 weights where
    supported, else fp16; on CPU bf16 autocast over fp32 weights only where the CPU has native
    bf16 (AVX512-BF16 or AMX: ~2x faster than fp32 on 2 cores), else fp32 (emulated bf16 is
    ~17x slower). The choice is logged and recorded in each training stage's metadata.
    """

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bf16/fp16 on GPU; on CPU bf16 autocast only with native bf16, else float32"
    )
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
            return "bfloat16" if cpu_has_native_bf16() else "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def describe(self) -> str:
        """One line for the run log: the device and precision chosen, and why."""
        device, dtype = self.resolve_device(), self.resolve_dtype()
        why = ""
        if self.dtype == "auto" and device == "cpu":
            why = " (CPU has native bf16: bf16 autocast)" if dtype == "bfloat16" else " (CPU has no native bf16: fp32)"
        elif self.dtype != "auto":
            why = " (set in the accelerator resource)"
        return f"device {device}, dtype {dtype}{why}"

    def precision(self):
        from sx_dagster.ml.training import Precision

        return Precision(self.resolve_device(), self.resolve_dtype(), self.gradient_checkpointing)
