"""The synthetic task's ground truth and the dataset loaders."""

import hashlib
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sx_dagster.core.answers import extract_answer, is_correct
from sx_dagster.core.synthetic import (
    ERROR_KINDS,
    SyntheticConfig,
    SyntheticProblem,
    first_error_kind,
    generate_problems,
    inject_error,
    transfer_sign,
    true_first_error,
)
from sx_dagster.core.tasks import DatasetError, carve_dev, load_jsonl, synthetic_examples, synthetic_split

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_generation_is_seeded_and_gsm8k_shaped():
    a, b = generate_problems(20, seed=7), generate_problems(20, seed=7)
    assert a == b and a != generate_problems(20, seed=8)
    for p in a:
        lines = p.rationale.split("\n")
        assert 2 <= len(p.ops) <= 4 and len(lines) == len(p.ops) + 1
        assert lines[-1] == f"The answer is {p.answer}"
        assert is_correct(extract_answer(p.rationale, "synthetic"), p.answer, "synthetic")
        assert int(p.answer) >= 0
        assert SyntheticProblem.from_json(p.to_json()) == p


def test_config_is_validated():
    with pytest.raises(ValueError, match="min_steps"):
        SyntheticConfig(min_steps=5, max_steps=2)
    with pytest.raises(ValueError, match="ops"):
        SyntheticConfig(ops=("/",))


def test_distractors_appear_when_asked():
    ps = generate_problems(50, seed=1, config=SyntheticConfig(distractor_prob=1.0))
    assert all(p.distractor is not None and str(p.distractor) in p.question for p in ps)


def test_transfers_tell_the_sign_by_who_gives_to_whom():
    base = SyntheticConfig(min_steps=2, max_steps=3, max_start=10, max_operand=5, max_factor=2, max_value=30, distractor_prob=0.5)
    # transfer_prob 0 draws nothing more: a config without transfers makes the problems it made
    # before the knob existed (digest taken from the code before it).
    text = "\n".join(p.question + p.rationale for p in generate_problems(200, 3, base))
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "6252ad3fe20c0953"
    ps = generate_problems(300, 3, SyntheticConfig(**{**base.__dict__, "transfer_prob": 1.0}))
    told = 0
    for p in ps:
        sentences = p.question.split(". ")
        assert [i for i, (op, _) in enumerate(p.ops) if op in "+-"] == list(p.transfers)
        for i in p.transfers:
            op, q = p.ops[i]
            giver_is_hero = any(s.startswith(f"{p.name} gives ") and f" {q} {p.item}" in s and "away" not in s for s in sentences)
            receiver_is_hero = any(f" gives {p.name} {q} {p.item}" in s for s in sentences)
            assert (op == "-" and giver_is_hero) or (op == "+" and receiver_is_hero), (p.question, p.ops)
            told += 1
        assert SyntheticProblem.from_json(p.to_json()) == p and true_first_error(p, p.rationale) is None
    assert told > 300
    with pytest.raises(ValueError, match="transfer_prob"):
        SyntheticConfig(transfer_prob=1.5)


def test_misleading_wordings_are_rare_each_and_keep_the_sign():
    base = SyntheticConfig(min_steps=2, max_steps=3, max_start=10, max_operand=5, max_factor=2, max_value=30, distractor_prob=0.5)
    ps = generate_problems(400, 3, SyntheticConfig(**{**base.__dict__, "misleading_prob": 1.0}))
    by_op: dict[str, set[str]] = {"+": set(), "-": set()}
    for p in ps:
        assert [i for i, (op, _) in enumerate(p.ops) if op in "+-"] == list(p.misleading) and not p.transfers
        sentences = p.question.split(". ")[1:]  # after "<name> has <start> <item>"
        sentences = [s for s in sentences if not s.endswith(f"has {p.distractor} {p.item}")]
        for i, (op, q) in enumerate(p.ops):
            if i in p.misleading:
                told = sentences[i].replace(str(q), "{q}").replace(p.name, "{n}").replace(p.item, "{item}").rstrip(".")
                by_op[op].add(told)
        assert SyntheticProblem.from_json(p.to_json()) == p and true_first_error(p, p.rationale) is None
    # Five wordings per sign, none read both ways; the sign is in the words after the first verb.
    assert len(by_op["+"]) == 5 and len(by_op["-"]) == 5 and not by_op["+"] & by_op["-"]
    assert "{n} is given {q} {item}" in by_op["+"] and "{n} gets {q} {item} taken away" in by_op["-"]
    # A transfer is drawn first: a step is told one way only.
    both = generate_problems(100, 3, SyntheticConfig(**{**base.__dict__, "misleading_prob": 1.0, "transfer_prob": 1.0}))
    assert all(p.transfers and not p.misleading for p in both if any(op in "+-" for op, _ in p.ops))
    p = SyntheticProblem("x", "Ava", "pens", 3, (("+", 4), ("*", 3)), "q", misleading=(0,))
    assert first_error_kind(p, "3 - 4 = -1 pens\n-1 * 3 = -3 pens\nThe answer is -3") == "operation@misleading"
    with pytest.raises(ValueError, match="misleading_prob"):
        SyntheticConfig(misleading_prob=-0.1)


