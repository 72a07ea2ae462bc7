"""Which device and precision the heavy steps use. Nothing touches CUDA at import."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from sx_dagster import device as _device
from sx_dagster.device import cpu_has_native_bf16  # noqa: F401  (re-exported: benchmarks import it from here)


class AcceleratorResource(dg.ConfigurableResource):
    """Device and dtype for training and generation.

    ``auto`` picks CUDA when present, else CPU. dtype ``auto``: on GPU bf16 weights where
    supported, else fp16; on every CPU fp32 (bf16 autocast was no faster for the tiny default
    even with native bf16, and emulated bf16 is ~17x slower; ``bfloat16`` turns it on). The
    choice is logged and recorded in each training stage's metadata.
    """

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bf16/fp16 on GPU, float32 on CPU; bfloat16 on a CPU = bf16 autocast (fast only with native bf16)"
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for memory in training (large models)")

    def resolve_device(self) -> str:
        return _device.resolve_device(self.device)

    def resolve_dtype(self) -> str:
        return _device.resolve_dtype(self.device, self.dtype)

    def describe(self) -> str:
        """One line for the run log: the device and precision chosen, and why."""
        return _device.describe(self.device, self.dtype)

    def precision(self):
        from sx_dagster.ml.training import Precision

        return Precision(self.resolve_device(), self.resolve_dtype(), self.gradient_checkpointing)
