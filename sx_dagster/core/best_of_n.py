"""Best-of-N (issue 25): pick one of N sampled rationales per question, by a process reward
model's step scores or by majority vote over their answers, and grade the pick.

A PRM scores each step (P(step good)); a rationale's score is its lowest step score
("min", the weakest link: Lightman et al. 2023 reduce step scores this way) or its last
step's ("last": the answer line, which a PRM trained on first pits sees as bad when the
answer is wrong). Ties go to the earliest sample, so a pick never depends on dict order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

AGGREGATES = ("min", "last")


@dataclass(frozen=True)
class Candidate:
    """One sampled rationale: its parsed answer (None: none found), whether that is right, and its step scores."""

    pred: str | None
    correct: bool
    step_scores: tuple[float, ...] = ()


def rationale_score(step_scores: Sequence[float], how: str) -> float:
    """One number per rationale from its step scores; a rationale with no step scores 0."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregate {how!r}; expected one of {AGGREGATES}")
    if not step_scores:
        return 0.0
    return min(step_scores) if how == "min" else step_scores[-1]


def prm_pick(candidates: Sequence[Candidate], how: str) -> int:
    """Index of the candidate the PRM ranks first (the earliest among equals)."""
    if not candidates:
        raise ValueError("no candidates to pick from")
    scores = [rationale_score(c.step_scores, how) for c in candidates]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def majority_pick(candidates: Sequence[Candidate]) -> int:
    """Index of the first candidate with the most common answer; candidates without an answer
    do not vote (all without one: the first)."""
    if not candidates:
        raise ValueError("no candidates to pick from")
    votes = Counter(c.pred for c in candidates if c.pred is not None)
    if not votes:
        return 0
    top = max(votes.values())
    return next(i for i, c in enumerate(candidates) if c.pred is not None and votes[c.pred] == top)


def best_of_n_correct(candidates: Sequence[Candidate]) -> dict[str, bool]:
    """Whether each selection rule picks a right answer for one question: PRM (min, last),
    majority vote, pass@N (any right) and the first sample (what one sample at this temperature gets)."""
    return {
        "prm_min": candidates[prm_pick(candidates, "min")].correct,
        "prm_last": candidates[prm_pick(candidates, "last")].correct,
        "majority": candidates[majority_pick(candidates)].correct,
        "pass_at_n": any(c.correct for c in candidates),
        "first_sample": candidates[0].correct,
    }


def auc(right: Sequence[float], wrong: Sequence[float]) -> float | None:
    """The chance that a right rationale outscores a wrong one (ties count half): how well a PRM's
    rationale score separates them, whatever threshold. 0.5 is a PRM that cannot tell them apart."""
    if not right or not wrong:
        return None
    ordered = sorted([(s, 1) for s in right] + [(s, 0) for s in wrong])
    # Mann-Whitney U from ranks (ties share their average rank)
    rank_sum, i = 0.0, 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        avg = (i + 1 + j) / 2
        rank_sum += avg * sum(lab for _, lab in ordered[i:j])
        i = j
    n1, n0 = len(right), len(wrong)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)
