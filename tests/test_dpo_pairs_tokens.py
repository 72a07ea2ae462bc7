"""DPO sees a pair as the reference trained on it (hbin0701/Self-Explore, dpo/prepare_dataset.py
and dpo/custom_trainer.py): EOS ends the chosen, never the rejected, and a multi-line rejected
loses its answer line. Checked on the token ids TRL's DPOTrainer actually trains on."""

from pathlib import Path

import pytest
import torch

from sx_dagster.config import DPOSection, TinyModelConfig
from sx_dagster.core.dpo_text import rejected_for_dpo
from sx_dagster.ml.tiny import build_tiny_model, save_tiny, train_tokenizer
from sx_dagster.ml.training import Precision, dpo_trainer, train_dpo

PROMPT = "Question: 2 + 3 + 4?\nAnswer:\n"
CHOSEN = "2 + 3 = 5\n5 + 4 = 9\nThe answer is 9"
STEP_REJECTED = "2 + 3 = 6"  # a g-pair: the pit step alone
LONG_REJECTED = "2 + 3 = 6\n6 + 4 = 10\nThe answer is 10"  # an outcome pair: a whole wrong rationale


def test_the_answer_line_rule_is_the_references():
    # hand-checked against prepare_dataset.py: rej[:rej.index("The answer is")].strip() when rej has > 1 line
    assert rejected_for_dpo(LONG_REJECTED) == "2 + 3 = 6\n6 + 4 = 10"
    assert rejected_for_dpo(STEP_REJECTED) == STEP_REJECTED
    assert rejected_for_dpo("The answer is 10") == "The answer is 10"  # one line: kept, even an answer line
    assert rejected_for_dpo("a = 1\nThe answer is 1\nb = 2") == "a = 1"  # everything from the first marker on goes
    assert rejected_for_dpo("a = 1\nb = 2") == "a = 1\nb = 2"  # no answer line: unchanged


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    tok = train_tokenizer([PROMPT + CHOSEN, PROMPT + LONG_REJECTED] * 20, 300)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=len(tok))
    save_tiny(build_tiny_model(cfg, tok, seed=0), tok, path)
    return path


def _section() -> DPOSection:
    return DPOSection(epochs=1, batch_size=2, learning_rate=1e-4, max_length=128)


def test_trl_trains_on_chosen_with_eos_and_rejected_without(tiny, tmp_path):
    rows = [
        {"prompt": PROMPT, "chosen": CHOSEN, "rejected": STEP_REJECTED},
        {"prompt": PROMPT, "chosen": CHOSEN, "rejected": LONG_REJECTED},
    ]
    trainer, _, tok = dpo_trainer(tiny, tiny, rows, tmp_path, _section(), Precision("cpu", "float32"), seed=0)
    eos = tok.eos_token_id
    data = trainer.train_dataset
    for ex in data:
        assert ex["chosen_ids"][-1] == eos
        assert eos not in ex["rejected_ids"]
    assert tok.decode(data[0]["rejected_ids"]).replace(" ", "") == STEP_REJECTED.replace(" ", "")
    long_rejected = tok.decode(data[1]["rejected_ids"])
    assert "answer" not in long_rejected and long_rejected.replace(" ", "").endswith("6+4=10")

    # The collated batch: rows [chosen..., rejected...]; the last attended completion token
    batch = trainer.data_collator([data[0], data[1]])
    last = batch["attention_mask"].sum(dim=1) - 1
    ends = batch["input_ids"][torch.arange(len(last)), last]
    assert ends[:2].tolist() == [eos, eos]  # the chosen end on EOS
    assert eos not in ends[2:].tolist()  # the rejected do not
    assert batch["completion_mask"][2:].sum(dim=1).tolist() == [len(data[0]["rejected_ids"]), len(data[1]["rejected_ids"])]


def test_train_dpo_runs_on_the_reference_view(tiny, tmp_path):
    rows = [{"prompt": PROMPT, "chosen": CHOSEN, "rejected": STEP_REJECTED}] * 4
    result = train_dpo(tiny, tiny, rows, tmp_path, _section(), Precision("cpu", "float32"), seed=0)
    assert result.steps == 2 and result.final_loss is not None
    assert (tmp_path / "model.safetensors").exists()