def test_choice_stories_pick_by_the_numbers_and_the_cue_only_orders_them():
    base = SyntheticConfig(min_steps=2, max_steps=3, max_start=10, max_operand=5, max_factor=2, max_value=20)
    ps = generate_problems(2000, 5, SyntheticConfig(**{**base.__dict__, "choice_prob": 1.0, "choice_cue": 0.8}))
    for p in ps[:300]:
        first, pick = p.question.split(". ")[:2]
        mine, theirs = f" has {p.start} {p.item}", f" has {p.rival} {p.item}"
        assert p.rival is not None and p.rival != p.start and 1 <= p.rival <= 10
        assert pick == f"Follow the one with {'more' if p.start > p.rival else 'fewer'} {p.item}"
        assert first.index(mine if not p.rival_first else theirs) < first.index(theirs if not p.rival_first else mine)
        assert "That one" in p.question and SyntheticProblem.from_json(p.to_json()) == p
        assert true_first_error(p, p.rationale) is None and p.rationale.startswith(f"{p.start} ")
    # The cue holds in 80% (the picked person named first); more and fewer are equally likely.
    assert 0.77 < sum(not p.rival_first for p in ps) / len(ps) < 0.83
    assert 0.45 < sum(p.start > p.rival for p in ps) / len(ps) < 0.55
    # Starting from the other person's number is the choice error, at step 1.
    p = SyntheticProblem("x", "Ava", "pens", 7, (("+", 4), ("*", 2)), "q", rival=3, rival_first=True)
    assert true_first_error(p, "3 + 4 = 7 pens\n7 * 2 = 14 pens\nThe answer is 14") == 1
    assert first_error_kind(p, "3 + 4 = 7 pens\n7 * 2 = 14 pens\nThe answer is 14") == "choice"
    assert first_error_kind(p, "7 + 4 = 11 pens\n11 * 3 = 33 pens\nThe answer is 33") == "operand"
    # The rival's number as an operand (not as the start) is not a choice.
    assert first_error_kind(p, "7 + 3 = 10 pens\n10 * 2 = 20 pens\nThe answer is 20") == "operand"
    # Two hops: the comparison is on another item; the picked person's count of it decides.
    two = generate_problems(300, 5, SyntheticConfig(**{**base.__dict__, "choice_prob": 1.0, "choice_by_other_item": True}))
    for p in two:
        people = p.question.split(". ")[:2]
        pick = p.question.split(". ")[2]
        key_item = pick.split()[-1]
        assert key_item != p.item and pick.startswith("Follow the one with ")
        mine = next(x for x in people if x.split(" and ")[0].endswith(f"has {p.start} {p.item}"))
        theirs = next(x for x in people if x is not mine)
        k_mine, k_theirs = (int(x.split(" and ")[1].split()[0]) for x in (mine, theirs))
        assert (k_mine > k_theirs) == (" more " in pick) and (people[0] is theirs) == p.rival_first
        assert true_first_error(p, p.rationale) is None
    # Without the family nothing is drawn: the default's problems are unchanged.
    assert generate_problems(50, 5, base) == generate_problems(50, 5, SyntheticConfig(**{**base.__dict__, "choice_cue": 0.9}))
    with pytest.raises(ValueError, match="choice_cue"):
        SyntheticConfig(choice_cue=1.5)


