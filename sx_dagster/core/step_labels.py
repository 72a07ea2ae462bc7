"""Step labels from exploration (issue 25): what a first-pit search already proves about each step.

Exploration knows, for a rejected rationale, which step prefixes can still reach the gold answer
(a completion from there did, or a correct sampled rationale shares the prefix) and which step is
the first pit (k completions, none correct). A correct sample's steps are all good. Those are
process labels (Math-Shepherd's hard estimate; its soft estimate is the share of the k completions
that reached the gold answer), at no extra generation cost.

Rules, for a rejected rationale with first pit ``p`` (1-based):
- steps 1..``proven``: good, proven by the pool (a correct sample with the same prefix);
- a step before ``p`` with a correct completion from its prefix: good, proven by that completion;
- step ``p``: bad, proven by its k failing completions;
- a step before ``p`` neither proven nor explored (the ``binary`` strategy skips some): unlabelled;
- steps after ``p``: unlabelled (what follows a pit says nothing about those steps).
A rejected rationale without a pit labels only its proven steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SOURCES = ("correct-sample", "pool", "completion", "pit")


@dataclass(frozen=True)
class StepLabel:
    """One labelled step (1-based ``step``) of a sample, with what proves the label."""

    sample_id: str
    step: int
    text: str
    good: bool
    source: str  # one of SOURCES
    evidence: tuple[str, ...] = ()  # ids of the exploration rows that prove it (completions)
    soft: float | None = None  # share of the k completions from this prefix that were correct, when all k were drawn


@dataclass(frozen=True)
class Completion:
    """The fields of an exploration row that a label needs (``sx_dagster.core.explore.Exploration``)."""

    id: str
    step: int
    correct: bool


def label_correct_sample(sample_id: str, steps: Sequence[str]) -> list[StepLabel]:
    """Every step of a sample graded correct is good."""
    return [StepLabel(sample_id, i + 1, s, True, "correct-sample") for i, s in enumerate(steps)]


def label_rejected(
    sample_id: str, steps: Sequence[str], pit: int | None, proven: int, completions: Iterable[Completion], k: int
) -> list[StepLabel]:
    """The labels a first-pit search proves for one rejected rationale (rules in the module doc)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if pit is not None and not 1 <= pit <= len(steps):
        raise ValueError(f"{sample_id}: pit {pit} outside steps 1..{len(steps)}")
    by_step: dict[int, list[Completion]] = {}
    for c in completions:
        by_step.setdefault(c.step, []).append(c)
    last = pit if pit is not None else len(steps)
    out: list[StepLabel] = []
    for i in range(1, last + 1):
        drawn = by_step.get(i, [])
        soft = sum(c.correct for c in drawn) / k if len(drawn) == k else None
        if i == pit:
            if any(c.correct for c in drawn):
                raise ValueError(f"{sample_id}: step {i} is the pit but a completion from it is correct")
            out.append(StepLabel(sample_id, i, steps[i - 1], False, "pit", tuple(c.id for c in drawn), 0.0 if len(drawn) == k else None))
        elif i <= proven:
            out.append(StepLabel(sample_id, i, steps[i - 1], True, "pool", (), soft))
        elif any(c.correct for c in drawn):
            out.append(StepLabel(sample_id, i, steps[i - 1], True, "completion", tuple(c.id for c in drawn if c.correct), soft))
    return out


def stepwise_example(prompt: str, labels: Sequence[StepLabel]) -> dict | None:
    """One row of TRL's stepwise-supervision format (``prompt``, ``completions``, ``labels``):
    the sample's labelled steps from step 1 up to the first unlabelled one; None if step 1 is
    unlabelled."""
    by_step = {lab.step: lab for lab in labels}
    completions, flags = [], []
    i = 1
    while i in by_step:
        completions.append(by_step[i].text)
        flags.append(by_step[i].good)
        if not by_step[i].good:
            break  # nothing after a bad step is labelled
        i += 1
    return {"prompt": prompt, "completions": completions, "labels": flags} if completions else None


def agrees_with_truth(labels: Sequence[StepLabel], true_first_error: int | None) -> bool:
    """Whether a sample's labels agree with the synthetic task's true first error: every good
    step before it, the bad step at it (None: the rationale is right, so no step is bad)."""
    for lab in labels:
        if lab.good and true_first_error is not None and lab.step >= true_first_error:
            return False
        if not lab.good and lab.step != true_first_error:
            return False
    return True


def held_out(question_id: str, share: float) -> bool:
    """Whether a question's labelled rationales are held out of PRM training (its own evaluation):
    a stable hash of the id, so the split never moves when other questions come or go."""
    digest = hashlib.sha256(question_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def first_low_step(scores: Sequence[float], threshold: float) -> int | None:
    """The PRM's guess of the first error: the first step (1-based) scored below ``threshold``."""
    return next((i + 1 for i, s in enumerate(scores) if s < threshold), None)
