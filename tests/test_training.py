"""Training paths beyond the in-process default: LoRA through PEFT, and a stage run as a
Dagster Pipes subprocess in 2 CPU processes (torchrun, gloo)."""

import math
import os
import sys
from pathlib import Path

import dagster as dg
import pytest
from safetensors.torch import load_file

from sx_dagster.assets import ALL_ASSETS
from sx_dagster.assets._training import launch_command, parallel_args
from sx_dagster.config import DEFAULT_EXPERIMENTS_FILE, DistributedSection, LoRASection, TinyModelConfig, get_experiment, load_experiments
from sx_dagster.core.estimate import optimizer_steps
from sx_dagster.ml.models import ModelLoadError, load_model
from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer
from sx_dagster.ml.train_job import TrainSpec, read_spec, write_spec
from sx_dagster.ml.training import Precision, sft_trainer, stage_schedule, train_dpo, trainer_arguments
from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore


def _materialize(tmp: Path, partition: str, instance=None, selection=("task_dataset", "base_model", "sft_checkpoint")):
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
        selection=list(selection),
        instance=instance,
    )


def _changed(a: Path, b: Path, head: tuple[str, ...] = ()) -> set[str]:
    """Tensors of checkpoint ``a`` that ``b`` changed; ``b`` may add ``head`` (the PRM's new
    classifier), nothing else."""
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(y) - set(x) == set(head) and set(x) - set(y) <= {"lm_head.weight"}  # no adapter tensors in a checkpoint
    return {k for k in x if k in y and (x[k] - y[k]).abs().max() > 0}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(tmp, "micro-lora", instance)
    return tmp, result, [e.user_message for e in instance.all_logs(result.run_id)]


def test_rows_over_max_length_are_counted_and_warned_about_never_cut_silently(lora_run):
    _, result, logs = lora_run
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["sft_checkpoint"]["truncated_rows"].value > 0
    assert any("longer than max_length 110 tokens" in m for m in logs)


def test_lora_sft_trains_only_the_adapted_modules_and_saves_a_merged_model(lora_run):
    tmp, result, _ = lora_run
    assert result.success
    ck = tmp / "checkpoints" / "micro-lora"
    assert (ck / "sft_checkpoint" / "adapter" / "adapter_config.json").exists()  # the adapter, kept beside it
    changed = _changed(ck / "base_model", ck / "sft_checkpoint")
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    load_model(ck / "sft_checkpoint", "cpu", "float32")  # loads as a plain model for generation


def test_lora_dpo_uses_the_adapter_free_model_as_reference(lora_run, tmp_path):
    tmp, _, _ = lora_run
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


def test_lora_prm_trains_the_adapter_and_the_head_and_saves_a_merged_token_classifier(lora_run, tmp_path):
    from sx_dagster.ml.prm import score_steps, train_prm

    tmp, _, _ = lora_run
    start = tmp / "checkpoints" / "micro-lora" / "sft_checkpoint"
    rows = [
        {"prompt": "Question: 2 + 3?\nAnswer:\n", "completions": ["2 + 3 = 5", "The answer is 5"], "labels": [True, True]},
        {"prompt": "Question: 2 + 3?\nAnswer:\n", "completions": ["2 + 3 = 6"], "labels": [False]},
    ] * 4
    exp = get_experiment("micro-lora")
    section = exp.prm.model_copy(update={"epochs": 1.0, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64})
    out = tmp_path / "prm"
    out.mkdir()
    result = train_prm(start, rows, out, section, Precision("cpu", "float32"), seed=0, lora=exp.lora)
    assert result.steps == 2 and result.extra["bad_step_weight"] > result.extra["good_step_weight"]
    assert (out / "adapter" / "adapter_config.json").exists()
    # merged: the backbone's tensors (adapted ones changed) plus the new head, no adapter tensors
    changed = _changed(start, out, ("score.weight", "score.bias"))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    (scores,) = score_steps(out, [("Question: 2 + 3?\nAnswer:\n", ["2 + 3 = 5", "The answer is 5"])], Precision("cpu", "float32"))
    assert len(scores) == 2 and all(0 <= p <= 1 for p in scores)