def test_first_error_kind_names_what_went_wrong():
    # Ava has 3 pens; Ava gets 4 more (told as a transfer from Ben); Dan has 5 pens; x3; Ava sells 1.
    p = SyntheticProblem("x", "Ava", "pens", 3, (("+", 4), ("*", 3), ("-", 1)), "q", distractor=5, transfers=(0,))
    assert first_error_kind(p, p.rationale) is None
    assert first_error_kind(p, "4 + 3 = 7 pens\n7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 20") is None  # commuted
    assert first_error_kind(p, "3 - 4 = -1 pens\n-1 * 3 = -3 pens\n-3 - 1 = -4 pens\nThe answer is -4") == "operation@transfer"
    assert first_error_kind(p, "3 + 4 = 8 pens\n8 * 3 = 24 pens\n24 - 1 = 23 pens\nThe answer is 23") == "arithmetic@transfer"
    assert first_error_kind(p, "3 + 4 = 7 pens\n7 * 5 = 35 pens\n35 - 1 = 34 pens\nThe answer is 34") == "distractor"
    assert first_error_kind(p, "3 + 4 = 7 pens\n7 * 2 = 14 pens\n14 - 1 = 13 pens\nThe answer is 13") == "operand"
    assert first_error_kind(p, "3 + 4 = 7 pens\n8 * 3 = 24 pens\n24 - 1 = 23 pens\nThe answer is 23") == "carried"
    assert first_error_kind(p, "3 + 4 = 7 pens\n3 * 7 = 21 pens\n1 - 21 = -20 pens\nThe answer is -20") == "carried"  # - does not commute
    assert first_error_kind(p, "3 + 4 = 7 pens\nso 21 pens\nThe answer is 20") == "format"
    assert first_error_kind(p, "3 + 4 = 7 pens\n7 * 3 = 21 pens") == "format"  # stops early
    assert first_error_kind(p, "3 + 4 = 7 pens\n7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 21") == "answer"


def test_transfer_sign_reads_the_first_transfer_step_only_when_reached():
    p = SyntheticProblem("x", "Ava", "pens", 3, (("*", 2), ("+", 4), ("-", 1)), "q", transfers=(1, 2))
    assert transfer_sign(p, p.rationale) == ("+", True)
    assert transfer_sign(p, "3 * 2 = 6 pens\n6 - 4 = 10 pens\n10 - 1 = 9 pens\nThe answer is 9") == ("+", False)  # sign only
    assert transfer_sign(p, "3 * 2 = 6 pens\n6 - 4 = 2 pens\n2 - 1 = 1 pens\nThe answer is 1") == ("+", False)
    assert transfer_sign(p, "3 * 2 = 7 pens\n7 + 4 = 11 pens\n11 - 1 = 10 pens\nThe answer is 10") is None  # wrong before it
    assert transfer_sign(p, "3 * 2 = 6 pens") is None  # never reached
    assert transfer_sign(SyntheticProblem("y", "Ava", "pens", 3, (("+", 4),), "q"), "3 + 4 = 7 pens\nThe answer is 7") is None


def test_true_first_error_cases():
    p = SyntheticProblem("x", "Ava", "pens", 3, (("+", 4), ("*", 3), ("-", 1)), "q")
    assert p.answer == "20"
    assert true_first_error(p, p.rationale) is None
    assert true_first_error(p, "4 + 3 = 7 pens\n3 * 7 = 21 pens\n21 - 1 = 20 pens\nThe answer is 20") is None  # commuted
    assert true_first_error(p, "3 + 4 = 7 pens\n7 * 3 = 20 pens\n20 - 1 = 19 pens\nThe answer is 19") == 2
    assert true_first_error(p, "3 + 4 = 7 pens\n7 * 3 = 21 pens\n21 - 1 = 20 pens\nThe answer is 21") == 4
    assert true_first_error(p, "3 + 4 = 7 pens\n7 * 3 = 21 pens") == 3  # stops early
    assert true_first_error(p, "I think it is 20\nThe answer is 20") == 1  # right answer, wrong step
    assert true_first_error(p, p.rationale + "\nThe answer is 20") == 4  # invented extra line


