"""Task examples: the synthetic task, GSM8K and MATH rows, and their JSONL loaders.

The loaders read the row formats of the Self-Explore release (GSM8K: ``query`` /
``response`` with "#### N"; MATH: ``question`` / ``answer`` ending "The answer is: X") and
also the Hugging Face column names (``question`` / ``answer``, ``problem`` / ``solution``).
A malformed row raises :class:`DatasetError` naming the file and line; nothing is skipped
silently. So do bytes that are not UTF-8, a file with no rows, and a question or gold
rationale longer than :data:`MAX_FIELD_CHARS` characters (20,000: ten times the longest
GSM8K or MATH500 field; a longer one is a broken row, and would make tokenizer training and
prompts crawl).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sx_dagster.core.answers import _last_boxed, extract_answer
from sx_dagster.core.synthetic import SyntheticConfig, generate_problems

_GSM8K_GOLD_LINE = re.compile(r"\n?####\s*([^\n]*)\s*$")
MAX_FIELD_CHARS = 20_000  # longest question or gold rationale accepted (longest in GSM8K/MATH500: 3,382)


class DatasetError(ValueError):
    """A dataset row that cannot be used; the message names where it is."""


@dataclass(frozen=True)
class TaskExample:
    id: str
    split: str  # "train", "dev" (held out of the training data, for choosing hyperparameters) or "test"
    question: str
    rationale: str | None  # gold rationale in the model's output format, if the task has one
    answer: str  # gold final answer, normalized
    meta: str = "{}"  # JSON; the synthetic task stores its problem here


def _check_length(where: str, field: str, text: str) -> None:
    if len(text) > MAX_FIELD_CHARS:
        raise DatasetError(f"{where}: {field} of {len(text):,} characters, over the limit of {MAX_FIELD_CHARS:,} (MAX_FIELD_CHARS)")


def gsm8k_example(row: dict, where: str, split: str, index: int) -> TaskExample:
    """A GSM8K row -> example; the gold line "#### N" becomes "The answer is N"."""
    question = row.get("query", row.get("question"))
    response = row.get("response", row.get("answer"))
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: missing or empty question ('query' or 'question')")
    if not isinstance(response, str):
        raise DatasetError(f"{where}: missing response ('response' or 'answer')")
    _check_length(where, "question", question)
    _check_length(where, "response", response)
    m = _GSM8K_GOLD_LINE.search(response)
    answer = extract_answer(response, "gsm8k")
    if m is None or answer is None:
        raise DatasetError(f"{where}: no gold answer line '#### N' in the response")
    rationale = response[: m.start()].rstrip() + f"\nThe answer is {answer}"
    return TaskExample(f"gsm8k-{split}-{index}", split, question.strip(), rationale.strip(), answer)


def math_example(row: dict, where: str, split: str, index: int) -> TaskExample:
    """A MATH row -> example; gold from "The answer is: X", else the last \\boxed{}."""
    question = row.get("question", row.get("problem"))
    # Self-Explore/MetaMath rows: 'answer' is the solution. Hub rows: 'solution' + short 'answer'.
    solution = row.get("solution", row.get("answer"))
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: missing or empty question ('question' or 'problem')")
    if not isinstance(solution, str) or not solution.strip():
        raise DatasetError(f"{where}: missing solution ('answer' or 'solution')")
    _check_length(where, "question", question)
    _check_length(where, "solution", solution)
    if "solution" in row and isinstance(row.get("answer"), str) and row["answer"].strip():
        answer = row["answer"].strip()
    else:
        answer = extract_answer(solution, "math") if "The answer is" in solution else _last_boxed(solution)
    if not answer:
        raise DatasetError(f"{where}: no final answer ('The answer is: X' or \\boxed{{}}) in the solution")
    rationale = solution.strip()
    if "The answer is" not in rationale:
        rationale += f"\nThe answer is: {answer}"
    return TaskExample(f"math-{split}-{index}", split, question.strip(), rationale, answer)


_ROW_PARSERS = {"gsm8k": gsm8k_example, "math": math_example}


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad JSON or bytes that are not UTF-8
    name file and line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: no such file")
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM may open the file
            except UnicodeDecodeError as e:
                raise DatasetError(f"{p}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{p}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def examples_from_rows(rows: Iterable[tuple[str, dict]], task: str, split: str, limit: int | None = None) -> list[TaskExample]:
    """Parse (where, row) pairs of a real task; ``where`` names the row in errors."""
    if task not in _ROW_PARSERS:
        raise ValueError(f"task {task!r} has no row format; expected one of {sorted(_ROW_PARSERS)}")
    out = []
    for i, (where, row) in enumerate(rows):
        if limit is not None and i >= limit:
            break
        out.append(_ROW_PARSERS[task](row, where, split, i))
    return out


def load_jsonl(path: str | Path, task: str, split: str, limit: int | None = None) -> list[TaskExample]:
    """Examples of ``task`` from a local JSONL file (e.g. ``../shared/data/gsm8k/train.jsonl``).
    A file with no rows is an error naming it."""
    rows = ((f"{path}:{lineno}", obj) for lineno, obj in read_jsonl(path))
    out = examples_from_rows(rows, task, split, limit)
    if not out:
        raise DatasetError(f"{path}: no rows (empty file)")
    return out


# The synthetic task's generator seeds per split: train and test as they always were, dev from
# a third stream (an i.i.d. sample of the training distribution that is neither trained on nor the
# test set; drawn apart so that changing n_train leaves it unchanged).
_DEV_SEED = 1_000_000


def synthetic_split(n: int, task_seed: int, split: str, config: SyntheticConfig | None = None) -> list[TaskExample]:
    """The synthetic task's ``split`` ("train", "dev" or "test") for ``task.seed``, each from its own seed."""
    seeds = {"train": task_seed * 2, "test": task_seed * 2 + 1, "dev": _DEV_SEED + task_seed}
    if split not in seeds:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(seeds)}")
    return synthetic_examples(n, seeds[split], split, config)


def carve_dev(train: list[TaskExample], n_dev: int, where: str) -> tuple[list[TaskExample], list[TaskExample]]:
    """(train, dev): the last ``n_dev`` training examples become the dev split, never trained on.
    Too few training rows to leave any for training is an error naming ``where``."""
    if n_dev <= 0:
        return train, []
    if n_dev >= len(train):
        raise DatasetError(f"{where}: n_dev = {n_dev} leaves no training questions (the training data has {len(train)})")
    dev = [TaskExample(e.id, "dev", e.question, e.rationale, e.answer, e.meta) for e in train[-n_dev:]]
    return train[:-n_dev], dev


def synthetic_examples(n: int, seed: int, split: str, config: SyntheticConfig | None = None) -> list[TaskExample]:
    """Seeded synthetic examples; train and test use disjoint seeds and ids."""
    problems = generate_problems(n, seed, config, prefix=f"syn-{split}")
    return [TaskExample(p.id, split, p.question, p.rationale, p.answer, p.to_json()) for p in problems]
