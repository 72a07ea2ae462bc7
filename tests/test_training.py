"""Training paths beyond the in-process default: LoRA through PEFT, and a stage run as a
Dagster Pipes subprocess in 2 CPU processes (torchrun, gloo)."""

import sys
from pathlib import Path

import dagster as dg
import pytest
from safetensors.torch import load_file

from sx_dagster.assets import ALL_ASSETS
from sx_dagster.assets._training import launch_command, parallel_args
from sx_dagster.config import DistributedSection, LoRASection, get_experiment
from sx_dagster.ml.models import ModelLoadError, load_model
from sx_dagster.ml.training import Precision, train_dpo
from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore


def _materialize(tmp: Path, partition: str, instance=None):
    resources = {
        "lineage": LineageStore(database=str(tmp / "sx.duckdb")),
        "checkpoints": CheckpointStore(root=str(tmp / "checkpoints")),
        "accelerator": AcceleratorResource(device="cpu"),
        "generator": GeneratorResource(),
    }
    return dg.materialize(
        ALL_ASSETS,
        partition_key=partition,
        resources=resources,
        selection=["task_dataset", "base_model", "sft_checkpoint"],
        instance=instance,
    )


def _changed(a: Path, b: Path) -> set[str]:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(x) == set(y)  # same plain architecture: no adapter tensors in a checkpoint
    return {k for k in x if (x[k] - y[k]).abs().max() > 0}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    result = _materialize(tmp, "micro-lora")
    return tmp, result


def test_lora_sft_trains_only_the_adapted_modules_and_saves_a_merged_model(lora_run):
    tmp, result = lora_run
    assert result.success
    ck = tmp / "checkpoints" / "micro-lora"
    assert (ck / "sft_checkpoint" / "adapter" / "adapter_config.json").exists()  # the adapter, kept beside it
    changed = _changed(ck / "base_model", ck / "sft_checkpoint")
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    load_model(ck / "sft_checkpoint", "cpu", "float32")  # loads as a plain model for generation


def test_lora_dpo_uses_the_adapter_free_model_as_reference(lora_run, tmp_path):
    tmp, _ = lora_run
    start = tmp / "checkpoints" / "micro-lora" / "sft_checkpoint"
    pairs = [{"prompt": "Question: 2 + 3?\nAnswer:\n", "chosen": "2 + 3 = 5\nThe answer is 5", "rejected": "2 + 3 = 6"}] * 8
    exp = get_experiment("micro-lora")
    section = exp.dpo.model_copy(update={"epochs": 1.0, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64})
    out = tmp_path / "dpo"
    out.mkdir()
    result = train_dpo(start, start, pairs, out, section, Precision("cpu", "float32"), seed=0, lora=exp.lora)
    assert result.steps == 2 and result.extra["reference_copy_loaded"] == 0.0
    changed = _changed(start, out)
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_qlora_on_cpu_is_a_clear_error(lora_run):
    tmp, _ = lora_run
    with pytest.raises(ModelLoadError, match="QLoRA .* needs a CUDA device"):
        load_model(tmp / "checkpoints" / "micro-lora" / "base_model", "cpu", "bfloat16", four_bit=True)


def test_sft_as_a_pipes_subprocess_in_two_cpu_processes(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(tmp_path, "micro-ddp", instance)
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    # 64 rows at batch 8 per process: 2 data-parallel processes take 4 optimizer steps, not 8
    assert meta["sft_checkpoint"]["steps"].value == 4
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("rank 0 of 2" in m for m in logs)  # streamed from the subprocess through Pipes
    assert any(m.startswith("step 4/4") for m in logs)
    # rows over max_length are counted and warned about, never cut silently
    assert meta["sft_checkpoint"]["truncated_rows"].value > 0
    assert any("longer than max_length 110 tokens" in m for m in logs)
    assert meta["sft_checkpoint"]["training_processes"].value == 2
    ck = tmp_path / "checkpoints" / "micro-ddp"
    assert _changed(ck / "base_model", ck / "sft_checkpoint")
    assert not list(ck.glob("*.job"))  # the job spec and rows are cleaned up


def test_launch_commands_per_device_and_strategy(tmp_path):
    spec = tmp_path / "spec.json"
    one = launch_command(DistributedSection(subprocess=True), "cuda", spec)
    assert one == [sys.executable, "-m", "sx_dagster.ml.train_job", str(spec)]
    cpu = launch_command(DistributedSection(num_processes=2), "cpu", spec)
    assert cpu[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node" in cpu and cpu[cpu.index("--nproc_per_node") + 1] == "2"
    ddp = launch_command(DistributedSection(num_processes=4), "cuda", spec)
    assert ddp[2] == "accelerate.commands.launch" and "--multi_gpu" in ddp and ddp[ddp.index("--num_processes") + 1] == "4"
    ds = launch_command(DistributedSection(num_processes=8, strategy="deepspeed", zero_stage=3), "cuda", spec)
    assert ds[ds.index("--zero_stage") + 1] == "3" and "--use_deepspeed" in ds
    assert parallel_args(DistributedSection(strategy="deepspeed", zero_stage=3))["deepspeed"]["zero_optimization"] == {"stage": 3}
    assert parallel_args(DistributedSection(strategy="fsdp")) == {"fsdp": "full_shard auto_wrap"}
    assert parallel_args(DistributedSection()) == {}
    assert LoRASection().r == 0  # LoRA is opt-in


def test_estimate_counts_the_tiny_model_exactly_and_prints_a_table():
    import subprocess

    from sx_dagster.ml.models import model_shape
    from sx_dagster.ml.tiny import build_tiny_model, train_tokenizer

    exp = get_experiment("micro")
    tok = train_tokenizer(["Question: 1 + 2\nAnswer:\n1 + 2 = 3\nThe answer is 3"] * 20, exp.model.tiny.vocab_size)
    model = build_tiny_model(exp.model.tiny.model_copy(update={"vocab_size": len(tok)}), tok, seed=0)
    shape = model_shape(
        exp.model_copy(update={"model": exp.model.model_copy(update={"tiny": exp.model.tiny.model_copy(update={"vocab_size": len(tok)})})})
    )
    assert shape.params == sum(p.numel() for p in model.parameters())
    out = subprocess.run(
        [sys.executable, "-m", "sx_dagster.cli", "estimate", "--experiment", "micro", "--device", "cpu"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| sft_checkpoint |" in out and "| total |" in out
