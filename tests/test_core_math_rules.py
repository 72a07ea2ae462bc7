"""MATH as the reference does it (Self-Explore commit 54b8ba9): step splitting
(``gen/utils_others.py``), RFT de-dup (``gen/get_rft_data.py``) and D_pair
(``gen/get_dpo_data.py``). Expected values are worked out by hand in the comments."""

import json
import pathlib
from collections import Counter

import pytest

from sx_dagster.core.pairs import math_pair_distance, outcome_pairs
from sx_dagster.core.rft import math_distance, select_rft
from sx_dagster.core.steps import split_steps

MATH500 = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "math500" / "test.jsonl"
ANS = "\nThe answer is: 1"  # 17 characters

# --- step splitting ----------------------------------------------------------------


def test_math_split_at_newlines_blank_lines_stay_with_the_step_before():
    text = (
        "We first find the common denominator.\n\n"
        "Then we add the two fractions together. It is easy to add them now.\n"
        "Next we simplify the resulting fraction.\n"
        "The answer is: 7"
    )
    # Pieces: 3 lines, "\n\n", "\n", "\n" and the answer line (16 < 20 chars): breaks and the
    # answer line join the piece before; the answer is then split off its part: 4 steps.
    # A sentence end ". " is not a cut point.
    assert split_steps(text, "math") == [
        "We first find the common denominator.\n\n",
        "Then we add the two fractions together. It is easy to add them now.\n",
        "Next we simplify the resulting fraction.\n",
        "The answer is: 7",
    ]


def test_math_split_after_dot_dollar_space_only():
    text = (
        "First, Mr. Li sees that $a = 2.5.$ Second we note that $b = 3.$ "
        "Third we note that $c = 4.$Fourth, the sum is known. It is $a+b+c = 9.5.$ The answer is: 9.5"
    )
    # Cut after ".$" + whitespace; not after "Mr. ", "known. " or "2.5" (a period outside
    # ".$"/"$."), nor after "4.$" with no whitespace after it.
    assert split_steps(text, "math") == [
        "First, Mr. Li sees that $a = 2.5.$ ",
        "Second we note that $b = 3.$ ",
        "Third we note that $c = 4.$Fourth, the sum is known. It is $a+b+c = 9.5.$ ",
        "The answer is: 9.5",
    ]


def test_math_split_after_dollar_dot_space():
    text = (
        "We know that $a = 2$. It follows that $b = 3$.  So the total is $a+b = 5$. "
        "Finally we check the sign of it. It is positive as $5 > 0$. The answer is: 5"
    )
    # All whitespace after "$." stays with the piece before it (the two spaces here); "it. "
    # is not a cut point.
    assert split_steps(text, "math") == [
        "We know that $a = 2$. ",
        "It follows that $b = 3$.  ",
        "So the total is $a+b = 5$. ",
        "Finally we check the sign of it. It is positive as $5 > 0$. ",
        "The answer is: 5",
    ]


def test_math_split_short_pieces_join_the_one_before():
    text = (
        "Let us begin.\nWe add the numbers in the first row.\nOk.\nWe add the numbers in the second row.\n"
        "We add the row totals.\nThe answer is: 12"
    )
    # "Ok." (3 chars) and its "\n" join the line before. "Let us begin.\n" has no step before
    # it and is over 0.3 of the mean (14 > 0.3 * (14 + 41 + 38 + 40) / 4 = 9.975): a step.
    assert split_steps(text, "math") == [
        "Let us begin.\n",
        "We add the numbers in the first row.\nOk.\n",
        "We add the numbers in the second row.\n",
        "We add the row totals.\n",
        "The answer is: 12",
    ]


def test_math_split_part_under_30_percent_of_mean_joins_shorter_neighbour():
    a, c, d = "a" * 149 + "\n", "c" * 199 + "\n", "d" * 199 + "\n"
    b = "b" * 21 + "\n"  # 22 chars: over 20, but under 0.3 * (150 + 22 + 200 + 200) / 4 = 42.9
    # b's neighbours: 150 before, 200 after: it joins the shorter one, before it.
    assert split_steps(a + b + c + d, "math") == [a + b, c, d]
    # With the longer neighbour before, it takes the next part into itself instead.
    assert split_steps(c + b + a + d, "math") == [c, b + a, d]
    # The first part has only a next neighbour.
    assert split_steps(b + a + c + d, "math") == [b + a, c, d]


def test_math_split_at_most_nine_parts_then_the_answer():
    lines = [f"Line number {i:02d} of this long solution.\n" for i in range(12)]  # 38 chars each
    text = "".join(lines) + "The answer is: 1"
    # 12 parts (the answer line joins the last): 3 merges of the shortest (the first of
    # equals) with its next neighbour (neighbours of equal length: the next one) give 9;
    # then the answer line is split off: 10 steps.
    assert split_steps(text, "math") == [
        lines[0] + lines[1],
        lines[2] + lines[3],
        lines[4] + lines[5],
        *lines[6:],
        "The answer is: 1",
    ]


