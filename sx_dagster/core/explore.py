"""Self-exploration (paper §3.2) as a pure driver: for each rejected rationale of D_pair, the
explorer writes completions from its step prefixes until the first pit is known, batched
across rationales. Generation is a callable, so the asset (HF or vLLM), the benchmarks and
the tests (a scripted explorer) run the same loop."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sx_dagster.core.answers import grade
from sx_dagster.core.pits import ExplorationPlan, Request, explorable_steps, pool_proven
from sx_dagster.core.prompts import prefix_prompt
from sx_dagster.core.steps import split_steps
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error


def exploration_seed(seed: int) -> int:
    """The explorer's sampling seed for an experiment seed (apart from the sampler's). Per-sample
    streams are keyed by prompt, so chunking the rationales cannot change a draw."""
    return seed * 1_000_003 + 1


@dataclass(frozen=True)
class RejectedRationale:
    """A rejected rationale of D_pair with its question: what the explorer explores."""

    pair_id: str
    question_id: str
    sample_id: str
    question: str
    answer: str  # gold
    text: str
    meta: str | None = None  # the synthetic problem (JSON): its true first error is known


class Drawn(Protocol):
    """One completion as a backend returns it (``sx_dagster.ml.generation.Generation``)."""

    text: str
    n_tokens: int
    prompt_tokens: int
    prefill_tokens: int


class Generate(Protocol):
    """``generate(prompts, n, first_sample)``: n completions per prompt; completion j of a prompt
    is sample ``first_sample[i] + j`` of its stream, the same draw whichever round asks for it."""

    def __call__(self, prompts: Sequence[str], n: int, first_sample: Sequence[int]) -> Sequence[Sequence[Drawn]]: ...


class ExploreSettings(Protocol):
    """The fields of the experiment's ``explore`` section the search reads."""

    k: int
    strategy: str
    batch: int
    max_steps: int


@dataclass(frozen=True)
class Exploration:
    """One completion of a step prefix of a rejected rationale, graded by its answer."""

    id: str
    pair_id: str
    sample_id: str
    step: int
    idx: int
    text: str
    pred: str | None
    correct: bool
    n_tokens: int


@dataclass(frozen=True)
class FirstPit:
    """The search's result for one rejected rationale (``pit`` None: no pit, dropped)."""

    pair_id: str
    sample_id: str
    question_id: str
    n_steps: int
    explored_steps: int
    pit: int | None
    true_first_error: int | None
    strategy: str
    k: int
    proven: int
    completions: int
    generated_tokens: int
    prompt_tokens: int
    prefill_tokens: int


@dataclass
class _Search:
    item: RejectedRationale
    steps: list[str]
    plan: ExplorationPlan
    cost: dict[str, int] = field(default_factory=lambda: {"gen": 0, "prompt": 0, "prefill": 0})


