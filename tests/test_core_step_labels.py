"""Step labels from a hand-built exploration (issue 25): every rule of core/step_labels."""

import pytest

from sx_dagster.core.step_labels import (
    Completion,
    StepLabel,
    agrees_with_truth,
    label_correct_sample,
    label_rejected,
    stepwise_example,
)
from sx_dagster.core.synthetic import SyntheticProblem, true_first_error

# Ava has 3 pens; +4; x3; -1 -> 20. The rejected rationale errs at step 2 (x2 for x3).
PROBLEM = SyntheticProblem("q", "Ava", "pens", 3, (("+", 4), ("*", 3), ("-", 1)), "q")
WRONG = ["3 + 4 = 7 pens", "7 * 2 = 14 pens", "14 - 1 = 13 pens", "The answer is 13"]


def test_a_correct_sample_is_good_at_every_step():
    steps = PROBLEM.rationale.split("\n")
    labels = label_correct_sample("s-right", steps)
    assert [(lab.step, lab.good, lab.source) for lab in labels] == [(i, True, "correct-sample") for i in range(1, 5)]
    assert agrees_with_truth(labels, true_first_error(PROBLEM, PROBLEM.rationale))


def test_linear_scan_labels_good_before_the_pit_bad_at_it_and_nothing_after():
    k = 4
    explored = [Completion(f"e1-{j}", 1, j in (0, 2)) for j in range(k)] + [Completion(f"e2-{j}", 2, False) for j in range(k)]
    labels = label_rejected("s-wrong", WRONG, pit=2, proven=0, completions=explored, k=k)
    assert [(lab.step, lab.good, lab.source) for lab in labels] == [(1, True, "completion"), (2, False, "pit")]
    good, bad = labels
    assert good.evidence == ("e1-0", "e1-2") and good.soft == 0.5  # Math-Shepherd's soft estimate: 2 of 4
    assert bad.evidence == tuple(f"e2-{j}" for j in range(k)) and bad.soft == 0.0
    assert agrees_with_truth(labels, true_first_error(PROBLEM, "\n".join(WRONG))) and true_first_error(PROBLEM, "\n".join(WRONG)) == 2


def test_pool_and_early_stop_prove_steps_without_a_soft_label():
    # pool-reuse: step 1 proven by a correct sample sharing it; early stop drew one completion at step 2.
    explored = [Completion("e2-0", 2, True)] + [Completion(f"e3-{j}", 3, False) for j in range(4)]
    labels = label_rejected("s", WRONG, pit=3, proven=1, completions=explored, k=4)
    assert [(lab.step, lab.good, lab.source, lab.soft) for lab in labels] == [
        (1, True, "pool", None),
        (2, True, "completion", None),
        (3, False, "pit", 0.0),
    ]
    # These labels disagree with the truth (the real error is step 2): the check says so.
    assert not agrees_with_truth(labels, 2)


def test_unexplored_steps_stay_unlabelled_and_a_row_stops_there():
    # binary search: step 1 never drawn, step 2 recoverable, step 3 the pit.
    explored = [Completion("e2-0", 2, True)] + [Completion(f"e3-{j}", 3, False) for j in range(4)]
    labels = label_rejected("s", WRONG, pit=3, proven=0, completions=explored, k=4)
    assert [lab.step for lab in labels] == [2, 3]
    assert stepwise_example("Question: q\nAnswer:\n", labels) is None  # step 1 unlabelled: no row
    full = label_rejected("s", WRONG, pit=2, proven=1, completions=[Completion(f"e{j}", 2, False) for j in range(4)], k=4)
    assert stepwise_example("P", full) == {"prompt": "P", "completions": WRONG[:2], "labels": [True, False]}


def test_no_pit_labels_only_proven_steps_and_bad_input_is_named():
    labels = label_rejected("s", WRONG, pit=None, proven=2, completions=[Completion("e3", 3, True)], k=4)
    assert [(lab.step, lab.source) for lab in labels] == [(1, "pool"), (2, "pool"), (3, "completion")]
    with pytest.raises(ValueError, match="s: pit 9"):
        label_rejected("s", WRONG, pit=9, proven=0, completions=[], k=4)
    with pytest.raises(ValueError, match="step 2 is the pit but a completion"):
        label_rejected("s", WRONG, pit=2, proven=0, completions=[Completion("x", 2, True)], k=4)
    assert not agrees_with_truth([StepLabel("s", 1, "x", False, "pit")], None)
