"""The reference's exploration and g-pair rules (issue 12 parts 5 and 7, issue 10 part 3):
the answer line is explored, at most 20 prefixes; the "chosen must not contain the rejected
step" filter is a knob, off as in the reference; the reference's de-dup; a pit after a prefix
a correct sample proved gets that sample's continuation as its chosen side."""

from dataclasses import asdict

import pytest

from sx_dagster.config import ExperimentConfig
from sx_dagster.core.explore import RejectedRationale, explore
from sx_dagster.core.gpairs import (
    ALL_USED,
    CHOSEN_IS_REJECTED,
    CONTAINS_REJECTED,
    DUPLICATE,
    NO_CORRECT_COMPLETION,
    Completion,
    PitRecord,
    build_g_pairs,
    g_pair,
    pool_continuations,
)
from sx_dagster.core.pits import explorable_steps, pool_proven
from sx_dagster.core.prompts import question_prompt
from sx_dagster.core.steps import split_steps
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error

# --- exploration: the answer line is a step, at most 20 ---------------------------


def test_explorable_steps_include_the_answer_line_up_to_twenty():
    assert explorable_steps(["a", "b", "The answer is 3"]) == 3
    assert explorable_steps(["a", "b"]) == 2
    assert explorable_steps([f"s{i}" for i in range(25)]) == 20  # the reference's hard limit
    assert explorable_steps(["a", "b", "c"], max_steps=2) == 2
    assert explorable_steps([]) == 0
    with pytest.raises(ValueError):
        explorable_steps(["a"], max_steps=0)


# Pens: 3 + 4 = 7, then * 3 = 21. The rejected rationale is right but for its answer line.
PROBLEM = SyntheticProblem("syn-0", "Ann", "pens", 3, (("+", 4), ("*", 3)), "Ann has 3 pens. She gets 4 more. She triples them. How many?")
ANSWER_SLIP = "3 + 4 = 7 pens\n7 * 3 = 21 pens\nThe answer is 20"


class _Gen:
    def __init__(self, text: str):
        self.text, self.n_tokens, self.prompt_tokens, self.prefill_tokens = text, 1, 1, 1


class ScriptedExplorer:
    """An explorer's ``generate`` whose completions depend only on how many steps the prefix holds."""

    def __init__(self, by_steps: dict[int, list[str]]):
        self.by_steps, self.asked = by_steps, []

    def __call__(self, prompts, n, first_sample):
        out = []
        for p, first in zip(prompts, first_sample, strict=True):
            steps = len(p.split("Answer:\n", 1)[1].splitlines())
            self.asked.append(steps)
            out.append([_Gen(t) for t in self.by_steps[steps][first : first + n]])
        return out


def _explore(by_steps: dict[int, list[str]], rationale: str = ANSWER_SLIP, **explore_cfg) -> tuple[list[dict], dict, ScriptedExplorer]:
    exp = ExperimentConfig(
        name="t", model={"name": "tiny"}, task={"name": "synthetic", "n_train": 1, "n_test": 1}, explore={"k": 2, **explore_cfg}
    )
    item = RejectedRationale("q/op0", "q", "s-bad", PROBLEM.question, PROBLEM.answer, rationale, PROBLEM.to_json())
    generate = ScriptedExplorer(by_steps)
    x, pits = explore([item], generate, exp.explore, "synthetic")
    return [asdict(r) for r in x], asdict(pits[0]), generate


