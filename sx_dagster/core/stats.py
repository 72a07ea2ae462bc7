"""Paired comparisons of two models on the same test questions (the README's significance line).

Accuracy differences of a few points on 1,000 questions are within noise unless the two
models are compared question by question: McNemar's exact test counts only the questions
where they disagree, and a bootstrap over questions gives an interval for the difference.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedTest:
    n: int  # questions compared (pooled over seeds)
    a_only: int  # questions model A got right and B wrong
    b_only: int
    diff_points: float  # accuracy(A) - accuracy(B), percentage points
    ci_low: float  # 95% bootstrap interval of the difference, points
    ci_high: float
    p_value: float  # McNemar exact two-sided


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial(a_only + b_only, 1/2) test on the discordant pairs."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    # log-space binomial tail: exact for any n without overflowing floats
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return min(1.0, 2 * tail)


def paired_test(a: Sequence[bool], b: Sequence[bool], resamples: int = 2000, seed: int = 0) -> PairedTest:
    """Compare per-question correctness of A and B (same questions, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired test needs the same questions: {len(a)} vs {len(b)} results")
    n = len(a)
    if n == 0:
        raise ValueError("paired test needs at least one question")
    d = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    a_only, b_only = d.count(1), d.count(-1)
    rng = random.Random(seed)
    diffs = sorted(100 * sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return PairedTest(
        n=n,
        a_only=a_only,
        b_only=b_only,
        diff_points=100 * (a_only - b_only) / n,
        ci_low=diffs[int(0.025 * resamples)],
        ci_high=diffs[min(resamples - 1, int(0.975 * resamples))],
        p_value=mcnemar_exact(a_only, b_only),
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
