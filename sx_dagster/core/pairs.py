"""Outcome-level preference pairs D_pair (paper §3.1).

Each RFT-kept correct sample is paired with a wrong sample of the same question, each wrong
one used at most once (``gen/get_dpo_data.py``, Self-Explore commit 54b8ba9):

- GSM8K / synthetic (``collect_dpo_gsm8k``): the wrong one farthest by edit distance.
- MATH (``collect_dpo_math``): the shortest wrong one whose normalized distance to the chosen
  exceeds 0.5, else 0.4, else 0.3, else the shortest of all: far from the chosen, but short,
  so a degenerate (repeating) sample is not the one picked. The wrong samples are first
  filtered and de-duplicated as the reference does for RFT, at most 24.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from sx_dagster.core.rft import MAX_PER_QUESTION, math_dedup, math_finished

MATH_PAIR_TIERS = (0.5, 0.4, 0.3)
MATH_MAX_WRONG = 3 * MAX_PER_QUESTION  # the reference's remove_dup(incorr, N=MAX_SAMPLES * 3)


def math_pair_distance(chosen: str, wrong: str) -> float:
    """D_pair's normalized distance (not the RFT one): edit distance over the summed lengths."""
    return Levenshtein.distance(chosen, wrong) / (len(chosen) + len(wrong))


def outcome_pairs(chosen: Sequence[str], wrong: Sequence[str], task: str) -> list[tuple[int, int]]:
    """(index into ``chosen``, index into ``wrong``) pairs for one question.

    Chosen samples are taken in order, each with an unused wrong sample (see the module
    docstring for which). Identical wrong texts count once. Pairing stops when the wrong
    samples run out.
    """
    if task == "math":
        pool = math_dedup(wrong, [j for j, w in enumerate(wrong) if math_finished(w)], MATH_MAX_WRONG)
    else:
        seen: set[str] = set()
        pool = []
        for j, w in enumerate(wrong):
            if w not in seen:
                seen.add(w)
                pool.append(j)
    pairs: list[tuple[int, int]] = []
    for i, c in enumerate(chosen):
        if not pool:
            break
        j = _math_rejected(c, wrong, pool) if task == "math" else max(pool, key=lambda j: Levenshtein.distance(c, wrong[j]))
        pool.remove(j)
        pairs.append((i, j))
    return pairs


def _math_rejected(chosen: str, wrong: Sequence[str], pool: list[int]) -> int:
    distance = {j: math_pair_distance(chosen, wrong[j]) for j in pool}
    # The reference sorts by distance, then (stably) by length: the shortest, the nearer of
    # equally short ones; equal in both, the earlier sample (the reference's is set order).
    for tier in MATH_PAIR_TIERS:
        far = [j for j in pool if distance[j] > tier]
        if far:
            return min(far, key=lambda j: (len(wrong[j]), distance[j]))
    return min(pool, key=lambda j: (len(wrong[j]), distance[j]))
