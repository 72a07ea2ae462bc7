"""The first pit (paper §3.2): the first step of a rejected rationale from which the
explorer cannot reach the gold answer.

For prefixes question + steps[1..i], i = 1, 2, ..., the explorer writes k completions; the
first pit is the first i for which none of the k completions is correct. The search is an
:class:`ExplorationPlan`, a small state machine a generator drives, so no completion is
ever generated for a step after the pit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# linear: the paper. early-stop: same pit, fewer draws. binary: OmegaPRM-style search for a
# success-to-failure boundary. pool-reuse: early-stop that first skips the prefixes a correct
# sampled rationale already proves recoverable.
STRATEGIES = ("linear", "early-stop", "binary", "pool-reuse")


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


# The reference explores at most 20 prefixes per rejected rationale (gen/gen_step_explore.py,
# "set 20 as hard limit"); a rationale with no pit among them is dropped.
MAX_EXPLORED_STEPS = 20


def explorable_steps(steps: Sequence[str], max_steps: int = MAX_EXPLORED_STEPS) -> int:
    """How many prefixes to explore: every step, the final answer line included, at most
    ``max_steps``.

    As in the reference, the prefix that ends with the answer line is explored too: its
    completions are graded on their own text (what the explorer writes after the answer
    line), so that prefix is a pit unless a completion restates the gold answer. A rationale
    whose only error is its final answer line therefore has its pit on that line.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    return min(len(steps), max_steps)


@dataclass(frozen=True)
class Request:
    """Draw ``n`` completions from the prefix ending at step ``step`` (1-based)."""

    step: int
    n: int


def shared_prefix(steps: Sequence[str], other: Sequence[str]) -> int:
    """How many leading steps two rationales share exactly.

    Steps compare after stripping surrounding whitespace; nothing else is normalized, since a
    shared prefix must be the same text the explorer would continue from.
    """
    n = 0
    for a, b in zip(steps, other, strict=False):
        if a.strip() != b.strip():
            break
        n += 1
    return n


def pool_proven(steps: Sequence[str], correct_rationales: Iterable[Sequence[str]]) -> int:
    """How many leading steps of ``steps`` a correct rationale for the same question shares
    exactly: those prefixes reach the gold answer, so they cannot hold the first pit."""
    return max((shared_prefix(steps, other) for other in correct_rationales), default=0)


@dataclass
class ExplorationPlan:
    """The first-pit search for one rejected rationale.

    - ``linear`` (the paper): k completions per prefix, one prefix after another, stop at the
      first prefix with 0/k successes.
    - ``early-stop``: the same k per pit but drawn ``batch`` at a time; a prefix stops at its
      first success. It finds the same pit as ``linear`` for the same outcomes.
    - ``pool-reuse``: ``early-stop`` from step ``proven + 1``; the caller proves steps
      1..``proven`` recoverable from the correct sampled rationales (:func:`pool_proven`).
    - ``binary``: bisection over prefixes between the last known recoverable one (``proven``)
      and the last explored one, each probe drawn like ``early-stop``. It assumes a recoverable
      prefix's shorter prefixes are recoverable, so it finds *a* success-to-failure boundary,
      which is not always the first pit.

    ``proven`` is honoured by every strategy; the asset sets it only for ``pool-reuse``.
    Use: ``while not plan.done: for r in plan.requests(): plan.record(r.step, outcomes)``.
    """

    n_steps: int
    k: int
    strategy: str = "linear"
    batch: int = 1
    proven: int = 0
    outcomes: dict[int, list[bool]] = field(default_factory=dict)
    _lo: int = 0  # highest prefix known recoverable
    _hi: int = 0  # lowest prefix known to be a pit (n_steps + 1 = none known)
    _pit: int | None = None
    _done: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown exploration strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not 0 <= self.proven:
            raise ValueError(f"proven must be >= 0, got {self.proven}")
        self._lo, self._hi = min(self.proven, self.n_steps), self.n_steps + 1
        self._settle()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def first_pit(self) -> int | None:
        if not self._done:
            raise RuntimeError("the plan is not done")
        return self._pit

    @property
    def step(self) -> int:
        """The prefix being explored now."""
        if self.strategy == "binary":
            return (self._lo + self._hi) // 2
        return self._lo + 1

    def _settle(self) -> None:
        if self._hi - self._lo <= 1:
            self._done = True
            self._pit = self._hi if self._hi <= self.n_steps else None

    def requests(self) -> list[Request]:
        """What to generate next; empty once the pit (or its absence) is known."""
        if self._done:
            return []
        drawn = len(self.outcomes.get(self.step, []))
        n = self.k - drawn if self.strategy == "linear" else min(self.batch, self.k - drawn)
        return [Request(self.step, n)]

    def record(self, step: int, successes: Sequence[bool]) -> None:
        """Add outcomes of completions drawn from the prefix ending at ``step``."""
        if self._done or step != self.step:
            current = None if self._done else self.step
            raise ValueError(f"outcomes for step {step} were not requested (current step {current}, done={self._done})")
        got = self.outcomes.setdefault(step, [])
        got.extend(bool(s) for s in successes)
        if len(got) > self.k:
            raise ValueError(f"step {step} got {len(got)} outcomes, more than k={self.k}")
        if any(got):
            self._lo = step
        elif len(got) == self.k:
            self._hi = step
            if self.strategy != "binary":
                self._lo = step - 1  # a scan reaches here only through recoverable prefixes
        self._settle()
