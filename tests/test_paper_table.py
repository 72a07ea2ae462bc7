"""benchmarks/paper_table.py's synthetic-task readout: each model's first-error kinds and the
sign it writes at the first transfer step, from predictions with a known answer."""

import csv
import sys
from pathlib import Path

import pandas as pd

from sx_dagster.core.synthetic import SyntheticConfig, generate_problems, step_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_table  # noqa: E402


def _flip_first_transfer(p) -> tuple[str, bool]:
    """A rationale that writes the wrong sign at the first transfer and computes on from there;
    and whether its final answer still comes out right."""
    i, value, lines = p.transfers[0], p.start, []
    for j, (op, q) in enumerate(p.ops):
        op = {"+": "-", "-": "+"}[op] if j == i else op
        lines.append(step_line(value, op, q, p.item))
        value = value + q if op == "+" else value - q if op == "-" else value * q
    return "\n".join([*lines, f"The answer is {value}"]), str(value) == p.answer


def test_tables_count_error_kinds_and_transfer_signs_per_model(capsys, tmp_path):
    cfg = SyntheticConfig(min_steps=2, max_steps=3, max_start=10, max_operand=5, max_factor=2, max_value=30, transfer_prob=1.0)
    problems = [p for p in generate_problems(60, 4, cfg) if p.transfers][:20]
    meta = pd.DataFrame({"id": [p.id for p in problems], "meta": [p.to_json() for p in problems]})
    rows = []
    for p in problems:
        flipped, still_right = _flip_first_transfer(p)
        rows += [
            ("base (few-shot)", p.id, "nonsense", False),  # the few-shot base is left out
            ("RFT", p.id, p.rationale, True),
            ("Self-Explore", p.id, flipped, still_right),
        ]
    preds = pd.DataFrame(rows, columns=["model", "question_id", "text", "correct"])
    first_errors, signs = {}, {}
    paper_table.tally_synthetic(meta, preds, first_errors, signs)
    assert set(first_errors) == {"Self-Explore"} and set(signs) == {"RFT", "Self-Explore"}
    assert sum(first_errors["Self-Explore"].values()) == 20
    assert set(first_errors["Self-Explore"]) <= {"operation@transfer", paper_table.RIGHT_ANSWER_WRONG_STEP}
    assert sum(signs["RFT"][(op, True)] for op in "+-") == 20 and sum(signs["Self-Explore"][(op, False)] for op in "+-") == 20
    table = paper_table.synthetic_tables(first_errors, signs)
    out = capsys.readouterr().out
    assert "| RFT | 100.0% of" in out and "| Self-Explore | 0.0% of" in out and "all right" in out
    assert {r["kind"] for r in table} == set(first_errors["Self-Explore"])


def test_results_file_widens_its_header_for_a_new_column(tmp_path):
    # A run with pass@N columns appended to a file without them: every value stays under its name.
    path = tmp_path / "runs.csv"
    paper_table._append_rows(path, [{"label": "a", "SFT": 60.0}])
    paper_table._append_rows(path, [{"label": "b", "SFT": 61.0, "SFT_pass@8": 90.0}])
    paper_table._append_rows(path, [{"label": "c", "SFT": 62.0}])
    rows = list(csv.DictReader(path.open()))
    assert [(r["label"], r["SFT"], r["SFT_pass@8"]) for r in rows] == [("a", "60.0", ""), ("b", "61.0", "90.0"), ("c", "62.0", "")]
    assert len(path.read_text().splitlines()) == 4  # one header