def test_a_prm_trained_alone_is_the_prm_trained_after_other_work(lora_run, tmp_path):
    """The head's initial weights are seeded: whatever ran before in the process (the whole graph,
    or nothing when a prm.* change re-runs the PRM alone), the same seed gives the same PRM."""
    import torch

    from sx_dagster.ml.prm import train_prm

    tmp, _, _ = lora_run
    start = tmp / "checkpoints" / "micro-lora" / "sft_checkpoint"
    rows = [{"prompt": "Question: 2 + 3?\nAnswer:\n", "completions": ["2 + 3 = 6"], "labels": [False]}] * 4
    section = get_experiment("micro-lora").prm.model_copy(update={"epochs": 1.0, "batch_size": 4, "learning_rate": 1e-3})
    outs = []
    for other_work in (1, 2):
        torch.manual_seed(other_work)  # a different global RNG state before each
        out = tmp_path / f"prm{other_work}"
        out.mkdir()
        train_prm(start, rows, out, section, Precision("cpu", "float32"), seed=0)
        outs.append(load_file(out / "model.safetensors"))
    assert outs[0].keys() == outs[1].keys() and all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_qlora_on_cpu_is_a_clear_error(lora_run):
    tmp, _, _ = lora_run
    with pytest.raises(ModelLoadError, match="QLoRA .* needs a CUDA device"):
        load_model(tmp / "checkpoints" / "micro-lora" / "base_model", "cpu", "bfloat16", four_bit=True)


PIPES_SELECTION = ("task_dataset", "base_model", "sft_checkpoint", "sampled_rationales", "rft_checkpoint", "outcome_pairs",
                   "outcome_dpo_model", "first_pit_labels", "step_labels", "process_reward_model")  # fmt: skip


@pytest.fixture(scope="module")
def pipes_run(tmp_path_factory):
    """SFT, RFT, DPO and the PRM of micro-pipes, each a 2-process torchrun job launched through Pipes."""
    tmp = tmp_path_factory.mktemp("pipes")
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(tmp, "micro-pipes", instance, PIPES_SELECTION)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    return tmp / "checkpoints" / "micro-pipes", result, meta, logs


@pytest.mark.parametrize(
    "asset, start, section_kind",
    [
        ("sft_checkpoint", "base_model", "sft"),
        ("rft_checkpoint", "base_model", "rft"),
        ("outcome_dpo_model", "rft_checkpoint", "dpo"),
        ("process_reward_model", "sft_checkpoint", "prm"),
    ],
)
def test_each_training_kind_runs_as_a_two_process_pipes_job(pipes_run, asset, start, section_kind):
    ck, result, meta, logs = pipes_run
    assert result.success
    m = meta[asset]
    assert m["training_processes"].value == 2
    exp = get_experiment("micro-pipes")
    section = {"sft": exp.sft, "rft": exp.rft, "dpo": exp.dpo, "prm": exp.prm}[section_kind]
    assert m["global_batch"].value == section.batch_size * section.grad_accum * 2
    rows = {"dpo": "pairs", "prm": "rationales"}.get(section_kind, "train_rows")
    rows = m[rows].value
    assert m["steps"].value == math.ceil(math.ceil(rows / section.batch_size) / 2) * section.epochs  # from the global batch
    assert any(msg.startswith(f"{section_kind} training in process") and "rank 0 of 2" in msg for msg in logs)
    steps = int(m["steps"].value)
    assert any(msg.startswith(f"step {steps}/{steps}") for msg in logs)  # the trainer's progress, streamed through Pipes
    if section_kind in ("sft", "rft"):
        assert "truncated_rows" in m  # counted on the Pipes path too (tests/test_training.py::test_lora_sft_...)
    assert _changed(ck / start, ck / asset, ("score.weight", "score.bias") if section_kind == "prm" else ())
    assert not list(ck.glob("*.job"))


def test_the_training_spec_round_trips_to_the_same_section_class(tmp_path):
    exp = get_experiment("micro-pipes")
    fields = dict(model_path="m", out_dir="o", precision={"device": "cpu", "dtype": "float32"}, seed=0, world_size=2)
    for kind, section in (("sft", exp.sft), ("sft", exp.rft), ("dpo", exp.dpo), ("prm", exp.prm)):
        path = write_spec(
            tmp_path / type(section).__name__, TrainSpec.of(section, kind=kind, **fields), [{"prompt": "p", "completion": "c"}]
        )
        back = read_spec(path)
        assert type(back.section) is type(section) and back.section == section
    assert read_spec(tmp_path / "RFTSection" / "spec.json").section.max_per_question == 2  # RFT's own field survived


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


