"""D_g-pair's inputs (paper §3.2): the first pits found by self-exploration, each with its
D_pair pair and the explored continuations of the prefix before it, as
:class:`sx_dagster.core.gpairs.PitRecord`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sx_dagster.core.gpairs import Completion, PitRecord, pool_continuations
from sx_dagster.core.steps import split_steps


@dataclass(frozen=True)
class FoundPit:
    """A first pit found, with its D_pair pair, its question, and the explored continuations of
    the prefix before it (the chosen side of its g-pair comes from these)."""

    pair_id: str
    question_id: str
    question: str
    chosen_sample_id: str
    chosen: str
    rejected: str
    pit: int
    proven: int
    before_pit: tuple[Completion, ...] = ()

    @property
    def after_pool_proof(self) -> bool:
        """pool-reuse never explored the prefix before this pit: a correct sample proved it."""
        return 1 < self.pit <= self.proven + 1


def pit_records(
    found: Sequence[FoundPit], task: str, pool: Mapping[str, Sequence[tuple[str, Sequence[str]]]] | None = None
) -> list[PitRecord]:
    """The pits as D_g-pair's inputs. ``pool`` (:func:`sample_pool`) is needed only when a pit
    follows a prefix a correct sample proved: that sample's own continuation is then the
    correct completion to choose from."""
    records = []
    for f in found:
        steps = tuple(split_steps(f.rejected, task))
        from_pool = pool_continuations(steps, f.pit, (pool or {}).get(f.question_id, []), task) if f.after_pool_proof else ()
        records.append(
            PitRecord(f.question_id, f.question, f.pair_id, f.chosen_sample_id, f.chosen, steps, f.pit, f.before_pit + from_pool)
        )
    return records
