"""Paired significance test and pass@k: hand-checked values."""

import pytest

from sx_dagster.core.stats import mcnemar_exact, paired_test, pass_at_k


def test_paired_test_hand_checked():
    # 10 discordant questions split 8/2: P(X <= 2 | Bin(10, 1/2)) = 56/1024, two-sided 0.109375
    assert mcnemar_exact(8, 2) == pytest.approx(0.109375)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    a = [True] * 8 + [False] * 2 + [True] * 90
    b = [False] * 8 + [True] * 2 + [True] * 90
    t = paired_test(a, b)
    assert (t.n, t.a_only, t.b_only) == (100, 8, 2)
    assert t.diff_points == pytest.approx(6.0) and t.ci_low < 6.0 < t.ci_high and t.p_value == pytest.approx(0.109375)
    with pytest.raises(ValueError, match="same questions"):
        paired_test([True], [True, False])
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 4) == 1.0
