"""The named query D_g-pair reads its inputs through (apart from :mod:`sx_dagster.resources.queries`,
so that editing it re-runs the pair stage, not exploration)."""

from __future__ import annotations

from sx_dagster.core.gpair_inputs import FoundPit
from sx_dagster.core.gpairs import Completion
from sx_dagster.resources.lineage import LineageStore


def found_pits(store: LineageStore, experiment: str) -> list[FoundPit]:
    """Every found pit in D_pair order, with its pair, its question and the explored
    completions of the prefix before it (step pit - 1)."""
    pits = store.query(
        "SELECT t.pair_id, p.question_id, q.question, p.chosen_sample_id, p.chosen, p.rejected, t.pit, coalesce(t.proven, 0) AS proven "
        "FROM pits t JOIN outcome_pairs p ON p.experiment = t.experiment AND p.id = t.pair_id "
        "JOIN questions q ON q.experiment = t.experiment AND q.id = p.question_id "
        "WHERE t.experiment = ? AND t.pit IS NOT NULL ORDER BY t.pair_id",
        [experiment],
    )
    before = store.query(
        "SELECT x.pair_id, x.id, x.text, x.correct FROM explorations x JOIN pits t "
        "ON t.experiment = x.experiment AND t.pair_id = x.pair_id AND x.step = t.pit - 1 "
        "WHERE x.experiment = ? ORDER BY x.pair_id, x.idx",
        [experiment],
    )
    comps = {
        k: tuple(Completion(i, t, bool(c)) for i, t, c in zip(g["id"], g["text"], g["correct"], strict=True))
        for k, g in before.groupby("pair_id")
    }
    return [
        FoundPit(**{**r, "pit": int(r["pit"]), "proven": int(r["proven"])}, before_pit=comps.get(r["pair_id"], ()))
        for r in pits.to_dict("records")
    ]
