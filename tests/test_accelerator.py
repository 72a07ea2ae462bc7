"""dtype ``auto`` on CPU: fp32 whatever the CPU (bf16 autocast was no faster for the tiny model
even with native bf16); an explicit dtype wins. A CPU-only torch is known without importing it."""

from pathlib import Path

import pytest
import torch

from sx_dagster.device import cpu_only_build, cuda_available
from sx_dagster.resources import AcceleratorResource

CASES = [(True, False), (False, True), (False, False)]


@pytest.mark.parametrize(("avx512_bf16", "amx"), CASES)
def test_auto_dtype_on_cpu_is_fp32_with_or_without_native_bf16(monkeypatch, avx512_bf16, amx):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    acc = AcceleratorResource(device="cpu")
    assert acc.resolve_dtype() == "float32"
    assert acc.precision().dtype == "float32" and acc.precision().trainer_kwargs()["bf16"] is False
    assert "dtype float32 (CPU: fp32" in acc.describe()
    assert ("though this CPU has native bf16" in acc.describe()) is (avx512_bf16 or amx)


def test_explicit_dtype_wins(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert AcceleratorResource(device="cpu", dtype="bfloat16").resolve_dtype() == "bfloat16"
    assert AcceleratorResource(device="cpu", dtype="bfloat16").precision().trainer_kwargs()["bf16"] is True
    assert AcceleratorResource(device="cpu", dtype="float32").resolve_dtype() == "float32"
    assert "set in the accelerator resource" in AcceleratorResource(device="cpu", dtype="float32").describe()


def test_a_cpu_only_torch_build_is_read_from_its_version_file(tmp_path):
    head = "from typing import Optional\n\n__version__ = '2.13.0'\ndebug = False\n"
    builds = {
        "cpu": "cuda: Optional[str] = None\nhip: Optional[str] = None\n",
        "cuda": "cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n",
        "rocm": "cuda: Optional[str] = None\nhip: Optional[str] = '6.3.42131'\n",
        "old": "cuda = None\nhip = None\n",  # written without annotations
        "neither": "",  # says nothing: counted as a GPU build, so torch is asked
    }
    for name, text in builds.items():
        (tmp_path / name).write_text(head + text)
    assert [cpu_only_build(tmp_path / n) for n in builds] == [True, False, False, True, False]
    assert cpu_only_build(tmp_path / "missing") is False
    # the installed torch: its file says what torch itself reports, and the answer is torch's
    installed = Path(torch.__file__).parent / "version.py"
    assert cpu_only_build(installed) == (torch.version.cuda is None and torch.version.hip is None)
    assert cuda_available() == torch.cuda.is_available()
