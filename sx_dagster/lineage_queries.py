"""Documented lineage queries over the DuckDB store (also in the README)."""

# Trace one step-level DPO pair back to everything that produced it: the D_pair pair, the
# rejected rationale and the SFT checkpoint that sampled it, the exploration completions
# from the prefix before the pit, and the explorer (RFT) checkpoint. Parameters: experiment,
# dpo_pairs.id. A pair of round r >= 2 (issue 26): run it on LineageStore().for_round(r), whose
# unqualified tables are that round's; then TRACE_CHECKPOINT_SQL from its sampler checkpoint.
TRACE_DPO_PAIR_SQL = """
SELECT d.id AS dpo_pair_id, d.pit, d.prompt, d.chosen, d.rejected, d.chosen_source,
       op.id AS outcome_pair_id, s.id AS rationale_id, s.text AS rationale, s.seed AS sample_seed,
       sc.path AS sampler_checkpoint, x.id AS exploration_id, x.step AS explored_step, x.text AS completion,
       x.correct AS completion_correct, ec.path AS explorer_checkpoint, ec.hash AS explorer_hash,
       l.run_id AS pairs_run_id, l.config AS pairs_config
FROM dpo_pairs d
JOIN outcome_pairs op ON op.experiment = d.experiment AND op.id = d.pair_id
JOIN samples s ON s.experiment = d.experiment AND s.id = op.rejected_sample_id
JOIN checkpoints sc ON sc.experiment = d.experiment AND sc.id = s.checkpoint_id
LEFT JOIN explorations x ON x.experiment = d.experiment AND x.pair_id = d.pair_id AND x.step = d.pit - 1
LEFT JOIN checkpoints ec ON ec.experiment = d.experiment AND ec.id = x.checkpoint_id
LEFT JOIN (SELECT * FROM lineage WHERE regexp_full_match(asset, '(round_[0-9]+/)?dpo_pairs') QUALIFY row_number() OVER
           (PARTITION BY experiment, round ORDER BY created_at DESC) = 1) l ON l.experiment = d.experiment AND l.round = d.round
WHERE d.experiment = ? AND d.id = ?
ORDER BY x.idx
"""

# Trace one process-reward training row (prm_examples: a labelled rationale in TRL's stepwise
# format) back to what proves each of its labels: the step_labels rows, the exploration completions
# that proved them (evidence_ids; the k failing ones for the pit) and the explorer checkpoint that
# wrote them, and the rationale with the checkpoint that sampled it. Parameters: experiment,
# prm_examples.id.
TRACE_PRM_EXAMPLE_SQL = """
SELECT e.id AS prm_example_id, e.split, l.step, l.text AS step_text, l.good, l.source, l.soft,
       s.id AS rationale_id, sc.path AS sampler_checkpoint, x.id AS exploration_id, x.step AS explored_step,
       x.text AS completion, x.correct AS completion_correct, ec.path AS explorer_checkpoint, ec.hash AS explorer_hash
FROM prm_examples e
JOIN step_labels l ON l.experiment = e.experiment AND l.sample_id = e.sample_id
JOIN samples s ON s.experiment = e.experiment AND s.id = e.sample_id
JOIN checkpoints sc ON sc.experiment = e.experiment AND sc.id = s.checkpoint_id
LEFT JOIN explorations x ON x.experiment = e.experiment AND list_contains(string_split(l.evidence_ids, ','), x.id)
LEFT JOIN checkpoints ec ON ec.experiment = e.experiment AND ec.id = x.checkpoint_id
WHERE e.experiment = ? AND e.id = ?
ORDER BY l.step, x.idx
"""

# Walk a checkpoint back through the checkpoints it was trained from (parent_id), to the base
# model: a round-3 Self-Explore model -> round 2's -> round 1's -> the RFT model -> the base
# model (rounds.train_from: previous). Parameters: experiment, checkpoint id (e.g. a round's
# samples.checkpoint_id: the model that sampled them).
TRACE_CHECKPOINT_SQL = """
WITH RECURSIVE chain(depth, id) AS (
    SELECT 0, $2
    UNION ALL
    SELECT chain.depth + 1, k.parent_id FROM chain JOIN checkpoints k ON k.experiment = $1 AND k.id = chain.id
    WHERE k.parent_id IS NOT NULL AND chain.depth < 64
)
SELECT chain.depth, k.id, k.name, k.round, k.path, k.run_id
FROM chain JOIN checkpoints k ON k.experiment = $1 AND k.id = chain.id
ORDER BY chain.depth
"""
