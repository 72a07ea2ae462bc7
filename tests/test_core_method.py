"""Steps, RFT selection, outcome pairs, first pit, exploration plan and g-pairs."""

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sx_dagster.core.calculator import check_plain_equations
from sx_dagster.core.gpairs import ALL_USED, CONTAINS_REJECTED, Completion, PitRecord, build_g_pairs, g_pair
from sx_dagster.core.pairs import outcome_pairs
from sx_dagster.core.pits import ExplorationPlan, first_pit, pool_proven
from sx_dagster.core.prompts import clean_completion, prefix_prompt, question_prompt
from sx_dagster.core.rft import select_rft
from sx_dagster.core.steps import join_steps, normalize_lines, split_steps

# --- steps ----------------------------------------------------------------------


def test_split_gsm8k_lines_and_empty_steps():
    text = "A has 3 + 4 = 7.  \n\n   \nB has 7 * 2 = 14.\nThe answer is 14\n"
    assert split_steps(text, "gsm8k") == ["A has 3 + 4 = 7.", "B has 7 * 2 = 14.", "The answer is 14"]
    assert split_steps("", "gsm8k") == []
    assert split_steps(" \n \n", "synthetic") == []


# MATH splitting: tests/test_core_math_rules.py


line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s)


@given(st.lists(line, min_size=0, max_size=8))
def test_split_join_round_trip_lines(steps):
    for task in ("gsm8k", "synthetic"):
        assert split_steps(join_steps(steps, task), task) == steps


@given(st.text(max_size=300))
def test_split_join_round_trip_text(text):
    assert join_steps(split_steps(text, "gsm8k"), "gsm8k") == normalize_lines(text)
    if text.strip():
        assert join_steps(split_steps(text, "math"), "math") == text


def test_prefix_prompt_is_exact():
    steps = ["3 + 4 = 7 pens", "7 * 2 = 14 pens", "The answer is 14"]
    assert prefix_prompt("Q?", steps, 0, "synthetic") == question_prompt("Q?")
    assert prefix_prompt("Q?", steps, 2, "synthetic") == question_prompt("Q?") + "3 + 4 = 7 pens\n7 * 2 = 14 pens\n"


def test_clean_completion_cuts_hostile_tails():
    assert clean_completion("7 * 2 = 14\nThe answer is 14 and then\nQuestion: more", "gsm8k") == "7 * 2 = 14\nThe answer is 14 and then"
    assert clean_completion("a\n\nQuestion: b", "math") == "a"


# --- RFT and outcome pairs -----------------------------------------------------


def test_select_rft_gsm8k_dedups_by_equation_list():
    samples = [
        "A <<2+3=5>>5\nThe answer is 5",  # eq list 1
        "So A is <<2+3=5>>5 in total\nThe answer is 5",  # eq list 1, longer
        "B <<3+2=5>>5\nThe answer is 5",  # eq list 2
        "C <<2+3=6>>6\nThe answer is 5",  # bad annotation
        "wrong <<1+1=2>>2\nThe answer is 2",  # incorrect
    ]
    correct = [True, True, True, True, False]
    kept = select_rft(samples, correct, "gsm8k")
    assert len(kept) == 2 and 2 in kept and 3 not in kept and 4 not in kept
    assert kept[0] in (0, 1)


def test_select_rft_synthetic_drops_right_answers_reached_through_wrong_steps():
    lucky = "13 - 8 = 3 coins\n3 - 1 = 2 coins\n2 - 1 = 1 coins\nThe answer is 1"  # 13 - 8 is 5
    sound = "13 - 8 = 5 coins\n5 - 1 = 4 coins\n4 - 3 = 1 coins\nThe answer is 1"
    assert select_rft([lucky, sound], [True, True], "synthetic") == [1]
    assert select_rft([lucky], [True], "gsm8k") == [0]  # GSM8K checks <<annotations>> only
    assert check_plain_equations("2 x 3 = 6 and 10 / 4 = 2.5") and not check_plain_equations("7 * 3 = 20 pens")


def test_select_rft_caps_at_eight_and_is_empty_without_correct():
    samples = [f"{i} + {i} = {2 * i} apples\nThe answer is {2 * i}" for i in range(20)]
    assert len(select_rft(samples, [True] * 20, "synthetic")) == 8
    assert select_rft(samples, [False] * 20, "synthetic") == []
    # every completion identical: one survives
    assert select_rft(["same\nThe answer is 1"] * 5, [True] * 5, "gsm8k") == [0]


