"""Prompt formats shared by training, sampling, exploration and evaluation.

One format everywhere: a rationale sampled for a question continues exactly the prompt it
is later trained on, and an exploration prefix is that prompt plus the first steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sx_dagster.core.steps import join_steps, step_separator

# Generation stops here: a new question (few-shot prompts) or, for line-per-step tasks, a
# blank line means the answer is over. MATH solutions may contain blank lines.
STOP_STRINGS = {"synthetic": ("\n\n", "\nQuestion:"), "gsm8k": ("\n\n", "\nQuestion:"), "math": ("\nQuestion:",)}
_ANSWER_LINE = re.compile(r"[Tt]he answer is[^\n]*")


def question_prompt(question: str) -> str:
    """The prompt for one question; the rationale follows it, one step per line."""
    return f"Question: {question.strip()}\nAnswer:\n"


def few_shot_prompt(question: str, shots: Sequence[tuple[str, str]]) -> str:
    """Few-shot prompt for the base model: solved (question, rationale) examples first."""
    parts = [question_prompt(q) + r.strip() + "\n\n" for q, r in shots]
    return "".join(parts) + question_prompt(question)


def prefix_prompt(question: str, steps: Sequence[str], i: int, task: str) -> str:
    """Question plus steps 1..i: where the explorer continues from (paper §3.2)."""
    if i == 0:
        return question_prompt(question)
    return question_prompt(question) + join_steps(list(steps[:i]), task) + step_separator(task)


def clean_completion(text: str, task: str) -> str:
    """Cut a generated continuation at a stop string and after the answer line.

    Model output is hostile input: anything after the answer is dropped, so a grader or a
    training pair never sees it.
    """
    cut = len(text)
    for stop in STOP_STRINGS[task]:
        j = text.find(stop)
        if j >= 0:
            cut = min(cut, j)
    text = text[:cut]
    m = _ANSWER_LINE.search(text)
    if m:
        text = text[: m.end()]
    return text.rstrip()


def answer_complete(text: str, task: str) -> bool:
    """Whether a continuation is finished: a stop string, or a complete answer line."""
    if any(stop in text for stop in STOP_STRINGS[task]):
        return True
    m = _ANSWER_LINE.search(text)
    return m is not None and m.end() < len(text)  # the answer line ended with a newline
