"""Experiments: base model x task x hyperparameters, read from YAML and validated.

One experiment is one Dagster partition (its name is the partition key). Every knob of a
stage lives in its section here, with the paper's value as the default where the paper
gives one (Hwang et al. 2024, §4 and Appendix).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sx_dagster.core.estimate import ModelShape
from sx_dagster.core.pits import MAX_EXPLORED_STEPS, STRATEGIES
from sx_dagster.core.rft import MAX_PER_QUESTION
from sx_dagster.core.synthetic import SyntheticConfig

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_EXPERIMENTS_FILE = PACKAGE_DIR / "experiments" / "experiments.yaml"
DEFAULT_EXPERIMENT = "tiny-synthetic"


class ConfigError(ValueError):
    """An experiments file that cannot be used; the message names the file and the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(_Section):
    """A small Llama-style model built locally (no download)."""

    hidden_size: int = Field(192, ge=16)
    num_layers: int = Field(3, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(768, ge=16)
    vocab_size: int = Field(512, ge=64, description="target size of the locally trained BPE")
    max_position_embeddings: int = Field(512, ge=64)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self

    def shape(self) -> ModelShape:
        """Its shape for the estimate (tied embeddings, as ``ml.tiny`` builds it)."""
        return ModelShape(self.vocab_size, self.hidden_size, self.num_layers, self.intermediate_size, self.num_heads, self.num_heads, True)


class ModelSection(_Section):
    name: str = Field(description="'tiny', a Hugging Face model id, or a local model directory")
    tiny: TinyModelConfig = TinyModelConfig()
    few_shot: int = Field(4, ge=0, description="examples in the base model's few-shot eval prompt")
    # A security decision, not a hyperparameter: true lets every stage import and run the Python
    # that the model ships (auto_map in config.json / tokenizer_config.json, custom_generate/),
    # with this pipeline's permissions. False refuses such a model before anything loads.
    trust_remote_code: bool = Field(
        False,
        description="run code shipped with the model (auto_map, custom_generate); false refuses such a model. "
        "Set true only for a model whose code you have read and trust",
    )


class TaskSection(_Section):
    name: Literal["synthetic", "gsm8k", "math"]
    train_path: str | None = Field(None, description="local JSONL; else the Hub dataset is used")
    test_path: str | None = None
    hub_dataset: str | None = Field(None, description="Hub dataset 'id' or 'id:config', used when no local path is given")
    hub_test_dataset: str | None = Field(None, description="Hub dataset for the test split; None = hub_dataset")
    n_train: int | None = Field(None, ge=1, description="questions used for training (None = all)")
    n_test: int | None = Field(None, ge=1, description="test questions evaluated (None = all)")
    n_dev: int = Field(
        0,
        ge=0,
        description="dev questions held out of the training data, for choosing hyperparameters (eval.split: dev); never trained "
        "on, never the test set. Synthetic: a third generator stream; GSM8K/MATH: the last n_dev rows of the training data",
    )
    seed: int = 0
    synthetic: SyntheticConfig = Field(SyntheticConfig(), description="difficulty knobs of the synthetic task (sx_dagster.core.synthetic)")

    @model_validator(mode="after")
    def _synthetic_sizes(self) -> TaskSection:
        if self.name == "synthetic" and (self.n_train is None or self.n_test is None):
            raise ValueError("the synthetic task needs n_train and n_test")
        return self


class TrainSection(_Section):
    """Hyperparameters of one supervised stage (SFT or RFT)."""

    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    weight_decay: float = 0.0
    max_length: int = Field(512, ge=16)
    loss_on_prompt: bool = Field(
        False, description="put the loss on the prompt (the question) too: TRL's completion_only_loss=False; the reference's loss_on_prefix"
    )


class SamplingSection(_Section):
    n: int = Field(100, ge=1, description="rationales sampled per training question (paper: N=100)")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(512, ge=1)
    chunk_questions: int = Field(64, ge=1, description="questions per committed chunk (resume unit)")
    questions: int | None = Field(
        None,
        ge=1,
        description="sample (and so explore) only the first this-many training questions by id; null = all of them (the paper). "
        "SFT and RFT's gold rationales still use every training question",
    )


class RFTSection(TrainSection):
    max_per_question: int = Field(MAX_PER_QUESTION, ge=1)
    include_gold: bool = Field(
        True, description="train on the gold rationales too (Yuan et al. 2023); the reference trains on kept samples only (false)"
    )


class ExploreSection(_Section):
    k: int = Field(4, ge=1, description="completions per step prefix (paper: k=4)")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(512, ge=1)
    strategy: str = Field(
        "linear",
        description="first-pit search (sx_dagster.core.pits.ExplorationPlan): linear = the paper; early-stop = same pit, "
        "fewer draws; pool-reuse = early-stop skipping prefixes a correct sample shares; binary = bisection (may differ)",
    )
    batch: int = Field(1, ge=1, description="completions per draw for early-stop, pool-reuse and binary")
    max_steps: int = Field(
        MAX_EXPLORED_STEPS, ge=1, description="most step prefixes explored per rejected rationale, the answer line included (reference: 20)"
    )
    chunk_pairs: int = Field(64, ge=1, description="rejected rationales per committed chunk")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown exploration strategy {v!r}; expected one of {', '.join(STRATEGIES)}")
        return v


class GPairSection(_Section):
    """How D_g-pair is built from the pits (sx_dagster.core.gpairs)."""

    chosen_excludes_rejected: bool = Field(
        False,
        description="drop chosen candidates that contain the rejected step's text; false = the reference, whose test "
        "of this rule compares against a list and never filters",
    )


class DPOSection(_Section):
    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(1e-6, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    loss_type: tuple[str, ...] = ("sigmoid",)
    lr_scheduler: str = "linear"
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    optim: str = "rmsprop"
    max_length: int = Field(1024, ge=16)

    @field_validator("loss_type", mode="before")
    @classmethod
    def _as_tuple(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v


class EvalSection(_Section):
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(64, ge=1)
    split: Literal["test", "dev"] = Field(
        "test", description="the split eval_scores grades: test for the report, dev (task.n_dev > 0) while choosing hyperparameters"
    )


class PRMSection(TrainSection):
    """The process reward model (issue 25): a token-classification head on a policy's backbone,
    trained on ``step_labels`` to score each step boundary (P(step good)), and best-of-N with it.

    TRL 1.16 has no PRMTrainer: transformers' ``Trainer`` trains it, with the same precision,
    LoRA and Pipes machinery as the other stages (``sx_dagster.ml.prm``)."""

    backbone: Literal["sft", "explorer"] = Field("sft", description="start from the SFT model or the explorer (the RFT model)")
    held_out: float = Field(
        0.1, ge=0, lt=1, description="share of training questions whose labelled rationales the PRM never trains on: its own evaluation"
    )
    correct_per_question: int | None = Field(
        None, ge=1, description="correct rationales per question the PRM trains on (null: all); every rejected one always"
    )
    balance_classes: bool = Field(
        True, description="weigh good and bad steps equally in the loss (a bad step is one per rejected rationale: rare)"
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="a step scored below this is 'low': the PRM's guess of the first error")
    best_of_n: int = Field(8, ge=1, description="samples per test question that the PRM reranks (best_of_n asset)")
    temperature: float = Field(0.7, gt=0, description="sampling temperature of those samples")
    models: tuple[Literal["SFT", "Self-Explore"], ...] = Field(("SFT", "Self-Explore"), description="policies sampled for best-of-N")

    @field_validator("models", mode="before")
    @classmethod
    def _models_tuple(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v


class RoundsSection(_Section):
    """Iterative rounds (issue 26): round r+1 samples and explores with round r's Self-Explore
    model, builds new pairs and trains again (as in iterative DPO, Pang et al. 2024). Round 1 is
    the paper's single round; its assets, rows and fingerprints do not read this section. Round
    r >= 2 is a copy of the per-round assets under ``round_<r>/`` (sx_dagster/assets/_rounds.py)."""

    count: int = Field(1, ge=1, le=9, description="rounds this experiment runs; 1 = the paper (no round assets run)")
    train_from: Literal["previous", "rft", "sft"] = Field(
        "previous",
        description="what round r >= 2's DPO starts from and is regularised against: the previous round's Self-Explore model "
        "(iterative DPO), the round's own RFT model (the paper's recipe on the round's samples), or the SFT model",
    )
    pairs: Literal["replace", "accumulate"] = Field(
        "replace", description="round r's DPO trains on its own pairs (replace) or on the pairs of rounds 1..r (accumulate)"
    )


class LoRASection(_Section):
    """Low-rank adapters (PEFT) for SFT, RFT and DPO. r = 0: full fine-tuning.

    After each stage the adapter is merged into the weights, so every checkpoint is a plain
    model that generation (HF or vLLM) loads as is. With LoRA, DPO needs no reference copy:
    TRL uses the model with its adapter disabled (= the RFT model) as the reference.
    """

    r: int = Field(0, ge=0, description="adapter rank; 0 = LoRA off (full fine-tuning)")
    alpha: int = Field(32, ge=1, description="scaling: the update is alpha / r times the low-rank product")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), description="module names to adapt"
    )
    qlora: bool = Field(False, description="load the frozen base in 4-bit (bitsandbytes, CUDA only); needs r > 0")

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> LoRASection:
        if self.qlora and self.r == 0:
            raise ValueError("lora.qlora needs lora.r > 0")
        return self


class DistributedSection(_Section):
    """How training runs. ``num_processes`` > 1 or ``subprocess: true`` moves SFT, RFT and DPO
    out of the Dagster process: a Dagster Pipes subprocess (``accelerate launch`` on GPUs,
    torchrun with gloo on CPU) streams logs and metrics into the run, and its exit frees all
    GPU memory before the next stage."""

    num_processes: int = Field(1, ge=1, description="training processes (GPUs); > 1 = data parallel")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field("ddp", description="ddp | fsdp (full shard) | deepspeed (ZeRO)")
    zero_stage: Literal[1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    subprocess: bool = Field(False, description="run even single-process training as a Pipes subprocess")

    @property
    def external(self) -> bool:
        return self.subprocess or self.num_processes > 1


class ScheduleSection(_Section):
    cron: str | None = Field(None, description="cron for the scheduled rerun; None = not scheduled")
    target: Literal["eval", "all"] = "eval"


class ExperimentConfig(_Section):
    name: str
    description: str = ""
    seed: int = 0
    model: ModelSection
    task: TaskSection
    sft: TrainSection = TrainSection()
    sampling: SamplingSection = SamplingSection()
    rft: RFTSection = RFTSection()
    explore: ExploreSection = ExploreSection()
    gpair: GPairSection = GPairSection()
    dpo: DPOSection = DPOSection()
    eval: EvalSection = EvalSection()
    prm: PRMSection = PRMSection()
    rounds: RoundsSection = RoundsSection()
    lora: LoRASection = LoRASection()
    distributed: DistributedSection = DistributedSection()
    schedule: ScheduleSection = ScheduleSection()
    gen_batch_size: int = Field(64, ge=1, description="prompts per generation batch (HF backend)")

    @field_validator("name")
    @classmethod
    def _name_is_a_key(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"experiment name {v!r} must be letters, digits, '-', '_' or '.'")
        return v

    @model_validator(mode="after")
    def _dev_split_exists(self) -> ExperimentConfig:
        if self.eval.split == "dev" and self.task.n_dev == 0:
            raise ValueError("eval.split is dev but task.n_dev is 0: set task.n_dev to hold dev questions out of the training data")
        return self

    def section_dump(self, *paths: str) -> dict:
        """The config a stage reads, for fingerprints and lineage rows: the fields at the dotted
        ``paths`` (``"dpo"``, ``"dpo.max_length"``), nested as in the YAML. A path that names
        no field raises KeyError: a stage cannot fingerprint a field it misspells."""
        full, out = self.model_dump(mode="json"), {}
        for path in sorted(paths):
            *parents, leaf = path.split(".")
            src, dst = full, out
            for key in parents:
                src, dst = src[key], dst.setdefault(key, {})
            dst[leaf] = src[leaf]
        return out


def experiments_file() -> Path:
    return Path(os.environ.get("SX_EXPERIMENTS_FILE", DEFAULT_EXPERIMENTS_FILE))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# libyaml's loader where PyYAML has it: every Dagster process (run worker, step, code server)
# reads the experiments file several times at import, and the pure-Python loader is ~10x slower.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_experiments(path: str | Path | None = None) -> dict[str, ExperimentConfig]:
    """All experiments of a YAML file, by name. ``defaults:`` is merged under each entry.

    Raises :class:`ConfigError` naming the file, the experiment and the bad field.
    """
    p = Path(path) if path is not None else experiments_file()
    try:
        raw = yaml.load(p.read_text(), Loader=_YAML_LOADER)
    except FileNotFoundError:
        raise ConfigError(f"{p}: experiments file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("experiments"), dict) or not raw["experiments"]:
        raise ConfigError(f"{p}: expected a mapping with a non-empty 'experiments:' mapping")
    defaults = raw.get("defaults") or {}
    out: dict[str, ExperimentConfig] = {}
    for name, body in raw["experiments"].items():
        if not isinstance(body, dict):
            raise ConfigError(f"{p}: experiment {name!r}: expected a mapping")
        merged = _merge(defaults, {**body, "name": name})
        task = merged.get("task")
        if isinstance(task, dict):
            # Local data paths are relative to the experiments file, not to the current directory.
            for key in ("train_path", "test_path"):
                if isinstance(task.get(key), str):
                    task[key] = str((p.parent / os.path.expandvars(task[key])).resolve())
        try:
            out[name] = ExperimentConfig(**merged)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"{p}: experiment {name!r}: {problems}") from None
    return out


def get_experiment(name: str, path: str | Path | None = None) -> ExperimentConfig:
    experiments = load_experiments(path)
    if name not in experiments:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(experiments))}")
    return experiments[name]
