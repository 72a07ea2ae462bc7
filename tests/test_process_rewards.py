"""Process rewards (issue 25) on hand-built rows: the step_labels asset's reading of DuckDB
(pits, explorations, D_pair, RFT's kept samples) and best-of-N's selection rules."""

import pandas as pd
import pytest

from sx_dagster.assets.prm import format_best_of_n
from sx_dagster.assets.step_labels import _labels
from sx_dagster.core.best_of_n import Candidate, auc, best_of_n_correct, majority_pick, prm_pick, rationale_score
from sx_dagster.core.step_labels import first_low_step, held_out
from sx_dagster.resources import LineageStore

EXP = "hand"
RIGHT = "3 + 4 = 7 pens\n7 * 3 = 21 pens\nThe answer is 21"
WRONG = "3 + 4 = 7 pens\n7 * 2 = 14 pens\n14 - 1 = 13 pens\nThe answer is 13"


def _rows(store: LineageStore, table: str, rows: list[dict]) -> None:
    df = pd.DataFrame(rows)
    df["experiment"], df["run_id"] = EXP, "r0"
    with store.transaction() as conn:
        store._insert(conn, table, df)


@pytest.fixture
def store(tmp_path) -> LineageStore:
    """One question; a correct sample RFT kept; three rejected rationales: r1 explored linearly
    (k = 2: step 1 half right, step 2 the pit), r2 in two D_pair pairs with step 1 proven by the
    pool and the pit at 3, r3 with no pit."""
    s = LineageStore(database=str(tmp_path / "hand.duckdb"))
    _rows(s, "questions", [dict(id="q1", split="train", question="Ava has 3 pens.", answer="21", meta=None)])
    samples = [("c1", RIGHT, True), ("r1", WRONG, False), ("r2", WRONG, False), ("r3", WRONG, False)]
    _rows(
        s,
        "samples",
        [dict(id=i, question_id="q1", idx=n, text=t, correct=c, checkpoint_id="hand/sft@x") for n, (i, t, c) in enumerate(samples)],
    )
    _rows(s, "rft_data", [dict(id="q1/k0", question_id="q1", sample_id="c1", source="sample", prompt="P", completion=RIGHT)])
    pairs = [("p1", "r1"), ("p2", "r2"), ("p3", "r2"), ("p4", "r3")]
    _rows(s, "outcome_pairs", [dict(id=p, question_id="q1", chosen_sample_id="c1", rejected_sample_id=r, rejected=WRONG) for p, r in pairs])
    pit = dict(question_id="q1", k=2, checkpoint_id="hand/rft@y")
    _rows(
        s,
        "pits",
        [
            dict(pair_id="p1", sample_id="r1", pit=2, proven=0, **pit),
            dict(pair_id="p2", sample_id="r2", pit=3, proven=1, **pit),
            dict(pair_id="p3", sample_id="r2", pit=3, proven=1, **pit),
            dict(pair_id="p4", sample_id="r3", pit=None, proven=0, **pit),
        ],
    )
    x = [("p1", 1, [True, False]), ("p1", 2, [False, False]), ("p2", 2, [True]), ("p2", 3, [False, False]), ("p4", 1, [True])]
    _rows(
        s,
        "explorations",
        [dict(id=f"{p}/x{st}-{j}", pair_id=p, step=st, idx=j, correct=ok) for p, st, oks in x for j, ok in enumerate(oks)],
    )
    return s


def test_step_labels_read_from_duckdb_follow_every_rule(store):
    labels, samples = _labels(store, EXP, "synthetic")
    got = {(lab.sample_id, lab.step): (lab.good, lab.source, lab.soft, lab.evidence) for lab in labels}
    assert got == {
        # a kept correct sample: every step good
        ("c1", 1): (True, "correct-sample", None, ()),
        ("c1", 2): (True, "correct-sample", None, ()),
        ("c1", 3): (True, "correct-sample", None, ()),
        # linear, k = 2 drawn at each step: soft labels (1 of 2 right at step 1, none at the pit)
        ("r1", 1): (True, "completion", 0.5, ("p1/x1-0",)),
        ("r1", 2): (False, "pit", 0.0, ("p1/x2-0", "p1/x2-1")),
        # pool proves step 1; early stop drew one completion at step 2 (no soft label); the pit at 3;
        # r2 sits in two pairs and is labelled once (from its first pair)
        ("r2", 1): (True, "pool", None, ()),
        ("r2", 2): (True, "completion", None, ("p2/x2-0",)),
        ("r2", 3): (False, "pit", 0.0, ("p2/x3-0", "p2/x3-1")),
        # no pit: only the proven step
        ("r3", 1): (True, "completion", None, ("p4/x1-0",)),
    }
    assert all((lab.sample_id, lab.step) != ("r1", 3) for lab in labels)  # after the pit: unlabelled
    assert samples["r1"]["checkpoint_id"] == "hand/rft@y" and samples["c1"]["checkpoint_id"] == "hand/sft@x"
    assert samples["r2"]["pair_id"] == "p2" and samples["c1"]["kind"] == "correct"


