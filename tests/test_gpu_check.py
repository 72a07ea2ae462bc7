"""The prepared GPU check runs in CI on the CPU, so it cannot rot before a GPU session uses it."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_script_passes_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--device", "cpu", "--steps", "2", "--prompts", "8"]) == 0
    out = capsys.readouterr().out
    for check in ("| SFT |", "| DPO |", "| LoRA SFT |", "| generation |"):
        assert check in out
    assert "NO |" not in out
