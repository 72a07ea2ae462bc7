"""Code shipped inside a model directory runs only when the experiment says
``model.trust_remote_code: true``; pickled weights stay refused either way (issue 14).

The model directories here are the project's tiny model plus a module that writes a marker
file when imported: the marker existing means the model's code ran.
"""

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sx_dagster.config import ExperimentConfig, LoRASection, TinyModelConfig, TrainSection
from sx_dagster.ml.models import ModelLoadError, RemoteCodeRefused, check_remote_code, load_model, load_tokenizer, model_shape
from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300)
EXPERIMENT = "remote-code"


def _tiny_dir(path: Path) -> Path:
    texts = [f"Question: {a} + {b} = ?\nAnswer: {a} + {b} = {a + b}. The answer is {a + b}." for a in range(20) for b in range(5)]
    tok = train_tokenizer(texts, TINY.vocab_size)
    save_tiny(build_tiny_model(TINY, tok, seed=0), tok, path)
    return path


def _ship_code(model_dir: Path, marker: Path, model_type: str = "marked", where: str = "config.json") -> Path:
    """An ``auto_map`` in ``where`` pointing at marked.py, whose import writes ``marker``.
    ``model_type`` "marked" is unknown to transformers: only the shipped code can load it."""
    (model_dir / "marked.py").write_text(
        "import pathlib\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        f"pathlib.Path({str(marker)!r}).write_text('the model directory ran its code\\n')\n\n\n"
        "class MarkedConfig(LlamaConfig):\n"
        f"    model_type = {model_type!r}\n\n\n"
        "class MarkedForCausalLM(LlamaForCausalLM):\n"
        "    config_class = MarkedConfig\n"
    )
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model_type"] = model_type
    (model_dir / "config.json").write_text(json.dumps(cfg))
    f = model_dir / where
    d = json.loads(f.read_text())
    d["auto_map"] = {"AutoConfig": "marked.MarkedConfig", "AutoModelForCausalLM": "marked.MarkedForCausalLM"}
    f.write_text(json.dumps(d))
    return model_dir


@pytest.fixture
def coded(tmp_path):
    """(model dir that ships code, its marker path)."""
    marker = tmp_path / "MARKER"
    return _ship_code(_tiny_dir(tmp_path / "model"), marker), marker


def _env(tmp: Path, experiments: Path | None = None) -> dict:
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp / "hf_modules")}  # transformers copies shipped code here
    if experiments is not None:
        env["SX_EXPERIMENTS_FILE"] = str(experiments)  # its own partition set: read at import, in the child
    return env


DRIVER = """
import sys
from pathlib import Path
import dagster as dg
from sx_dagster.assets import ALL_ASSETS
from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore
tmp = Path(sys.argv[1])
resources = {
    "lineage": LineageStore(database=str(tmp / "sx.duckdb")),
    "checkpoints": CheckpointStore(root=str(tmp / "checkpoints")),
    "accelerator": AcceleratorResource(device="cpu"),
    "generator": GeneratorResource(),
}
r = dg.materialize(ALL_ASSETS, partition_key=sys.argv[2], resources=resources,
                   selection=["task_dataset", "base_model", "sft_checkpoint"], raise_on_error=False)
for e in r.all_events:
    if e.is_step_failure:
        print("STEP FAILURE", e.step_key, e.step_failure_data.error.message)
print("MATERIALIZED", sorted(e.asset_key.to_user_string() for e in r.get_asset_materialization_events()))
print("SUCCESS", r.success)
"""


def _materialize_in_child(tmp: Path, model_dir: Path, trust: bool) -> subprocess.CompletedProcess:
    """task_dataset, base_model and sft_checkpoint for an experiment on ``model_dir``, in a
    child process whose standard input answers "y" to any prompt."""
    experiments = tmp / "experiments.yaml"
    experiments.write_text(
        json.dumps(  # JSON is YAML
            {
                "experiments": {
                    EXPERIMENT: {
                        "model": {"name": str(model_dir), "trust_remote_code": trust, "few_shot": 1},
                        "task": {"name": "synthetic", "n_train": 16, "n_test": 4, "seed": 1},
                        "sft": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_length": 256},
                    }
                }
            }
        )
    )
    return subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp / "run"), EXPERIMENT],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(tmp, experiments),
        timeout=600,
    )


