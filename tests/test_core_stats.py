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


def test_seed_question_bootstrap_keeps_the_seed_noise_in():
    from sx_dagster.core.stats import seed_question_bootstrap

    # A beats B by 6 points in every seed: a tight interval, p ~ 0
    a = [[True] * 56 + [False] * 44 for _ in range(5)]
    b = [[True] * 50 + [False] * 50 for _ in range(5)]
    t = seed_question_bootstrap(a, b, resamples=500)
    assert t.seeds == 5 and t.diff_points == pytest.approx(6.0) and t.seed_diffs == (6.0,) * 5
    assert 0 < t.ci_low < 6.0 < t.ci_high and t.p_value < 0.05
    # the same pooled difference carried by one seed (+30, then 0 four times): pooled over seeds a
    # McNemar test would call it certain; over seeds the interval reaches zero
    a2 = [[True] * 80 + [False] * 20] + [[True] * 50 + [False] * 50] * 4
    b2 = [[True] * 50 + [False] * 50] * 5
    pooled = paired_test([x for s in a2 for x in s], [x for s in b2 for x in s])
    t2 = seed_question_bootstrap(a2, b2, resamples=500)
    assert t2.diff_points == pytest.approx(pooled.diff_points) and pooled.p_value < 1e-6
    assert t2.ci_low <= 0 and t2.p_value > 0.05
    with pytest.raises(ValueError, match="same seeds"):
        seed_question_bootstrap(a, b[:4])