def test_a_wrong_answer_line_is_the_pit_and_gives_a_pair():
    assert true_first_error(PROBLEM, ANSWER_SLIP) == 3
    # From 1 and 2 steps the explorer reaches 21; after the answer line it writes nothing
    # (a stop string) or no answer: graded on the completion alone, both miss.
    x, pit, backend = _explore({1: ["7 * 3 = 21 pens\nThe answer is 21", "x"], 2: ["The answer is 21", "x"], 3: ["", "Done."]})
    assert backend.asked == [1, 2, 3] and pit["explored_steps"] == 3
    assert pit["pit"] == 3 == pit["true_first_error"]
    before = tuple(Completion(r["id"], r["text"], r["correct"]) for r in x if r["step"] == 2)
    record = PitRecord(
        "q", PROBLEM.question, "q/op0", "s-good", PROBLEM.rationale, ("3 + 4 = 7 pens", "7 * 3 = 21 pens", "The answer is 20"), 3, before
    )
    [pair] = build_g_pairs([record], "synthetic").pairs
    assert pair.prompt == question_prompt(PROBLEM.question) + "3 + 4 = 7 pens\n7 * 3 = 21 pens\n"
    assert (pair.rejected, pair.chosen, pair.chosen_id) == ("The answer is 20", "The answer is 21", "q/op0/x2.0")


def test_restating_the_gold_answer_after_the_answer_line_means_no_pit():
    # As in the reference: a completion of the full prefix that states the gold answer counts.
    _, pit, _ = _explore({1: ["The answer is 21"] * 2, 2: ["The answer is 21"] * 2, 3: ["The answer is 21", ""]})
    assert pit["pit"] is None


def test_answers_are_normalized_unlike_the_reference():
    # The reference compares raw strings: "21." != "21" would make step 2 a pit. We normalize.
    _, pit, _ = _explore({1: ["The answer is 21"] * 2, 2: ["The answer is 21.", "x"], 3: ["", ""]})
    assert pit["pit"] == 3


def test_at_most_max_steps_prefixes_are_explored():
    _, pit, backend = _explore({1: ["The answer is 21"] * 2, 2: ["The answer is 21"] * 2, 3: ["", ""]}, max_steps=2)
    assert backend.asked == [1, 2] and pit["pit"] is None  # no pit among the explored: dropped, as in the reference


# --- g-pairs: the contains-rejected knob, de-dup, reasons --------------------------

STEPS = ("3 + 4 = 7 pens", "7 * 3 = 20 pens", "The answer is 20")
GOOD = "3 + 4 = 7 pens\n7 * 3 = 21 pens\nThe answer is 21"


def _record(pit, completions=(), pair="p1", q="q1", steps=STEPS, chosen=GOOD):
    return PitRecord(q, "Q?", pair, "s-good", chosen, steps, pit, tuple(completions))


def test_chosen_contains_rejected_is_a_knob_off_by_default():
    # c1 repeats the rejected step 7 * 3 = 20 and still reaches 21 (a later step repairs it).
    c1 = Completion("c1", "7 * 3 = 20 pens\n20 + 1 = 21 pens\nThe answer is 21", True)
    c2 = Completion("c2", "7 * 3 = 21 pens\n21 * 1 = 21 pens\nThe answer is 21 pens", True)
    assert len(c1.text) == 49 < len(c2.text) == 54  # c1 is the shortest
    assert g_pair(_record(2, [c1, c2]), set(), "synthetic").chosen_id == "c1"  # the reference: no filter
    assert g_pair(_record(2, [c1, c2]), set(), "synthetic", chosen_excludes_rejected=True).chosen_id == "c2"
    assert g_pair(_record(2, [c1]), set(), "synthetic", chosen_excludes_rejected=True) == CONTAINS_REJECTED


def test_dedup_per_question_on_chosen_and_on_rejected_as_the_reference():
    a = Completion("a", "7 * 3 = 21 pens\nThe answer is 21", True)
    b = Completion("b", "7 * 3 = 21 pens\n21 = 21 pens\nThe answer is 21", True)
    other_prefix = ("3 + 4 = 7 pens", "7 = 7 pens", "7 * 3 = 20 pens", "The answer is 20")
    records = [
        _record(2, [a], "p1"),
        # another prefix but the same rejected step text: dropped (ours used to keep it)
        _record(3, [b], "p2", steps=other_prefix),
        # pit at step 1 with a chosen sample already kept for this question? GOOD is new: kept
        _record(1, (), "p3", steps=("3 * 4 = 12 pens", "The answer is 36")),
        # the same correct sample against another wrong step 1: its chosen was seen, dropped
        _record(1, (), "p4", steps=("4 * 3 = 11 pens", "The answer is 33")),
        _record(2, [a], "p5", q="q2"),  # another question: its own sets
        # b was marked used when p2 was formed, before de-dup dropped p2 (as in the reference)
        _record(3, [b], "p6", steps=("3 + 4 = 7 pens", "7 = 7 pens", "7 * 3 = 22 pens", "The answer is 22")),
    ]
    built = build_g_pairs(records, "synthetic")
    assert [p.pair_id for p in built.pairs] == ["p1", "p3", "p5"]
    assert built.dropped == {DUPLICATE: 2, ALL_USED: 1}


