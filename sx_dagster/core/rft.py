"""Rejection-sampling fine-tuning data (paper §3.1, following Yuan et al. 2023).

From the N sampled rationales of one question keep the correct ones whose calculator
annotations check out, de-duplicated, at most 8 per question.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from sx_dagster.core.calculator import check_annotations, check_plain_equations, equations

MAX_PER_QUESTION = 8
MATH_MIN_NORMALIZED_DISTANCE = 0.2


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
    the most mutually distinct ``max_per_question``. MATH: a correct sample is kept when
    its normalized edit distance to every kept one exceeds 0.2.
    """
    if len(samples) != len(correct):
        raise ValueError("samples and correct must have the same length")
    valid = (lambda s: check_annotations(s) and check_plain_equations(s)) if task == "synthetic" else check_annotations
    candidates = [i for i, (s, ok) in enumerate(zip(samples, correct, strict=True)) if ok and valid(s)]
    if not candidates:
        return []
    if task == "math":
        kept: list[int] = []
        for i in candidates:
            if all(Levenshtein.normalized_distance(samples[i], samples[j]) > MATH_MIN_NORMALIZED_DISTANCE for j in kept):
                kept.append(i)
            if len(kept) == max_per_question:
                break
        return kept
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
