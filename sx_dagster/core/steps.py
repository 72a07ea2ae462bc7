"""Splitting a rationale into steps (paper §3.2: a step is one line for GSM8K).

Prefixes handed to the explorer are built from these steps, so splitting must be exact:

- ``gsm8k`` / ``synthetic``: one non-empty line is one step. ``join_steps(split_steps(t))``
  equals ``t`` with blank lines and trailing whitespace of each line removed
  (:func:`normalize_lines`), and ``split_steps(join_steps(s)) == s`` for non-empty
  single-line steps.
- ``math``: the reference's rules (``gen/utils_others.py``, ``get_final_steps``, Self-Explore
  commit 54b8ba9), re-implemented: steps are exact substrings (each keeps its trailing
  whitespace), so ``"".join(split_steps(t, "math")) == t`` with no normalization at all.
  On the 500 MATH-500 solutions this gives the reference's steps on all 500
  (``benchmarks/math_split_diff.py``).
"""

from __future__ import annotations

import re

from sx_dagster.core.answers import TASKS

MATH_MIN_STEP_CHARS = 20  # a piece shorter than this joins the previous one
MATH_MIN_STEP_FRACTION = 0.3  # ... and so does one shorter than this fraction of the mean
MATH_MAX_STEPS = 9  # before the answer line is split off, so up to 10 steps in all
MATH_FURTHER_MAX_STEPS = 3  # solutions with this many steps or fewer are split once more
# Where a step of a short solution may be cut in two (right after the marker).
MATH_FURTHER_MARKERS = (",$", ", which", " so", " = ", " and", "Thus", "=")
ANSWER_MARKER = "The answer is"

# A line is cut after ".$" or "$." followed by whitespace (the whitespace stays with the
# piece before); lines are cut at "\n\n" or "\n", which become pieces of their own.
_LINE_BREAK = re.compile(r"(\n\n|\n)")
# The reference matches ".*?(?:\.[$]\s+|[$]\.\s+)" repeatedly: its pieces end right after
# each leftmost cut point found below. Searching for the cut points alone gives the same
# pieces in linear time (the lazy ".*?" is quadratic on a long line with no cut point).
_CUT = re.compile(r"\.\$\s+|\$\.\s+")


def normalize_lines(text: str) -> str:
    """The form in which a line-split rationale round-trips: no blank lines, no trailing
    whitespace on lines, no leading/trailing whitespace overall."""
    return "\n".join(line.rstrip() for line in text.strip().split("\n") if line.strip())


def split_steps(rationale: str, task: str) -> list[str]:
    """Steps of a rationale: lines for GSM8K/synthetic, the reference's rules for MATH."""
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


def _math_pieces(text: str) -> list[str]:
    """Line breaks as pieces of their own, and each line cut after ``.$`` / ``$.`` + spaces."""
    pieces: list[str] = []
    for part in _LINE_BREAK.split(text):
        if not part:
            continue
        if part[0] == "\n":
            pieces.append(part)
            continue
        end = 0
        for m in _CUT.finditer(part):
            pieces.append(part[end : m.end()])
            end = m.end()
        if end < len(part):
            pieces.append(part[end:])
    return pieces


def _merge_into_neighbour(parts: list[str], i: int) -> int:
    """Merge ``parts[i]`` with its shorter neighbour (the next one on a tie, or when it is the
    first); return the index of the merged step."""
    if i > 0 and (i == len(parts) - 1 or len(parts[i - 1]) < len(parts[i + 1])):
        parts[i - 1] += parts.pop(i)
        return i - 1
    parts[i] += parts.pop(i + 1)
    return i


def _merge_short(pieces: list[str]) -> list[str]:
    # First pass: blank and short pieces (line breaks included) join the previous piece.
    parts: list[str] = []
    for p in pieces:
        if parts and (not p.strip() or len(p) < MATH_MIN_STEP_CHARS):
            parts[-1] += p
        else:
            parts.append(p)
    # Second pass: a part under 30% of the mean length (of the first pass) joins its shorter
    # neighbour; the merged part is looked at again.
    threshold = MATH_MIN_STEP_FRACTION * sum(map(len, parts)) / len(parts)
    i = 0
    while i < len(parts):
        if len(parts[i]) < threshold:  # never the only part: that one is the whole length
            i = _merge_into_neighbour(parts, i)
        else:
            i += 1
    # At most MATH_MAX_STEPS: the shortest part (the first of equals) joins its shorter neighbour.
    while len(parts) > MATH_MAX_STEPS:
        _merge_into_neighbour(parts, min(range(len(parts)), key=lambda k: len(parts[k])))
    return parts


def _split_off_answer(parts: list[str]) -> None:
    """The answer line becomes the last step when it shares the last part with other text;
    what stays before it joins the previous step when under MATH_MIN_STEP_CHARS."""
    last = parts[-1]
    at = last.find(ANSWER_MARKER)
    if at <= 0:
        return
    head, answer = last[:at], last[at:]
    if len(parts) > 1 and len(head) < MATH_MIN_STEP_CHARS:
        parts[-2] += head
        parts[-1] = answer
    else:
        parts[-1] = head
        parts.append(answer)


def _halve(step: str) -> list[str]:
    """Cut a step right after the marker occurrence nearest its middle (the earlier one on a
    tie), when both halves are over MATH_MIN_STEP_CHARS; else keep it whole."""
    cuts = sorted(m.start() + len(marker) for marker in MATH_FURTHER_MARKERS for m in re.finditer(f"(?={re.escape(marker)})", step))
    if not cuts:
        return [step]
    cut = min(cuts, key=lambda c: abs(c - (len(step) - c)))  # min keeps the first of equals
    if cut > MATH_MIN_STEP_CHARS and len(step) - cut > MATH_MIN_STEP_CHARS:
        return [step[:cut], step[cut:]]
    return [step]


def _split_math(text: str) -> list[str]:
    parts = _merge_short(_math_pieces(text))
    _split_off_answer(parts)
    if len(parts) <= MATH_FURTHER_MAX_STEPS:
        # "process_further": a short solution gives the explorer few prefixes, so each step
        # (the answer line included) is cut once more where that balances the halves.
        parts = [half for p in parts for half in (_halve(p) if len(p) >= MATH_MIN_STEP_CHARS else [p])]
    return parts
