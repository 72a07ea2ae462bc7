"""dtype ``auto`` on CPU: bf16 autocast only where the CPU computes bf16 natively, else fp32."""

import pytest
import torch

from sx_dagster.resources import AcceleratorResource

CASES = [(True, False, "bfloat16"), (False, True, "bfloat16"), (False, False, "float32")]


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), CASES)
def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    acc = AcceleratorResource(device="cpu")
    assert acc.resolve_dtype() == expected
    assert acc.precision().dtype == expected
    assert acc.precision().trainer_kwargs()["bf16"] is (expected == "bfloat16")
    assert f"dtype {expected}" in acc.describe() and ("native bf16" in acc.describe())


def test_explicit_dtype_wins_over_the_probe(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert AcceleratorResource(device="cpu", dtype="bfloat16").resolve_dtype() == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert AcceleratorResource(device="cpu", dtype="float32").resolve_dtype() == "float32"
    assert "set in the accelerator resource" in AcceleratorResource(device="cpu", dtype="float32").describe()