def test_warmup_and_logging_count_the_processes_of_a_four_process_dpo():
    exp = get_experiment("llemma-7b-gsm8k", DEFAULT_EXPERIMENTS_FILE)
    assert exp.distributed.num_processes == 4
    # 3,200 pairs at 8 per device x 1 x 4 processes = 32: 100 steps an epoch, 300 in 3 epochs, 10% warmup = 30.
    # Counted per device (the old count) it was 1,200 steps and a 120-step warmup: 40% of the real run.
    kw = trainer_arguments(exp.dpo, Precision("cpu", "float32"), 0, Path("/nonexistent"), 3200, world_size=exp.distributed.num_processes)
    assert (kw["warmup_steps"], kw["logging_steps"]) == (30, 7)
    assert stage_schedule(exp.dpo, 3200, 4).global_batch == 32
    assert stage_schedule(exp.dpo, 3200, 1).steps == 1200  # one process takes 4x the steps
    assert optimizer_steps(100, 8, 2, 2, 1.0) == 4  # 13 batches dealt to 2 processes: 7 each, 4 optimizer steps


def test_the_paper_grid_carries_the_reference_recipe():
    ours = ("tiny-synthetic", "tiny-transfers", "synthetic-gpu")  # the CPU default, its predecessor, its GPU size
    grid = {n: e for n, e in load_experiments(DEFAULT_EXPERIMENTS_FILE).items() if n not in ours}
    assert len(grid) == 6
    for name, exp in grid.items():
        mistral, math_task = name.startswith("mistral"), exp.task.name == "math"
        world = exp.distributed.num_processes
        assert world == 4
        for sec in (exp.sft, exp.rft):  # scripts/*/sft/run_ft.sh, run_rft.sh, sft/train_generator.py
            assert sec.epochs == 5 and sec.learning_rate == (1e-6 if mistral else 1e-5)
            assert sec.batch_size * sec.grad_accum * world == 64
            assert (sec.lr_scheduler, sec.warmup_ratio, sec.weight_decay, sec.loss_on_prompt) == ("linear", 0.0, 0.0, True)
            assert sec.max_length == (1024 if math_task else 2048)
        assert exp.rft.include_gold is False and exp.rft.max_per_question == 8  # gen/get_rft_data.py
        d = exp.dpo  # scripts/*/dpo/config.yaml
        assert (d.batch_size, d.grad_accum, d.batch_size * d.grad_accum * world) == (8, 1, 32)
        assert (d.learning_rate, d.epochs, d.beta) == (1e-7 if mistral else 1e-6, 3, 0.1)
        assert (d.optim, d.lr_scheduler, d.warmup_ratio, d.loss_type) == ("rmsprop", "linear", 0.1, ("sigmoid",))
        assert d.max_length == (1024 if math_task else 384) + 8  # + our longer prompt format
        assert exp.eval.max_new_tokens == (1024 if math_task else 512)  # eval/math/run_cot_eval.py


def test_loss_on_prompt_is_trls_completion_only_loss_off(tmp_path):
    exp = get_experiment("micro-pipes")
    assert exp.sft.loss_on_prompt is False  # the project default: completion only
    rows = [{"prompt": "Question: 1 + 1\nAnswer:\n", "completion": "1 + 1 = 2\nThe answer is 2"}] * 4
    tok = train_tokenizer([r["prompt"] + r["completion"] for r in rows] * 10, 300)
    save_tiny(
        build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=len(tok)), tok, 0),
        tok,
        tmp_path / "m",
    )
    section = exp.sft.model_copy(update={"epochs": 1.0, "batch_size": 4, "loss_on_prompt": True})
    trainer = sft_trainer(tmp_path / "m", rows, tmp_path / "out", section, Precision("cpu", "float32"), seed=0)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert (batch["labels"] != -100).sum() == batch["attention_mask"].sum()  # every token, the prompt's too
    section = section.model_copy(update={"loss_on_prompt": False})
    trainer = sft_trainer(tmp_path / "m", rows, tmp_path / "out", section, Precision("cpu", "float32"), seed=0)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum()


def test_estimate_counts_optimizer_steps_from_the_global_batch():
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "sx_dagster.cli", "estimate", "--experiment", "llemma-7b-gsm8k", "--device", "cuda"],
        capture_output=True, text=True, check=True, env={**os.environ, "SX_EXPERIMENTS_FILE": str(DEFAULT_EXPERIMENTS_FILE)},
    ).stdout  # fmt: skip
    # 7,473 questions, 5 epochs at global batch 64: 117 x 5; RFT ~2 kept samples each (no gold); DPO ~0.4 pairs per question at 32
    assert "| sft_checkpoint | 8,593,950 | 585 |" in out
    assert "| rft_checkpoint | 17,187,900 | 1,170 |" in out
    assert "| DPO (x2) | 8,250,192 | 282 |" in out