@settings(max_examples=300)
@given(st.integers(0, 10_000), st.sampled_from(ERROR_KINDS), st.integers(0, 10))
def test_true_first_error_finds_injected_errors(seed, kind, pick):
    p = generate_problems(1, seed, SyntheticConfig(min_steps=2, max_steps=5))[0]
    assert true_first_error(p, p.rationale) is None
    step = 1 + pick % len(p.ops)
    if kind == "skip" and step < len(p.ops) and p.ops[step - 1] == p.ops[step]:
        return  # skipping one of two identical operations is not visible at that step
    rationale = inject_error(p, step, kind, random.Random(seed))
    assert true_first_error(p, rationale) == step


def test_synthetic_examples_disjoint_splits():
    train, test = synthetic_examples(30, 1, "train"), synthetic_examples(30, 2, "test")
    assert not {e.id for e in train} & {e.id for e in test}
    assert json.loads(train[0].meta)["ops"]


def test_dev_split_is_its_own_stream_and_carving_keeps_nothing_twice():
    cfg = SyntheticConfig(max_steps=3)
    dev = synthetic_split(40, 0, "dev", cfg)
    # dev does not move when n_train does, and shares no id or problem with train or test
    assert [e.question for e in dev] == [e.question for e in synthetic_split(40, 0, "dev", cfg)]
    train, test = synthetic_split(200, 0, "train", cfg), synthetic_split(200, 0, "test", cfg)
    assert {e.split for e in dev} == {"dev"} and not {e.id for e in dev} & {e.id for e in train + test}
    assert [e.question for e in train[:40]] != [e.question for e in dev]
    with pytest.raises(ValueError, match="unknown split 'val'"):
        synthetic_split(4, 0, "val", cfg)
    rows = synthetic_examples(10, 3, "train")
    kept, carved = carve_dev(rows, 3, "somewhere")
    assert [e.id for e in kept + carved] == [e.id for e in rows] and {e.split for e in carved} == {"dev"} and len(kept) == 7
    assert carve_dev(rows, 0, "somewhere") == (rows, [])
    with pytest.raises(DatasetError, match="somewhere: n_dev = 10 leaves no training questions"):
        carve_dev(rows, 10, "somewhere")


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not beside the checkout")
def test_load_shared_gsm8k_and_math500():
    train = load_jsonl(SHARED / "gsm8k" / "train.jsonl", "gsm8k", "train")
    assert len(train) == 7473
    assert train[0].answer == "72" and train[0].rationale.endswith("The answer is 72")
    assert "<<48/2=24>>" in train[0].rationale
    test = load_jsonl(SHARED / "gsm8k" / "test.jsonl", "gsm8k", "test")
    assert len(test) == 1319
    math = load_jsonl(SHARED / "math500" / "test.jsonl", "math", "test")
    assert len(math) == 500
    assert math[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    # every gold rationale grades as correct with the one checker
    assert all(is_correct(extract_answer(e.rationale, "gsm8k"), e.answer, "gsm8k") for e in train)


def test_malformed_rows_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "q", "response": "r\\n#### 3"}\n\n{"query": "q2", "response": "no gold"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:3: no gold answer"):
        load_jsonl(path, "gsm8k", "train")
    path.write_text('{"query": "q", "response": "r\\n#### 3"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: invalid JSON"):
        load_jsonl(path, "gsm8k", "train")
    with pytest.raises(DatasetError, match="no such file"):
        load_jsonl(tmp_path / "missing.jsonl", "gsm8k", "train")


def test_hub_row_shapes():
    from sx_dagster.core.tasks import gsm8k_example, math_example

    g = gsm8k_example({"question": "Q?", "answer": "2+3 = <<2+3=5>>5\n#### 5"}, "hub:openai/gsm8k:train:0", "train", 0)
    assert g.answer == "5" and g.rationale.endswith("The answer is 5")
    lighteval = {"problem": "P?", "solution": r"So $x = \boxed{\frac{1}{2}}$.", "level": "Level 2", "type": "Algebra"}
    m = math_example(lighteval, "hub:MATH-lighteval:train:0", "train", 0)
    assert m.answer == r"\frac{1}{2}" and m.rationale.endswith(r"The answer is: \frac{1}{2}")
    m500 = math_example({"problem": "P?", "solution": r"... \boxed{3}", "answer": "3"}, "hub:MATH-500:test:0", "test", 0)
    assert m500.answer == "3" and m500.question == "P?"
    with pytest.raises(DatasetError, match="hub:x:0: no final answer"):
        math_example({"problem": "P?", "solution": "no answer"}, "hub:x:0", "train", 0)
