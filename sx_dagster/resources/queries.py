"""Named queries: the rows that stages and benchmarks share, written once.

Functions over a :class:`LineageStore` rather than methods of it: a stage that calls one imports
this module, so its SQL is part of that stage's code version (``assets/_stage.code_version``),
and an edit here re-runs the stages that read through it and no others. The pits with their
completions, which only D_g-pair reads, are in :mod:`sx_dagster.resources.pit_queries`.
"""

from __future__ import annotations

import pandas as pd

from sx_dagster.core.explore import RejectedRationale
from sx_dagster.resources.lineage import LineageStore


def rejected_rationales(store: LineageStore, experiment: str, limit: int | None = None) -> list[RejectedRationale]:
    """The rejected rationales of D_pair (``outcome_pairs``) with their questions, in pair order:
    what self-exploration explores."""
    df = store.query(
        "SELECT p.id AS pair_id, p.question_id, p.rejected_sample_id AS sample_id, q.question, q.answer, p.rejected AS text, "
        "q.meta FROM outcome_pairs p JOIN questions q ON q.experiment = p.experiment AND q.id = p.question_id "
        "WHERE p.experiment = ? ORDER BY p.id LIMIT ?",
        [experiment, limit if limit is not None else 2**62],
    )
    return [RejectedRationale(**{k: (None if pd.isna(v) else v) for k, v in r.items()}) for r in df.to_dict("records")]


def correct_samples(store: LineageStore, experiment: str) -> list[tuple[str, str, str]]:
    """(question id, sample id, text) of every correct sampled rationale, by sample id."""
    df = store.query("SELECT question_id, id, text FROM samples WHERE experiment = ? AND correct ORDER BY id", [experiment])
    return list(df.itertuples(index=False, name=None))