def explore(
    items: Sequence[RejectedRationale],
    generate: Generate,
    settings: ExploreSettings,
    task: str,
    pool: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> tuple[list[Exploration], list[FirstPit]]:
    """Run the first-pit search for every item, batched across them: each round asks every
    unfinished plan for its requests and generates them grouped by n.

    ``pool`` (question id -> steps of its correct samples) is used by ``pool-reuse`` only."""
    if settings.strategy == "pool-reuse" and pool is None:
        raise ValueError("strategy 'pool-reuse' needs the pool of correct sampled rationales")
    searches = []
    for item in items:
        steps = split_steps(item.text, task)
        n = explorable_steps(steps, settings.max_steps)  # the answer line included, as in the reference
        proven = min(n, pool_proven(steps, pool.get(item.question_id, []))) if settings.strategy == "pool-reuse" and pool else 0
        searches.append(_Search(item, steps, ExplorationPlan(n, settings.k, settings.strategy, settings.batch, proven=proven)))
    explorations: list[Exploration] = []
    while requests := [(s, r) for s in searches for r in s.plan.requests()]:
        by_n: dict[int, list[tuple[_Search, Request]]] = defaultdict(list)
        for s, r in requests:
            by_n[r.n].append((s, r))
        for n, group in sorted(by_n.items()):
            prompts = [prefix_prompt(s.item.question, s.steps, r.step, task) for s, r in group]
            # Sample j of a prefix is the same draw whichever round asks for it, so early-stop
            # sees exactly linear's first completions and finds linear's pit.
            drawn = [len(s.plan.outcomes.get(r.step, [])) for s, r in group]
            for (s, r), gens, start in zip(group, generate(prompts, n, drawn), drawn, strict=True):
                outcomes = []
                for j, g in enumerate(gens):
                    # Graded on the completion alone, as the reference does: from a prefix that
                    # ends with the answer line, only a completion that restates the gold answer
                    # counts, so that prefix is a pit unless the explorer does so.
                    pred, ok = grade(g.text, s.item.answer, task)
                    outcomes.append(ok)
                    s.cost["gen"] += g.n_tokens
                    s.cost["prompt"] += g.prompt_tokens
                    s.cost["prefill"] += g.prefill_tokens
                    i, idx = s.item, start + j
                    explorations.append(
                        Exploration(f"{i.pair_id}/x{r.step}.{idx}", i.pair_id, i.sample_id, r.step, idx, g.text, pred, ok, g.n_tokens)
                    )
                s.plan.record(r.step, outcomes)
    return explorations, [_first_pit(s, settings, task) for s in searches]


def _first_pit(s: _Search, settings: ExploreSettings, task: str) -> FirstPit:
    i, plan = s.item, s.plan
    tfe = true_first_error(SyntheticProblem.from_json(i.meta), i.text) if task == "synthetic" and i.meta else None
    return FirstPit(
        pair_id=i.pair_id,
        sample_id=i.sample_id,
        question_id=i.question_id,
        n_steps=len(s.steps),
        explored_steps=len(plan.outcomes),
        pit=plan.first_pit,
        true_first_error=tfe,
        strategy=settings.strategy,
        k=settings.k,
        proven=plan.proven,
        completions=sum(map(len, plan.outcomes.values())),
        generated_tokens=s.cost["gen"],
        prompt_tokens=s.cost["prompt"],
        prefill_tokens=s.cost["prefill"],
    )


def sample_pool(samples: Iterable[tuple[str, str, str]], task: str) -> dict[str, list[tuple[str, list[str]]]]:
    """(sample id, steps) of every correct sampled rationale by question, from (question id,
    sample id, text) rows: pool-reuse's free proofs, and the chosen continuations of the
    prefixes they proved (D_g-pair)."""
    pool: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for qid, sid, text in samples:
        pool[qid].append((sid, split_steps(text, task)))
    return dict(pool)


def pool_steps(pool: Mapping[str, Sequence[tuple[str, list[str]]]]) -> dict[str, list[list[str]]]:
    """The pool without sample ids: what :func:`explore` reads."""
    return {q: [steps for _, steps in v] for q, v in pool.items()}


@dataclass(frozen=True)
class PitAgreement:
    """Where the explorer's first pits fall against the true first errors (synthetic task)."""

    rationales: int  # with a known true first error
    equal: float
    earlier: float
    later: float
    no_pit: float
    false_pit_rate: float  # a pit marked where the true first error is elsewhere, among pits marked


def pit_agreement(pits: Iterable[tuple[int | None, int | None]]) -> PitAgreement:
    """From (pit, true first error) pairs; those without a true first error are left out."""
    known = [(p, t) for p, t in pits if t is not None]
    n = max(1, len(known))
    equal = sum(p == t for p, t in known)
    earlier = sum(p is not None and p < t for p, t in known)
    later = sum(p is not None and p > t for p, t in known)
    none = sum(p is None for p, _ in known)
    return PitAgreement(len(known), equal / n, earlier / n, later / n, none / n, (earlier + later) / max(1, len(known) - none))
