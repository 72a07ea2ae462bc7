"""Experiment files: the shipped grid loads; bad files fail with the file, experiment and field."""

import pytest

from sx_dagster.config import DEFAULT_EXPERIMENTS_FILE, ConfigError, get_experiment, load_experiments


def test_shipped_experiments_hold_the_paper_grid():
    exps = load_experiments(DEFAULT_EXPERIMENTS_FILE)
    assert set(exps) == {"tiny-synthetic", "tiny-transfers", "synthetic-gpu"} | {
        f"{m}-{t}" for m in ("mistral-7b", "llemma-7b", "deepseek-math-7b") for t in ("gsm8k", "math")
    }
    m = exps["mistral-7b-gsm8k"]
    assert (m.sampling.n, m.sampling.temperature, m.explore.k, m.dpo.beta, m.dpo.epochs) == (100, 0.7, 4, 0.1, 3)
    assert m.dpo.learning_rate == 1e-7 and exps["deepseek-math-7b-gsm8k"].dpo.learning_rate == 1e-6
    assert exps["mistral-7b-math"].sampling.max_new_tokens == 1024
    assert exps["tiny-synthetic"].model.name == "tiny"
    # the default reports on test and holds a dev split out for its choices
    assert exps["tiny-synthetic"].task.n_dev > 0 and exps["tiny-synthetic"].eval.split == "test"
    math = exps["llemma-7b-math"].task
    assert math.hub_dataset == "DigitalLearningGmbH/MATH-lighteval:default" and math.hub_test_dataset == "HuggingFaceH4/MATH-500"


def _write(tmp_path, text):
    p = tmp_path / "exps.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("experiments: {}", "non-empty 'experiments:'"),
        ("experiments: [", "invalid YAML"),
        ("experiments:\n  x:\n    model: {name: tiny}\n    task: {name: gsm9k}\n", r"experiment 'x': task\.name"),
        (
            "experiments:\n  x:\n    model: {name: tiny, tiny: {hidden_size: 30, num_heads: 4}}\n"
            "    task: {name: synthetic, n_train: 1, n_test: 1}\n",
            "not divisible by num_heads",
        ),
        (
            "experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n    sampling: {n: 0}\n",
            r"sampling\.n",
        ),
        (
            "experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n    explore: {kk: 3}\n",
            r"explore\.kk: Extra inputs",
        ),
        ("experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic}\n", "needs n_train and n_test"),
        (
            "experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n    lora: {qlora: true}\n",
            r"lora: .*qlora needs lora\.r > 0",
        ),
        (
            "experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n"
            "    distributed: {num_processes: 2, strategy: horovod}\n",
            r"distributed\.strategy",
        ),
        (
            "experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n"
            "    explore: {strategy: psychic}\n",
            r"explore\.strategy",
        ),
        ("experiments:\n  'bad name':\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n", "must be letters"),
        (
            "experiments:\n  x:\n    model: {name: tiny}\n    task: {name: synthetic, n_train: 1, n_test: 1}\n    eval: {split: dev}\n",
            "eval.split is dev but task.n_dev is 0",
        ),
    ],
)
def test_bad_files_name_file_experiment_and_field(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as e:
        load_experiments(p)
    assert str(p) in str(e.value)


def test_unknown_experiment_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment 'nope'; known: .*tiny-synthetic"):
        get_experiment("nope", DEFAULT_EXPERIMENTS_FILE)
    with pytest.raises(ConfigError, match="not found"):
        load_experiments(tmp_path / "missing.yaml")


def test_local_paths_are_relative_to_the_file(tmp_path):
    p = _write(tmp_path, "experiments:\n  g:\n    model: {name: tiny}\n    task: {name: gsm8k, train_path: data/t.jsonl}\n")
    assert load_experiments(p)["g"].task.train_path == str(tmp_path / "data" / "t.jsonl")