def test_every_pit_without_a_pair_has_a_reason():
    a = Completion("a", "7 * 3 = 21 pens\nThe answer is 21", True)
    wrong = Completion("w", "7 * 3 = 22 pens\nThe answer is 22", False)
    records = [
        _record(2, [a], "p1"),
        _record(2, [a], "p2"),  # a was chosen for p1
        _record(2, [wrong], "p3"),  # nothing correct from the prefix
        _record(2, (), "p4"),  # nothing explored from the prefix (pool-reuse skipped it)
        _record(1, (), "p5", q="q2", steps=("The answer is 21 pens",), chosen="The answer is 21 pens"),
    ]
    built = build_g_pairs(records, "synthetic")
    assert [p.pair_id for p in built.pairs] == ["p1"]
    assert built.dropped == {ALL_USED: 1, NO_CORRECT_COMPLETION: 2, CHOSEN_IS_REJECTED: 1}
    assert sum(built.dropped.values()) == len(records) - len(built.pairs)


# --- pool-reuse: the sample that proved the prefix supplies the chosen side ---------


def test_pool_continuation_is_the_chosen_of_a_pit_after_a_proven_prefix():
    rejected = ("3 + 4 = 7 pens", "7 * 3 = 20 pens", "The answer is 20")
    pool = [
        ("s1", ["3 + 4 = 7 pens ", "7 * 3 = 21 pens", "The answer is 21"]),
        ("s2", ["4 + 3 = 7 pens", "7 * 3 = 21 pens", "The answer is 21"]),  # another step 1
        ("s3", ["3 + 4 = 7 pens", "7 + 7 + 7 = 21 pens", "The answer is 21"]),
        ("s4", ["3 + 4 = 7 pens"]),  # nothing after the prefix
    ]
    assert pool_proven(rejected, [s for _, s in pool]) == 1  # pool-reuse explores from step 2 on
    conts = pool_continuations(rejected, 2, pool, "synthetic")
    assert conts == (
        Completion("s1", "7 * 3 = 21 pens\nThe answer is 21", True, "pool"),
        Completion("s3", "7 + 7 + 7 = 21 pens\nThe answer is 21", True, "pool"),
    )
    assert pool_continuations(rejected, 1, pool, "synthetic") == ()  # pit 1: the D_pair sample is the chosen
    # three rejected rationales with the same first step and other second steps
    records = [
        _record(2, conts, f"p{i}", steps=("3 + 4 = 7 pens", f"7 * 3 = {r} pens", f"The answer is {r}"))
        for i, r in enumerate((20, 22, 24), 1)
    ]
    built = build_g_pairs(records, "synthetic")
    assert [(p.pair_id, p.chosen_id, p.chosen_source) for p in built.pairs] == [("p1", "s1", "pool"), ("p2", "s3", "pool")]
    assert built.pairs[0].prompt == question_prompt("Q?") + "3 + 4 = 7 pens\n"
    assert built.dropped == {ALL_USED: 1}


def test_pool_continuation_of_an_answer_line_pit():
    # Only the answer line is wrong: the correct sample shares both steps, its answer line is the chosen.
    rejected = ("3 + 4 = 7 pens", "7 * 3 = 21 pens", "The answer is 20")
    pool = [("s1", ["3 + 4 = 7 pens", "7 * 3 = 21 pens", "The answer is 21"])]
    assert pool_proven(rejected, [s for _, s in pool]) == 2
    [pair] = build_g_pairs([_record(3, pool_continuations(rejected, 3, pool, "synthetic"), steps=rejected)], "synthetic").pairs
    assert (pair.rejected, pair.chosen, pair.chosen_source) == ("The answer is 20", "The answer is 21", "pool")


