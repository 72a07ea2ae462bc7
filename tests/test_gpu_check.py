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


def test_the_ml_layer_and_gpu_check_import_without_dagster():
    """A GPU box (or a Pipes child) has torch/transformers/TRL but maybe no Dagster: the GPU
    check failed there with `No module named 'dagster'` (stopping.py, the accelerator resource)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['dagster'] = None; sys.modules['dagster_pipes'] = None\n"  # None: import raises ImportError
        "import sx_dagster.ml.training, sx_dagster.ml.generation, sx_dagster.stopping\n"
        "from sx_dagster.device import describe, resolve_dtype\n"
        "assert resolve_dtype('cpu') in ('float32', 'bfloat16'), resolve_dtype('cpu')\n"
        "assert issubclass(sx_dagster.stopping.StopRequested, BaseException)\n"
        "assert not issubclass(sx_dagster.stopping.StopRequested, Exception)\n"
        "print(describe('cpu'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("device cpu, dtype ")
