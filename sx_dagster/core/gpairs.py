"""Step-level preference pairs D_g-pair (paper §3.2, Eq. 3).

Given a D_pair pair (correct y_w, rejected y_l) and the first pit i of y_l:

- pit at step 1: prompt = question, chosen = y_w, rejected = step 1;
- pit at step i > 1: prompt = question + steps 1..i-1, chosen = the shortest correct
  completion explored from that prefix that was not used before for this question and does
  not contain the rejected step, rejected = step i.

Pairs of one question are then de-duplicated on (prompt, rejected).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sx_dagster.core.prompts import prefix_prompt


@dataclass(frozen=True)
class Completion:
    """One explored continuation of a prefix, graded against the gold answer."""

    id: str
    text: str
    correct: bool


@dataclass(frozen=True)
class PitRecord:
    """A rejected rationale whose first pit is known, with what it needs for a g-pair."""

    question_id: str
    question: str
    pair_id: str
    chosen_id: str  # the correct sample y_w it was paired with in D_pair
    chosen_text: str
    steps: tuple[str, ...]
    pit: int  # 1-based
    before_pit: tuple[Completion, ...] = ()  # completions from the prefix ending at step pit-1


@dataclass(frozen=True)
class GPair:
    question_id: str
    pair_id: str
    pit: int
    prompt: str
    chosen: str
    rejected: str
    chosen_source: str  # "sample" (pit at step 1) or "exploration"
    chosen_id: str


def g_pair(record: PitRecord, used: set[str], task: str) -> GPair | None:
    """The step-level pair of one pit, or None when no unused correct completion is left.

    ``used`` holds the completion texts already chosen for this question; it is updated.
    """
    if not 1 <= record.pit <= len(record.steps):
        raise ValueError(f"pit {record.pit} outside 1..{len(record.steps)} for pair {record.pair_id}")
    rejected = record.steps[record.pit - 1]
    prompt = prefix_prompt(record.question, record.steps, record.pit - 1, task)
    if record.pit == 1:
        return GPair(record.question_id, record.pair_id, 1, prompt, record.chosen_text, rejected, "sample", record.chosen_id)
    candidates = [c for c in record.before_pit if c.correct and c.text.strip() and c.text not in used and rejected.strip() not in c.text]
    if not candidates:
        return None
    best = min(candidates, key=lambda c: (len(c.text), c.id))
    used.add(best.text)
    return GPair(record.question_id, record.pair_id, record.pit, prompt, best.text, rejected, "exploration", best.id)


def build_g_pairs(records: Iterable[PitRecord], task: str) -> list[GPair]:
    """D_g-pair for a set of pits: one pair per pit where possible, de-duplicated per question."""
    used: dict[str, set[str]] = {}
    seen: set[tuple[str, str, str]] = set()
    out: list[GPair] = []
    for r in records:
        pair = g_pair(r, used.setdefault(r.question_id, set()), task)
        if pair is None:
            continue
        key = (pair.question_id, pair.prompt, pair.rejected)
        if key in seen or pair.chosen.strip() == pair.rejected.strip():
            continue
        seen.add(key)
        out.append(pair)
    return out
