"""Paired comparisons of two models on the same test questions (the README's significance line).

Accuracy differences of a few points on 1,000 questions are within noise unless the two
models are compared question by question: McNemar's exact test counts only the questions
where they disagree, and a bootstrap over questions gives an interval for the difference.
Pooled over seeds, both ignore that a seed moves every answer of a model at once: the
bootstrap over seeds and questions (:func:`seed_question_bootstrap`) keeps that noise in.
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


@dataclass(frozen=True)
class SeedBootstrap:
    seeds: int
    diff_points: float  # mean over seeds of accuracy(A) - accuracy(B), points
    seed_diffs: tuple[float, ...]  # the difference of each seed, points
    ci_low: float  # 95% interval from resampling seeds, then questions within each seed
    ci_high: float
    p_value: float  # two-sided: twice the share of resampled differences on the far side of 0


def seed_question_bootstrap(
    a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], resamples: int = 2000, seed: int = 0
) -> SeedBootstrap:
    """A against B over seeds: ``a[s][q]`` is whether A got question q right with seed s (same
    questions, same order, in every seed). Each resample draws seeds with replacement, then
    questions with replacement within each drawn seed, so both the seed-to-seed spread and
    the questions' are in the interval: with few seeds it is wide, as it should be."""
    if len(a) != len(b) or not a:
        raise ValueError(f"seed bootstrap needs the same seeds for both models: {len(a)} vs {len(b)}")
    diffs_by_seed = []
    for x, y in zip(a, b, strict=True):
        if len(x) != len(y) or not x:
            raise ValueError(f"seed bootstrap needs the same questions in a seed: {len(x)} vs {len(y)} results")
        diffs_by_seed.append([int(u) - int(v) for u, v in zip(x, y, strict=True)])
    seed_diffs = tuple(100 * sum(d) / len(d) for d in diffs_by_seed)
    rng = random.Random(seed)
    k = len(diffs_by_seed)
    samples = []
    for _ in range(resamples):
        total = 0.0
        for _ in range(k):
            d = diffs_by_seed[rng.randrange(k)]
            n = len(d)
            total += sum(d[rng.randrange(n)] for _ in range(n)) / n
        samples.append(100 * total / k)
    samples.sort()
    mean = sum(seed_diffs) / k
    far = sum(x <= 0 for x in samples) if mean > 0 else sum(x >= 0 for x in samples)
    return SeedBootstrap(
        seeds=k,
        diff_points=mean,
        seed_diffs=seed_diffs,
        ci_low=samples[int(0.025 * resamples)],
        ci_high=samples[min(resamples - 1, int(0.975 * resamples))],
        p_value=min(1.0, 2 * far / resamples) if mean != 0 else 1.0,
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
