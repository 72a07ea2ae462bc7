"""Which device and precision to compute in: the logic behind the accelerator resource, without
Dagster, so the ML layer alone (a Pipes child, ``benchmarks/gpu_check.py`` on a GPU box) can use it.
Nothing touches CUDA at import."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

# ``cuda: Optional[str] = None`` / ``hip = '6.3.1'`` in torch/version.py, which the build writes
_BUILD_FIELD = re.compile(r"^(cuda|hip)\s*(?::[^=\n]*)?=\s*(\S+)\s*$", re.MULTILINE)


def cpu_only_build(version_py: Path) -> bool:
    """Whether the torch whose ``version.py`` this is was built without CUDA and ROCm. Read as
    text: a file that says neither clearly counts as a GPU build (the caller then asks torch)."""
    try:
        fields = dict(_BUILD_FIELD.findall(version_py.read_text()))
    except (OSError, UnicodeDecodeError):
        return False
    return fields.get("cuda") == "None" and fields.get("hip") == "None"


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch where the installed torch is a
    CPU-only build, which never sees a GPU. Every Dagster process asks (the executor choice),
    and the import would cost it about 1.2 s of its 3.4 s start on a CPU machine."""
    if "torch" not in sys.modules:
        spec = importlib.util.find_spec("torch")
        if spec is None:
            return False
        if spec.submodule_search_locations:
            folder = next(iter(spec.submodule_search_locations), None)
            if folder and cpu_only_build(Path(folder) / "version.py"):
                return False
    import torch

    return torch.cuda.is_available()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere PyTorch
    emulates bf16, and autocast made a training step of the default 17x slower than fp32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_device(device: str = "auto") -> str:
    """``auto`` = CUDA when present, else CPU; a CUDA device without CUDA is an error."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise RuntimeError(f"accelerator device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown accelerator device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(device: str = "auto", dtype: str = "auto") -> str:
    """``auto``: bf16 on GPUs that support it, else fp16; fp32 on every CPU.

    fp32 on CPU even where it has native bf16: for the models a CPU trains here (the tiny
    default) bf16 autocast was no faster (2026-12-04, AVX512-BF16, 2 threads: 0.082 s per SFT step
    against 0.060 in fp32), and with one precision on every CPU the default's numbers do not
    depend on whether the machine has bf16. ``bfloat16`` stays available where a larger model
    gains from it (``benchmarks/sft_step.py`` measures both)."""
    if dtype != "auto":
        return dtype
    if resolve_device(device) == "cpu":
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def describe(device: str = "auto", dtype: str = "auto") -> str:
    """One line for the run log: the device and precision chosen, and why."""
    chosen_device, chosen_dtype = resolve_device(device), resolve_dtype(device, dtype)
    why = ""
    if dtype == "auto" and chosen_device == "cpu":
        why = " (CPU: fp32" + (", though this CPU has native bf16: no faster for small models" if cpu_has_native_bf16() else "") + ")"
    elif dtype != "auto":
        why = " (set in the accelerator resource)"
    return f"device {chosen_device}, dtype {chosen_dtype}{why}"