def test_select_rft_math_normalized_distance():
    a = "We compute the sum of the first ten integers and get fifty five.\nThe answer is: 55"
    b = a.replace("fifty five", "fifty-five")  # near duplicate
    c = "Gauss: pair the terms, 5 pairs of 11, so 55.\nThe answer is: 55"
    assert select_rft([a, b, c], [True, True, True], "math") == [0, 2]


def test_outcome_pairs_farthest_each_wrong_once():
    chosen = ["abc", "abd"]
    wrong = ["abx", "zzzzzz", "abx"]  # duplicate wrong text counts once
    pairs = outcome_pairs(chosen, wrong, "gsm8k")
    assert pairs == [(0, 1), (1, 0)]
    assert outcome_pairs(chosen, [], "gsm8k") == []
    assert outcome_pairs(["a", "b", "c"], ["x\nThe answer is: 2"], "math") == [(0, 0)]


# --- first pit and the plan -------------------------------------------------------


def test_first_pit_rules():
    assert first_pit([[False, False, False, False]]) == 1  # pit at step 1
    assert first_pit([[True, False], [False, False], [False, False]]) == 2
    assert first_pit([[True], [False, True]]) is None  # no pit
    assert first_pit([]) is None
    with pytest.raises(ValueError):
        first_pit([[True], []])


def _drive(plan: ExplorationPlan, grid: list[list[bool]]) -> list[int]:
    asked = []
    while not plan.done:
        for r in plan.requests():
            asked.append(r.step)
            have = len(plan.outcomes.get(r.step, []))
            plan.record(r.step, grid[r.step - 1][have : have + r.n])
    return asked


@settings(max_examples=300)
@given(
    st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=8),
    st.sampled_from(["linear", "early-stop", "pool-reuse"]),
    st.integers(1, 4),
)
def test_plan_agrees_with_first_pit_and_stops_at_it(grid, strategy, batch):
    plan = ExplorationPlan(n_steps=len(grid), k=4, strategy=strategy, batch=batch)
    asked = _drive(plan, grid)
    expected = first_pit(grid)
    assert plan.first_pit == expected
    limit = expected if expected is not None else len(grid)
    assert max(asked) <= limit  # never a prefix after the pit
    assert sorted(set(asked)) == list(range(1, limit + 1))
    if expected is not None:
        assert plan.outcomes[expected] == [False] * 4  # a pit always has all k misses


def test_plan_early_stop_draws_fewer():
    grid = [[True, True, True, True]] * 3 + [[False] * 4]
    linear, early = ExplorationPlan(4, 4), ExplorationPlan(4, 4, "early-stop", batch=1)
    _drive(linear, grid), _drive(early, grid)
    assert linear.first_pit == early.first_pit == 4
    assert sum(map(len, early.outcomes.values())) == 3 + 4 < sum(map(len, linear.outcomes.values())) == 16


def _monotone_grid(n: int, pit: int | None, k: int = 4) -> list[list[bool]]:
    """Recoverable (one success among k) before ``pit``, all misses from it on."""
    return [[False] * (k - 1) + [True] if pit is None or i + 1 < pit else [False] * k for i in range(n)]


@settings(max_examples=300)
@given(st.integers(1, 12), st.data(), st.integers(1, 4))
def test_binary_finds_the_first_pit_when_recoverability_is_monotone(n, data, batch):
    pit = data.draw(st.one_of(st.none(), st.integers(1, n)))
    grid = _monotone_grid(n, pit)
    plan = ExplorationPlan(n, 4, "binary", batch=batch)
    asked = _drive(plan, grid)
    assert plan.first_pit == pit
    assert len(set(asked)) <= (n + 1).bit_length()  # logarithmic in the steps, not linear


@settings(max_examples=300)
@given(st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=8))
def test_binary_finds_a_success_to_failure_boundary(grid):
    plan = ExplorationPlan(len(grid), 4, "binary", batch=2)
    _drive(plan, grid)
    pit = plan.first_pit
    if pit is None:
        assert any(grid[-1])  # the last prefix was seen recoverable
    else:
        assert not any(grid[pit - 1])  # a real 0/k prefix ...
        assert pit == 1 or any(plan.outcomes[pit - 1])  # ... right after a recoverable one
        linear = first_pit(grid)
        assert linear is not None and linear <= pit  # never before the first pit


