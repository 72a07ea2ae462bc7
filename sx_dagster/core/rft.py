"""Rejection-sampling fine-tuning data (paper §3.1, following Yuan et al. 2023).

From the N sampled rationales of one question keep the correct ones whose calculator
annotations check out, de-duplicated, at most 8 per question. MATH follows the reference
(``gen/get_rft_data.py``, ``collect_rft_data_math``, Self-Explore commit 54b8ba9): no calculator,
only finished samples, de-duplicated by its normalized edit distance (:func:`math_distance`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from sx_dagster.core.calculator import check_annotations, check_plain_equations, equations
from sx_dagster.core.steps import ANSWER_MARKER

MAX_PER_QUESTION = 8
MATH_MIN_NORMALIZED_DISTANCE = 0.2


def math_distance(text: str, kept: str) -> float:
    """The reference's normalized edit distance for MATH de-dup, kept as it wrote it:
    ``editdistance(a, b) / (len(a) + len(b) // 2)``. ``//`` binds tighter than ``+``, so the
    denominator is the candidate's length plus half the kept sample's: not symmetric."""
    return Levenshtein.distance(text, kept) / (len(text) + len(kept) // 2)


def math_finished(text: str) -> bool:
    """Whether a MATH sample's last line states its answer. The reference skips the others
    ("likely to be repetition, or incomplete solution"); text after an earlier answer line,
    which it cuts off, is already cut at generation (``prompts.clean_completion``)."""
    return ANSWER_MARKER in text.strip().split("\n")[-1]


def math_dedup(texts: Sequence[str], indices: Sequence[int], limit: int) -> list[int]:
    """``indices`` kept in order when :func:`math_distance` to every kept one exceeds 0.2,
    at most ``limit``. The reference visits them in a random order (``set`` then
    ``random.shuffle``); sample order keeps ours reproducible."""
    kept: list[int] = []
    for i in indices:
        if len(kept) == limit:
            break
        if all(math_distance(texts[i], texts[j]) > MATH_MIN_NORMALIZED_DISTANCE for j in kept):
            kept.append(i)
    return kept


def _min_distance(text: str, kept: Sequence[str]) -> int:
    return min((Levenshtein.distance(text, k) for k in kept), default=1 << 30)


def _farthest_first(indices: list[int], texts: Sequence[str], limit: int) -> list[int]:
    """Greedy max-min edit-distance subset of ``indices`` of size ``limit``, first kept."""
    chosen = [indices[0]]
    rest = indices[1:]
    while rest and len(chosen) < limit:
        best = max(rest, key=lambda j: _min_distance(texts[j], [texts[c] for c in chosen]))
        chosen.append(best)
        rest.remove(best)
    return sorted(chosen)


def select_rft(
    samples: Sequence[str],
    correct: Sequence[bool],
    task: str,
    max_per_question: int = MAX_PER_QUESTION,
) -> list[int]:
    """Indices of the samples of one question kept for RFT, in sample order.

    GSM8K / synthetic: correct samples with valid annotations (the synthetic task's are its
    inline ``a op b = c`` equations: a right answer reached through a wrong step is not
    kept), one per distinct equation
    list (within a list, the one farthest by edit distance from those already kept), then
    the most mutually distinct ``max_per_question``. MATH: a correct sample whose last line
    states the answer is kept when :func:`math_distance` to every kept one exceeds 0.2
    (:func:`math_dedup`).
    """
    if len(samples) != len(correct):
        raise ValueError("samples and correct must have the same length")
    if task == "math":
        return math_dedup(samples, [i for i, ok in enumerate(correct) if ok and math_finished(samples[i])], max_per_question)
    valid = (lambda s: check_annotations(s) and check_plain_equations(s)) if task == "synthetic" else check_annotations
    candidates = [i for i, (s, ok) in enumerate(zip(samples, correct, strict=True)) if ok and valid(s)]
    if not candidates:
        return []
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in candidates:
        groups.setdefault(equations(samples[i]), []).append(i)
    reps: list[int] = []
    for members in groups.values():
        best = max(members, key=lambda j: _min_distance(samples[j], [samples[r] for r in reps]))
        reps.append(best)
    if len(reps) > max_per_question:
        reps = _farthest_first(reps, samples, max_per_question)
    return sorted(reps)