def test_math_split_answer_head_under_20_chars_joins_the_step_before():
    first, second, third = "We have the equation $3x = 15$.\n", "Dividing by three gives $x = 5$.\n", "Then we double check the work.\n"
    # The answer follows "$." with no space (as in MATH-500); "So $\\boxed{5}$." is 15 chars.
    text = first + second + third + "So $\\boxed{5}$.The answer is: 5"
    assert split_steps(text, "math") == [first, second, third + "So $\\boxed{5}$.", "The answer is: 5"]
    # 22 chars before the answer: a step of its own.
    text = first + second + third + "Therefore $\\boxed{5}$.The answer is: 5"
    assert split_steps(text, "math") == [first, second, third, "Therefore $\\boxed{5}$.", "The answer is: 5"]
    # The first "The answer is" of the last part starts the answer step.
    text = first + second + third + "So $\\boxed{5}$.The answer is: 5 The answer is: 5"
    assert split_steps(text, "math") == [first, second, third + "So $\\boxed{5}$.", "The answer is: 5 The answer is: 5"]


def test_math_process_further_halves_steps_of_short_solutions():
    line = "The first half is long enough, which makes the second half long too.\n"
    # 2 steps (<= 3): the line is cut after ", which" (the only marker: at 36 of 69 chars,
    # both halves over 20); the answer line (16 chars) is left whole.
    assert split_steps(line + "The answer is: 3", "math") == [
        "The first half is long enough, which",
        " makes the second half long too.\n",
        "The answer is: 3",
    ]
    # Several markers: the cut nearest the middle of the 69-char step wins, after " so" at 47
    # (|47 - 22| = 25), not after " and" at 16 (|16 - 53| = 37).
    line = "First we add and then multiply the two terms so the sum is ready now\n"
    assert split_steps(line + "The answer is: 3", "math") == [line[:47], line[47:], "The answer is: 3"]
    assert line[:47].endswith(" so") and len(line) == 69
    # A tie: "=" cuts at 23 (23 | 24), " = " at 24 (24 | 23) of 47: the earlier cut wins.
    line = "We know that $3x + 1$ = $10 - 2x + 6$ and then\n"
    assert split_steps(line + "The answer is: 3", "math") == [line[:23], line[23:], "The answer is: 3"]
    assert line[:23].endswith("=") and len(line) == 47
    # Halves of 20 chars or fewer: no cut.
    assert split_steps("Since x = 2 we have y = 4 at the end.\nThe answer is: 4", "math") == [
        "Since x = 2 we have y = 4 at the end.\n",
        "The answer is: 4",
    ]


def test_math_process_further_only_for_three_steps_or_fewer():
    steps = [
        "We start from the given equation here.\n",
        "The first half is long enough, which makes the second half long too.\n",
        "Then we finish the computation here.\n",
        "The answer is: 3",
    ]
    assert split_steps("".join(steps), "math") == steps  # 4 steps: ", which" is not a cut


def test_gsm8k_split_ignores_math_cut_points():
    text = "We know that $a = 2$. Then $b = 3.$ So\nThe answer is 5"
    assert split_steps(text, "gsm8k") == ["We know that $a = 2$. Then $b = 3.$ So", "The answer is 5"]


@pytest.mark.skipif(not MATH500.exists(), reason="needs ../shared/data/math500")
def test_math500_step_counts_as_the_reference():
    texts = [json.loads(line)["answer"] for line in MATH500.read_text().splitlines()]
    steps = [split_steps(t, "math") for t in texts]
    assert all("".join(s) == t for s, t in zip(steps, texts, strict=True))
    # The reference's own get_final_steps on these 500 solutions (benchmarks/math_split_diff.py,
    # 500/500 identical) gives this histogram; the old heuristic gave {2: 50, ..., 9: 137}.
    assert Counter(map(len, steps)) == {2: 12, 3: 101, 4: 100, 5: 87, 6: 44, 7: 21, 8: 25, 9: 23, 10: 87}


# --- RFT de-dup --------------------------------------------------------------------


def test_math_distance_is_the_references_formula():
    # editdistance 4; denominator len(a) + len(b) // 2: 4 + 4 = 8, and 8 + 2 = 10.
    assert math_distance("abcd", "abcdefgh") == 0.5
    assert math_distance("abcdefgh", "abcd") == 0.4