def test_binary_can_miss_an_earlier_pit():
    # Step 2 is a pit, step 3 recovers by chance: bisection probes 3 first and skips past 2.
    grid = [[True] * 4, [False] * 4, [True] * 4, [False] * 4, [False] * 4]
    plan = ExplorationPlan(5, 4, "binary")
    _drive(plan, grid)
    assert first_pit(grid) == 2 and plan.first_pit == 4


def test_pool_proven_prefix_skips_steps_and_keeps_the_pit():
    rejected = ["3 + 4 = 7 pens", "7 * 3 = 20 pens", "The answer is 20"]
    correct = [["3 + 4 = 7 pens ", "7 * 3 = 21 pens", "The answer is 21"], ["4 + 3 = 7 pens"]]
    assert pool_proven(rejected, correct) == 1
    assert pool_proven(rejected, []) == 0
    grid = [[False] * 4, [False] * 4]  # the explorer would call step 1 a pit by chance
    plan = ExplorationPlan(2, 4, "pool-reuse", proven=1)
    asked = _drive(plan, grid)
    assert asked == [2] * 4 and plan.first_pit == 2
    assert ExplorationPlan(2, 4, "pool-reuse", proven=5).first_pit is None  # proven past the end: no pit


def test_plan_rejects_bad_use():
    with pytest.raises(ValueError, match="strategy"):
        ExplorationPlan(3, 4, strategy="psychic")
    plan = ExplorationPlan(3, 4)
    with pytest.raises(ValueError, match="not requested"):
        plan.record(2, [True])
    assert ExplorationPlan(0, 4).done


# --- g-pairs --------------------------------------------------------------------

STEPS = ("3 + 4 = 7 pens", "7 * 3 = 20 pens", "20 - 1 = 19 pens", "The answer is 19")


def _record(pit, completions=(), pair="p1", q="q1"):
    return PitRecord(
        q,
        "Q?",
        pair,
        "s-good",
        "3 + 4 = 7 pens\n7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 20",
        STEPS,
        pit,
        tuple(completions),
    )


def test_g_pair_pit_at_step_one_uses_the_correct_sample():
    p = g_pair(_record(1), set(), "synthetic")
    assert p.prompt == question_prompt("Q?") and p.rejected == STEPS[0] and p.chosen_id == "s-good" and p.chosen_source == "sample"


def test_g_pair_later_pit_uses_shortest_unused_correct_completion():
    comps = [
        Completion("c1", "7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 20 indeed", True),
        Completion("c2", "7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 20", True),
        Completion("c3", "7 * 3 = 20 pens\nThe answer is 20", True),  # contains the rejected step
        Completion("c4", "x\nThe answer is 1", False),
    ]
    used: set[str] = set()
    p = g_pair(_record(2, comps), used, "synthetic", chosen_excludes_rejected=True)
    assert p.prompt == question_prompt("Q?") + "3 + 4 = 7 pens\n" and p.rejected == STEPS[1]
    assert p.chosen_id == "c2"
    p2 = g_pair(_record(2, comps, pair="p2"), used, "synthetic", chosen_excludes_rejected=True)
    assert p2.chosen_id == "c1"  # c2 already used for this question
    assert g_pair(_record(2, comps, pair="p3"), set(used), "synthetic", chosen_excludes_rejected=True) == CONTAINS_REJECTED
    assert g_pair(_record(2, comps, pair="p3"), used, "synthetic").chosen_id == "c3"  # the default (reference): no filter
    assert g_pair(_record(2, comps, pair="p4"), used, "synthetic") == ALL_USED


def test_build_g_pairs_dedups_per_question():
    comps = [
        Completion("a", "7 * 3 = 21 pens\nThe answer is 20", True),
        Completion("b", "7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 20", True),
    ]
    pairs = build_g_pairs([_record(2, comps, "p1"), _record(2, comps, "p2"), _record(2, comps, "p3", q="q2")], "synthetic").pairs
    assert [(p.question_id, p.pair_id) for p in pairs] == [("q1", "p1"), ("q2", "p3")]


# --- layering -------------------------------------------------------------------


def test_core_imports_no_torch_transformers_or_dagster():
    core = pathlib.Path(__file__).parents[1] / "sx_dagster" / "core"
    banned = {"torch", "transformers", "dagster", "trl", "peft", "vllm", "duckdb", "pandas", "datasets"}
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


def test_core_imports_cleanly_in_a_fresh_interpreter():
    import subprocess
    import sys

    code = (
        "import sys, sx_dagster.core.answers, sx_dagster.core.gpairs, sx_dagster.core.tasks, sx_dagster.core.rft;"
        "print(sorted(m for m in ('torch', 'dagster', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
