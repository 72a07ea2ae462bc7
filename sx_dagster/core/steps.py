"""Splitting a rationale into steps (paper §3.2: a step is one line for GSM8K).

Prefixes handed to the explorer are built from these steps, so splitting must be exact:

- ``gsm8k`` / ``synthetic``: one non-empty line is one step. ``join_steps(split_steps(t))``
  equals ``t`` with blank lines and trailing whitespace of each line removed
  (:func:`normalize_lines`), and ``split_steps(join_steps(s)) == s`` for non-empty
  single-line steps.
- ``math``: the reference heuristic; steps are exact substrings (each keeps its trailing
  whitespace), so ``"".join(split_steps(t, "math")) == t`` with no normalization at all.
"""

from __future__ import annotations

from sx_dagster.core.answers import TASKS

MATH_MIN_STEP_CHARS = 20
MATH_MIN_STEP_FRACTION = 0.3
MATH_MAX_STEPS = 9


def normalize_lines(text: str) -> str:
    """The form in which a line-split rationale round-trips: no blank lines, no trailing
    whitespace on lines, no leading/trailing whitespace overall."""
    return "\n".join(line.rstrip() for line in text.strip().split("\n") if line.strip())


def split_steps(rationale: str, task: str) -> list[str]:
    """Steps of a rationale: lines for GSM8K/synthetic, the reference heuristic for MATH."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if not rationale or not rationale.strip():
        return []
    if task == "math":
        return _split_math(rationale)
    return normalize_lines(rationale).split("\n")


def join_steps(steps: list[str], task: str) -> str:
    """Inverse of :func:`split_steps` (see the module docstring for what is normalized)."""
    return "".join(steps) if task == "math" else "\n".join(steps)


def step_separator(task: str) -> str:
    """What follows a step inside a rationale, so a prefix ends where the next step starts."""
    return "" if task == "math" else "\n"


def _math_fragments(text: str) -> list[str]:
    """Exact substrings cut after newlines and after sentence ends outside ``$...$``."""
    cuts = []
    in_math = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            i += 2
            continue
        if c == "$":
            in_math = not in_math
        end_sentence = c == "." and not in_math and (i + 1 == n or text[i + 1].isspace())
        # "$." and ".$" count as sentence ends near math: the reference split there too.
        if c == "$" and not in_math and i > 0 and text[i - 1] == "." and (i + 1 == n or text[i + 1].isspace()):
            end_sentence = True
        if c == "\n" or end_sentence:
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            cuts.append(j)
            i = j
            continue
        i += 1
    # "The answer is" always starts its own final step.
    answer_at = text.rfind("The answer is")
    if answer_at >= 0:
        cuts.append(answer_at)
    bounds = sorted({0, *[c for c in cuts if 0 < c < n], n})
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _split_math(text: str) -> list[str]:
    frags = _math_fragments(text)
    answer = frags.pop() if frags and frags[-1].lstrip().startswith("The answer is") else None
    if frags:
        mean = sum(len(f.strip()) for f in frags) / len(frags)
        threshold = max(MATH_MIN_STEP_CHARS, MATH_MIN_STEP_FRACTION * mean)
        merged: list[str] = []
        for f in frags:
            if merged and (len(merged[-1].strip()) < threshold or len(f.strip()) < threshold):
                merged[-1] += f
            else:
                merged.append(f)
        frags = merged
        while len(frags) > MATH_MAX_STEPS - (answer is not None):
            # Merge the adjacent pair with the smallest combined length.
            j = min(range(len(frags) - 1), key=lambda k: len(frags[k]) + len(frags[k + 1]))
            frags[j : j + 2] = [frags[j] + frags[j + 1]]
    if answer is not None:
        frags.append(answer)
    return frags