def test_gpair_knob_is_its_own_section():
    exp = ExperimentConfig(name="t", model={"name": "tiny"}, task={"name": "gsm8k"}, gpair={"chosen_excludes_rejected": True})
    assert (
        exp.gpair.chosen_excludes_rejected
        and not ExperimentConfig(name="u", model={"name": "tiny"}, task={"name": "gsm8k"}).gpair.chosen_excludes_rejected
    )
    assert exp.explore.max_steps == 20
    # its own section: changing it re-runs dpo_pairs, not the exploration
    assert "gpair" in exp.section_dump("dpo", "gpair") and "gpair" not in exp.section_dump("explore")


# --- the micro graph with pool-reuse ---------------------------------------------


def test_micro_pool_reuse_gives_pits_after_a_proven_prefix_a_pair(tmp_path):
    import dagster as dg

    from sx_dagster.assets import ALL_ASSETS
    from sx_dagster.resources import AcceleratorResource, CheckpointStore, GeneratorResource, LineageStore, queries

    store = LineageStore(database=str(tmp_path / "sx.duckdb"))
    resources = {
        "lineage": store,
        "checkpoints": CheckpointStore(root=str(tmp_path / "checkpoints")),
        "accelerator": AcceleratorResource(device="cpu"),
        "generator": GeneratorResource(),
    }
    upstream = ["task_dataset", "base_model", "sft_checkpoint", "sampled_rationales", "rft_checkpoint", "outcome_pairs"]
    assert dg.materialize(ALL_ASSETS, partition_key="micro-pool", resources=resources, selection=upstream).success
    # The micro model's correct samples share no step with its wrong ones: plant, for every
    # rejected rationale of 2+ steps, a correct sample that shares its step 1, then explore.
    planted = 0
    with store.connect() as conn:
        for r in queries.rejected_rationales(store, "micro-pool"):
            steps = split_steps(r.text, "synthetic")
            if len(steps) >= 2:
                proof = f"{steps[0]}\nThe answer is {r.answer}"
                conn.execute(
                    "INSERT INTO samples SELECT * REPLACE (id || '/proof' AS id, ? AS text, true AS correct) "
                    "FROM samples WHERE experiment = 'micro-pool' AND id = ?",
                    [proof, r.sample_id],
                )
                planted += 1
    assert planted > 0, "micro-pool needs a rejected rationale of 2+ steps"
    result = dg.materialize(ALL_ASSETS, partition_key="micro-pool", resources=resources, selection=["first_pit_labels", "dpo_pairs"])
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}["dpo_pairs"]
    pits = store.query("SELECT pair_id, pit, proven FROM pits WHERE experiment = 'micro-pool' AND pit IS NOT NULL")
    proved = pits[(pits["pit"] > 1) & (pits["pit"] - 1 <= pits["proven"])]
    assert len(proved) > 0 and (proved["proven"] == 1).all()
    pairs = store.query("SELECT * FROM dpo_pairs WHERE experiment = 'micro-pool'")
    from_pool = pairs[pairs["chosen_source"] == "pool"]
    # before: no explored completion from a proven prefix, so no pair; now such pits have one
    assert len(from_pool) > 0 and set(from_pool["pair_id"]) <= set(proved["pair_id"])
    assert (from_pool["chosen_id"].str.endswith("/proof")).all() and (from_pool["chosen"].str.startswith("The answer is ")).all()
    # every pit is accounted for: a pair, or a reason it has none
    reasons = {k: v.value for k, v in meta.items() if k.startswith("no_pair/")}
    assert (meta["pits"].value, meta["pairs"].value, meta["chosen_from_pool"].value) == (len(pits), len(pairs), len(from_pool))
    assert sum(reasons.values()) == len(pits) - len(pairs)
    assert "no_pair/no_correct_completion" not in reasons  # the planted proof is a correct completion of each proven prefix