def test_model_code_never_runs_without_the_field_even_when_stdin_says_yes(coded, tmp_path):
    model_dir, marker = coded
    p = _materialize_in_child(tmp_path, model_dir, trust=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert not marker.exists(), "the model directory's code ran"
    assert "SUCCESS False" in p.stdout
    failure = next(line for line in p.stdout.splitlines() if line.startswith("STEP FAILURE"))
    # fails at the first model step, naming the model, the file that asks for code and the field
    assert "base_model" in failure and str(model_dir) in failure
    assert "config.json: auto_map" in failure and "model.trust_remote_code is false" in failure
    assert "MATERIALIZED ['task_dataset']" in p.stdout  # no training started
    assert not (tmp_path / "run" / "checkpoints" / EXPERIMENT / "sft_checkpoint").exists()
    assert "Do you wish to run the custom code" not in out


def test_model_code_runs_when_the_experiment_trusts_it(coded, tmp_path):
    model_dir, marker = coded
    p = _materialize_in_child(tmp_path, model_dir, trust=True)
    assert "SUCCESS True" in p.stdout, p.stdout + p.stderr
    assert marker.exists()  # the opt-in is what let it run
    sft = tmp_path / "run" / "checkpoints" / EXPERIMENT / "sft_checkpoint"
    # the checkpoint keeps the shipped code: later stages load it under the same field
    assert json.loads((sft / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == "marked.MarkedForCausalLM"
    assert (sft / "marked.py").is_file()
    assert "Do you wish to run the custom code" not in p.stdout + p.stderr


def test_a_load_that_forgets_the_flag_raises_instead_of_prompting(coded, tmp_path):
    """transformers' own [y/N] prompt (for any load inside a library) is off once sx_dagster.ml.models is imported."""
    model_dir, marker = coded
    code = (
        "import sys, sx_dagster.ml.models\n"
        "from transformers import AutoConfig\n"
        "try:\n    AutoConfig.from_pretrained(sys.argv[1])\n"
        "except ValueError as e:\n    print('REFUSED', e)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)], input="y\n", capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path), timeout=300
    )
    assert "REFUSED" in p.stdout and "trust_remote_code=True" in p.stdout, p.stdout + p.stderr
    assert not marker.exists()
    assert "Do you wish to run the custom code" not in p.stdout + p.stderr


def test_every_load_path_refuses_shipped_code_before_loading(coded, tmp_path):
    from sx_dagster.ml.generation import HFBackend
    from sx_dagster.ml.training import Precision, train
    from sx_dagster.ml.vllm_backend import VLLMBackend

    model_dir, marker = coded
    cpu = Precision("cpu", "float32")
    rows = [{"prompt": "1 + 1 = ?", "completion": "2"}] * 4
    calls = {
        "tokenizer": lambda: load_tokenizer(model_dir),
        "model": lambda: load_model(model_dir, "cpu", "float32"),
        "hf backend": lambda: HFBackend(model_dir),
        "vllm backend": lambda: VLLMBackend(model_dir),  # refused before vllm is even imported
        "sft": lambda: train("sft", model_dir, None, rows, tmp_path / "sft", TrainSection(), precision=cpu, seed=0),
        "lora sft": lambda: train(
            "sft", model_dir, None, rows, tmp_path / "lora", TrainSection(), precision=cpu, seed=0, lora=LoRASection(r=2)
        ),
    }
    for what, call in calls.items():
        with pytest.raises(RemoteCodeRefused, match="model.trust_remote_code is false") as e:
            call()
        assert str(model_dir) in str(e.value) and "config.json: auto_map" in str(e.value), what
    exp = ExperimentConfig(name="x", model={"name": str(model_dir)}, task={"name": "synthetic", "n_train": 4, "n_test": 2})
    with pytest.raises(RemoteCodeRefused, match="model.trust_remote_code"):
        model_shape(exp)  # the estimate reads the config without running it, or says why not
    assert not marker.exists()
    assert not (tmp_path / "sft").exists() and not (tmp_path / "lora").exists()


def test_pipes_training_job_carries_the_field(coded, tmp_path):
    from sx_dagster.ml.train_job import TrainSpec, read_spec, run, write_spec

    model_dir, marker = coded
    spec = TrainSpec.of(
        TrainSection(),
        kind="sft",
        model_path=str(model_dir),
        out_dir=str(tmp_path / "out"),
        precision={"device": "cpu", "dtype": "float32"},
        seed=0,
    )
    path = write_spec(tmp_path / "job", spec, [{"prompt": "1 + 1 = ?", "completion": "2"}])
    assert read_spec(path).trust_remote_code is False  # the default crosses the process boundary
    with pytest.raises(RemoteCodeRefused, match="model.trust_remote_code"):
        run(read_spec(path), None)
    assert not marker.exists()


def test_an_auto_map_is_refused_even_for_an_architecture_transformers_knows(tmp_path):
    """transformers alone would load a llama-type model with built-in classes and ignore its
    auto_map; the project refuses it instead of silently running it differently from its author."""
    marker = tmp_path / "MARKER"
    model_dir = _ship_code(_tiny_dir(tmp_path / "model"), marker, model_type="llama", where="tokenizer_config.json")
    with pytest.raises(RemoteCodeRefused, match="tokenizer_config.json: auto_map"):
        load_tokenizer(model_dir)
    assert check_remote_code(model_dir, trust_remote_code=True) == [
        'tokenizer_config.json: auto_map -> {"AutoConfig": "marked.MarkedConfig", "AutoModelForCausalLM": "marked.MarkedForCausalLM"}'
    ]
    (model_dir / "custom_generate").mkdir()
    (model_dir / "custom_generate" / "generate.py").write_text("raise SystemExit('custom generate ran')\n")
    with pytest.raises(RemoteCodeRefused, match="custom_generate/generate.py"):
        load_model(model_dir, "cpu", "float32")
    assert not marker.exists()


def test_a_plain_model_directory_loads_with_the_default(tmp_path):
    model_dir = _tiny_dir(tmp_path / "model")
    assert check_remote_code(model_dir, trust_remote_code=False) == []
    assert load_model(model_dir, "cpu", "float32").config.model_type == "llama"


class _WritesMarker:
    """Unpickling this opens (creates) a file: arbitrary code, as a malicious checkpoint would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.open, (str(self.path), "w"))


@pytest.mark.parametrize("trust", [False, True])
def test_pickled_weights_that_run_code_are_refused(tmp_path, trust):
    """Weights load with torch's weights_only unpickler: a pytorch_model.bin that would run code
    fails with a clear error, whatever model.trust_remote_code says (it is about shipped .py files)."""
    marker = tmp_path / "PICKLE_MARKER"
    model_dir = _tiny_dir(tmp_path / "model")
    state = dict(load_model(model_dir, "cpu", "float32").state_dict())
    (model_dir / "model.safetensors").unlink()
    torch.save({**state, "lm_head.bias": _WritesMarker(marker)}, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"cannot load model .*Weights only load failed") as e:
        load_model(model_dir, "cpu", "float32", trust_remote_code=trust)
    assert str(model_dir) in str(e.value)
    assert not marker.exists()
