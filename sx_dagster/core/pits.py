"""The first pit (paper §3.2): the first step of a rejected rationale from which the
explorer cannot reach the gold answer.

For prefixes question + steps[1..i], i = 1, 2, ..., the explorer writes k completions; the
first pit is the first i for which none of the k completions is correct. The search is an
:class:`ExplorationPlan`, a small state machine a generator drives, so no completion is
ever generated for a step after the pit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

STRATEGIES = ("linear", "early-stop")


def first_pit(step_successes: Sequence[Sequence[bool]]) -> int | None:
    """1-based index of the first step whose k completions all fail, or None.

    ``step_successes[i]`` holds the outcomes of the completions explored from the prefix
    ending at step i+1. A step with no outcomes is an error: it was never explored.
    """
    for i, outcomes in enumerate(step_successes):
        if len(outcomes) == 0:
            raise ValueError(f"step {i + 1} has no exploration outcomes")
        if not any(outcomes):
            return i + 1
    return None


def explorable_steps(steps: Sequence[str], has_final_answer: bool) -> int:
    """How many prefixes to explore: all steps but a final answer line, since a prefix that
    already states the (wrong) answer is a pit by construction and says nothing."""
    return max(0, len(steps) - 1) if has_final_answer else len(steps)


@dataclass(frozen=True)
class Request:
    """Draw ``n`` completions from the prefix ending at step ``step`` (1-based)."""

    step: int
    n: int


@dataclass
class ExplorationPlan:
    """The first-pit search for one rejected rationale.

    ``linear`` (the paper): k completions per prefix, one prefix after another, stop at
    the first prefix with 0/k successes. ``early-stop``: the same k per pit but drawn
    ``batch`` at a time, a prefix stops at its first success; it finds the same pit.

    Use: ``while not plan.done: for r in plan.requests(): plan.record(r.step, outcomes)``.
    """

    n_steps: int
    k: int
    strategy: str = "linear"
    batch: int = 1
    outcomes: dict[int, list[bool]] = field(default_factory=dict)
    _step: int = 1
    _pit: int | None = None
    _done: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown exploration strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.n_steps < 1:
            self._done = True

    @property
    def done(self) -> bool:
        return self._done

    @property
    def first_pit(self) -> int | None:
        if not self._done:
            raise RuntimeError("the plan is not done")
        return self._pit

    def requests(self) -> list[Request]:
        """What to generate next; empty once the pit (or its absence) is known."""
        if self._done:
            return []
        drawn = len(self.outcomes.get(self._step, []))
        n = self.k - drawn if self.strategy == "linear" else min(self.batch, self.k - drawn)
        return [Request(self._step, n)]

    def record(self, step: int, successes: Sequence[bool]) -> None:
        """Add outcomes of completions drawn from the prefix ending at ``step``."""
        if self._done or step != self._step:
            raise ValueError(f"outcomes for step {step} were not requested (current step {self._step}, done={self._done})")
        got = self.outcomes.setdefault(step, [])
        got.extend(bool(s) for s in successes)
        if len(got) > self.k:
            raise ValueError(f"step {step} got {len(got)} outcomes, more than k={self.k}")
        if any(got):
            self._step += 1
            if self._step > self.n_steps:
                self._done = True
        elif len(got) == self.k:
            self._pit, self._done = step, True