def test_select_rft_math_keeps_only_over_0_2_of_the_references_distance():
    base = "a" * 30 + ANS  # 47 chars; k substitutions: distance k / (47 + 23) = k / 70

    def edited(k: int) -> str:
        return "b" * k + base[k:]

    # 12 / 70 = 0.17: dropped (the longer-length normalization, 12 / 47 = 0.26, kept it);
    # 14 / 70 = 0.2: not over 0.2, dropped; 15 / 70 = 0.21: kept.
    assert select_rft([base, edited(12)], [True, True], "math") == [0]
    assert select_rft([base, edited(14)], [True, True], "math") == [0]
    assert select_rft([base, edited(15)], [True, True], "math") == [0, 1]
    assert select_rft([base, base, edited(15)], [True, True, True], "math") == [0, 2]  # exact duplicate


def test_select_rft_math_skips_samples_without_a_final_answer_line():
    samples = [
        "c" * 30 + "\nso the answer is 1",  # lower case: not the reference's marker
        "d" * 30,  # unfinished
        "e" * 30 + ANS + "\n\n",  # trailing blank lines are stripped first
        "f" * 30 + ANS,
        "g" * 30 + ANS,  # wrong
        "h" * 30 + " <<2+2=5>>" + ANS,  # MATH has no calculator check in the reference
    ]
    assert select_rft(samples, [True, True, True, True, False, True], "math") == [2, 3, 5]


def test_select_rft_math_at_most_eight():
    samples = [c * 40 + ANS for c in "abcdefghij"]  # pairwise 40 / (57 + 28) = 0.47
    assert select_rft(samples, [True] * 10, "math") == list(range(8))
    assert select_rft(samples, [True] * 10, "math", max_per_question=3) == [0, 1, 2]


# --- D_pair ------------------------------------------------------------------------

CHOSEN = "a" * 40 + ANS  # 57 chars


def _wrong(letter: str, k: int) -> str:
    # Distance to CHOSEN: max(40, k) edits + 1 ("1" -> "2"); over 57 + (k + 17) characters.
    return letter * k + "\nThe answer is: 2"


def test_math_pair_distance_over_summed_lengths():
    assert math_pair_distance("abcd", "abcdefgh") == 4 / 12
    assert math_pair_distance(CHOSEN, _wrong("d", 5)) == 41 / 79


def test_outcome_pairs_math_shortest_over_0_5():
    # Distances: c100 101/174 = 0.58, d5 41/79 = 0.52, e40 41/114 = 0.36, f10 41/84 = 0.49.
    wrong = [_wrong("c", 100), _wrong("d", 5), _wrong("e", 40), _wrong("f", 10)]
    # First chosen: over 0.5 are c100 and d5, the shorter is d5 (the farthest is c100).
    # Second: d5 is used; over 0.5 is c100 alone. Third: f10 (0.49) is the only one over 0.4.
    # Fourth: e40 (0.36), in the 0.3 tier.
    assert outcome_pairs([CHOSEN, CHOSEN, CHOSEN, CHOSEN], wrong, "math") == [(0, 1), (1, 0), (2, 3), (3, 2)]


def test_outcome_pairs_math_tiers_0_4_then_0_3_then_the_shortest():
    # e40 0.36, f10 0.49, g60 61/134 = 0.46: none over 0.5; over 0.4: f10 and g60, f10 shorter.
    assert outcome_pairs([CHOSEN], [_wrong("e", 40), _wrong("f", 10), _wrong("g", 60)], "math") == [(0, 1)]
    # e40 0.36 and h45 46/119 = 0.39: both in the 0.3 tier; e40 is shorter.
    assert outcome_pairs([CHOSEN], [_wrong("h", 45), _wrong("e", 40)], "math") == [(0, 1)]
    # Nothing over 0.3: the shortest of all, here also the nearest (the farthest was index 0).
    # x30 a10 (57 chars): 31 / 114 = 0.27; a35 (52 chars): 6 / 109 = 0.06. They are not
    # duplicates: 30 edits / (52 + 57 // 2) = 0.375.
    near = ["x" * 30 + "a" * 10 + "\nThe answer is: 2", "a" * 35 + "\nThe answer is: 2"]
    assert outcome_pairs([CHOSEN], near, "math") == [(0, 1)]


def test_outcome_pairs_math_wrong_pool_finished_and_deduplicated():
    unfinished = "r" * 5  # the shortest and far from CHOSEN, but no answer line: never a rejected
    d5 = _wrong("d", 5)
    d5_again = "d" * 6 + "\nThe answer is: 2"  # 1 edit / (23 + 11) = 0.03 from d5: a duplicate
    assert outcome_pairs([CHOSEN, CHOSEN, CHOSEN], [unfinished, d5, d5_again], "math") == [(0, 1)]
    assert outcome_pairs([CHOSEN], [], "math") == []


def test_outcome_pairs_gsm8k_still_the_farthest():
    wrong = [_wrong("c", 100), _wrong("d", 5)]
    assert outcome_pairs([CHOSEN], wrong, "gsm8k") == [(0, 0)]