def test_held_out_split_is_stable_and_near_its_share():
    ids = [f"synthetic-train-{i}" for i in range(4000)]
    share = sum(held_out(i, 0.1) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [held_out(i, 0.1) for i in ids[:50]] == [held_out(i, 0.1) for i in ids[:50]]
    assert not any(held_out(i, 0.0) for i in ids)


def test_first_low_step_is_the_prm_guess_of_the_first_error():
    assert first_low_step([0.9, 0.2, 0.1], 0.5) == 2
    assert first_low_step([0.9, 0.8], 0.5) is None
    assert first_low_step([], 0.5) is None


def test_best_of_n_rules_pick_by_prm_score_and_by_vote():
    cands = [
        Candidate("13", False, (0.9, 0.2, 0.8)),  # weakest step 0.2, last 0.8
        Candidate("21", True, (0.7, 0.6, 0.6)),  # weakest 0.6
        Candidate("13", False, (0.9, 0.9, 0.3)),  # weakest 0.3, last 0.3
        Candidate(None, False, ()),
    ]
    assert rationale_score(cands[0].step_scores, "min") == 0.2 and rationale_score(cands[0].step_scores, "last") == 0.8
    assert prm_pick(cands, "min") == 1 and prm_pick(cands, "last") == 0
    assert majority_pick(cands) == 0  # "13" twice; no answer does not vote
    assert best_of_n_correct(cands) == dict(prm_min=True, prm_last=False, majority=False, pass_at_n=True, first_sample=False)
    # ties go to the earliest sample
    assert prm_pick([Candidate("1", False, (0.5,)), Candidate("2", True, (0.5,))], "min") == 0
    assert majority_pick([Candidate("1", False), Candidate("2", True)]) == 0
    with pytest.raises(ValueError, match="unknown aggregate"):
        rationale_score([0.5], "mean")


def test_best_of_n_table_has_a_column_per_rule():
    df = pd.DataFrame(
        [
            dict(model="SFT", rule=r, accuracy=a, best_of=8)
            for r, a in [("greedy", 0.8), ("majority", 0.82), ("prm_min", 0.85), ("pass_at_n", 0.9)]
        ]
    )
    table = format_best_of_n(df)
    assert table.splitlines()[0] == "| model | greedy | majority@8 | PRM min@8 | pass@8 |"
    assert "| SFT | 80.00 | 82.00 | 85.00 | 90.00 |" in table


def test_step_features_put_one_label_on_the_last_token_of_each_step():
    from sx_dagster.ml.prm import IGNORE, class_weights, step_features
    from sx_dagster.ml.tiny import train_tokenizer

    tok = train_tokenizer([f"Question: Ava has {i} pens.\nAnswer:\n{WRONG}\n{RIGHT}" for i in range(20)], 300)
    prompt, steps = "Question: Ava has 3 pens.\nAnswer:\n", WRONG.split("\n")
    ids, labels, ends = step_features(tok, prompt, steps, [True, False, True, True])
    assert len(ids) == len(labels) and len(ends) == 4
    assert [labels[e] for e in ends] == [1, 0, 1, 1]
    assert all(t == IGNORE for i, t in enumerate(labels) if i not in ends)
    # each boundary closes its step: decoding up to it gives the prompt and the steps so far
    assert tok.decode(ids[: ends[1] + 1], skip_special_tokens=True) == prompt + "\n".join(steps[:2]) + "\n"
    # scoring uses the same ids; a step that would pass max_length is dropped whole
    assert step_features(tok, prompt, steps)[0] == ids
    cut = step_features(tok, prompt, steps, max_length=ends[1] + 1)
    assert cut[2] == ends[:2]
    # a row whose steps do not all fit is counted (the asset warns), and kept with the steps that fit
    from sx_dagster.ml.prm import _features

    row = {"prompt": prompt, "completions": steps, "labels": [True, False, True, True]}
    feats, n_cut = _features(tok, [row, row], ends[1] + 1)
    assert n_cut == 2 and [f["labels"][e] for e in ends[:2] for f in feats[:1]] == [1, 0]
    assert _features(tok, [row], 10_000)[1] == 0
    # rare bad steps weigh as much in total as the common good ones
    bad_w, good_w = class_weights([{"labels": labels}])
    assert bad_w * 1 == good_w * 3 == 2.0
    assert class_weights([{"labels": [IGNORE, 1, 1]}]) is None


def test_auc_is_the_chance_a_right_rationale_outscores_a_wrong_one():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    assert auc([0.5, 0.5], [0.5]) == 0.5  # a constant score tells nothing
    assert auc([0.3, 0.7], [0.5]) == 0.5
    assert auc([], [0.5]) is None
