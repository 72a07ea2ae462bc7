"""Outcome-level preference pairs D_pair (paper §3.1).

Each RFT-kept correct sample is paired with a wrong sample of the same question: the wrong
one farthest from it by edit distance, each wrong one used at most once.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein


def outcome_pairs(chosen: Sequence[str], wrong: Sequence[str], task: str) -> list[tuple[int, int]]:
    """(index into ``chosen``, index into ``wrong``) pairs for one question.

    Chosen samples are taken in order; each gets the unused wrong sample at the largest
    edit distance (MATH: normalized distance, as its rationales vary more in length).
    Identical wrong texts count once. Pairing stops when the wrong samples run out.
    """
    distance = Levenshtein.normalized_distance if task == "math" else Levenshtein.distance
    seen: set[str] = set()
    pool: list[int] = []
    for j, w in enumerate(wrong):
        if w not in seen:
            seen.add(w)
            pool.append(j)
    pairs: list[tuple[int, int]] = []
    for i, c in enumerate(chosen):
        if not pool:
            break
        j = max(pool, key=lambda j: distance(c, wrong[j]))
        pool.remove(j)
        pairs.append((i, j))
    return pairs
