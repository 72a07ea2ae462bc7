"""Step-level preference pairs D_g-pair (paper §3.2, Eq. 3).

Given a D_pair pair (correct y_w, rejected y_l) and the first pit i of y_l:

- pit at step 1: prompt = question, chosen = y_w, rejected = step 1;
- pit at step i > 1: prompt = question + steps 1..i-1, chosen = the shortest correct
  completion from that prefix that was not used before for this question, rejected = step i.
  The completions are the explorer's (``source = "exploration"``) or, where a correct sampled
  rationale proved the prefix so it was never explored (``pool-reuse``), that rationale's own
  continuation after the shared prefix (``source = "pool"``).

The reference (gen/utils_others.py ``form_gpair``) also tests "chosen must not contain the
rejected step", but against the list of candidates, so it never filters; that filter is
optional here (``chosen_excludes_rejected``, off = the reference). De-duplication follows the
reference: per question, in order, a pair is kept only when neither its chosen nor its
rejected text was kept before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sx_dagster.core.pits import shared_prefix
from sx_dagster.core.prompts import prefix_prompt
from sx_dagster.core.steps import join_steps

# Why a pit gives no pair, in the order the rules are applied.
NO_CORRECT_COMPLETION = "no_correct_completion"  # nothing correct from the prefix before the pit
ALL_USED = "all_correct_completions_used"  # every correct one was already chosen for the question
CONTAINS_REJECTED = "chosen_contains_rejected"  # the optional filter removed the rest
CHOSEN_IS_REJECTED = "chosen_equals_rejected"
DUPLICATE = "duplicate_chosen_or_rejected"  # de-dup: the question already has this chosen or rejected


@dataclass(frozen=True)
class Completion:
    """One correct-or-not continuation of a prefix, graded against the gold answer."""

    id: str
    text: str
    correct: bool
    source: str = "exploration"  # or "pool": a correct sampled rationale's continuation


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
    before_pit: tuple[Completion, ...] = ()  # continuations of the prefix ending at step pit-1


@dataclass(frozen=True)
class GPair:
    question_id: str
    pair_id: str
    pit: int
    prompt: str
    chosen: str
    rejected: str
    chosen_source: str  # "sample" (pit at step 1), "exploration" or "pool"
    chosen_id: str


@dataclass
class GPairs:
    """D_g-pair with the reason each pit without a pair has none."""

    pairs: list[GPair] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


def pool_continuations(steps: Sequence[str], pit: int, correct: Iterable[tuple[str, Sequence[str]]], task: str) -> tuple[Completion, ...]:
    """The continuations, after steps 1..pit-1, of the correct sampled rationales ``(id, steps)``
    that share those steps: correct completions of the prefix before the pit that nobody had to
    generate. Used where ``pool-reuse`` skipped exploring that prefix because of them."""
    n = pit - 1
    out = []
    for sid, other in correct:
        if n >= 1 and len(other) > n and shared_prefix(steps[:n], other) == n:
            out.append(Completion(sid, join_steps(list(other[n:]), task), True, "pool"))
    return tuple(out)


def g_pair(record: PitRecord, used: set[str], task: str, chosen_excludes_rejected: bool = False) -> GPair | str:
    """The step-level pair of one pit, or the reason (one of this module's constants) it has none.

    ``used`` holds the completion texts already chosen for this question; it is updated.
    ``chosen_excludes_rejected`` drops candidates that contain the rejected step's text.
    """
    if not 1 <= record.pit <= len(record.steps):
        raise ValueError(f"pit {record.pit} outside 1..{len(record.steps)} for pair {record.pair_id}")
    rejected = record.steps[record.pit - 1]
    prompt = prefix_prompt(record.question, record.steps, record.pit - 1, task)
    if record.pit == 1:
        return GPair(record.question_id, record.pair_id, 1, prompt, record.chosen_text, rejected, "sample", record.chosen_id)
    candidates = [c for c in record.before_pit if c.correct and c.text.strip()]
    if not candidates:
        return NO_CORRECT_COMPLETION
    candidates = [c for c in candidates if c.text not in used]
    if not candidates:
        return ALL_USED
    if chosen_excludes_rejected:
        candidates = [c for c in candidates if rejected.strip() not in c.text]
        if not candidates:
            return CONTAINS_REJECTED
    best = min(candidates, key=lambda c: (len(c.text), c.id))
    used.add(best.text)
    return GPair(record.question_id, record.pair_id, record.pit, prompt, best.text, rejected, best.source, best.id)


def build_g_pairs(records: Iterable[PitRecord], task: str, chosen_excludes_rejected: bool = False) -> GPairs:
    """D_g-pair for a set of pits, in their order: one pair per pit where possible, then the
    reference's de-dup per question (neither the chosen nor the rejected seen before)."""
    used: dict[str, set[str]] = {}
    seen: dict[str, tuple[set[str], set[str]]] = {}
    out = GPairs()
    for r in records:
        pair = g_pair(r, used.setdefault(r.question_id, set()), task, chosen_excludes_rejected)
        if isinstance(pair, str):
            out.dropped[pair] += 1
            continue
        if pair.chosen.strip() == pair.rejected.strip():
            out.dropped[CHOSEN_IS_REJECTED] += 1
            continue
        chosen_seen, rejected_seen = seen.setdefault(pair.question_id, (set(), set()))
        if pair.chosen in chosen_seen or pair.rejected in rejected_seen:
            out.dropped[DUPLICATE] += 1
            continue
        chosen_seen.add(pair.chosen)
        rejected_seen.add(pair.rejected)
        out.pairs.append(pair)
    return out
