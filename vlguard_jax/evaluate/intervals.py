"""How certain a rate is: a percentile bootstrap over prompts, and for two runs on the same
prompts the paired difference with its own interval and an exact McNemar test.

Every interval is reproducible: RESAMPLES resamples drawn from numpy's Generator at SEED, and the
2.5th and 97.5th percentiles of the resampled rates (numpy's default linear interpolation). A rate
over no prompts has the interval [0, 0].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """Prompt indices [resamples, n], with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(hits: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """[lo, hi]: the 95% percentile-bootstrap interval of the mean of `hits`, one per prompt (a
    share where they are booleans, e.g. an F1 where they are scores)."""
    x = np.asarray(hits, np.float64)
    if x.size == 0:
        return [0.0, 0.0]
    rates = x[_draws(x.size, resamples, seed)].mean(axis=1)
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return [float(lo), float(hi)]


def ratio_ci(num: Sequence[float], den: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """[lo, hi] of mean(num) / mean(den), resampling each list's prompts on its own (the two means
    come from different runs); [0, 0] where either is empty or a resampled denominator is 0."""
    a, b = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if a.size == 0 or b.size == 0:
        return [0.0, 0.0]
    top = a[_draws(a.size, resamples, seed)].mean(axis=1)
    bottom = b[_draws(b.size, resamples, seed + 1)].mean(axis=1)
    if (bottom == 0).any():
        return [0.0, 0.0]
    lo, hi = np.percentile(top / bottom, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_of_rates_ci(groups: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """[lo, hi] of the mean of several groups' rates (each group weighing the same, as HoliSafe's
    avg_asr), each group's prompts resampled on its own; [0, 0] with no non-empty group."""
    arrays = [np.asarray(g, np.float64) for g in groups if len(g)]
    if not arrays:
        return [0.0, 0.0]
    means = np.mean([a[_draws(a.size, resamples, seed + k)].mean(axis=1) for k, a in enumerate(arrays)], axis=0)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value for b and c discordant pairs (a binomial test of b
    against n = b + c at one half): min(1, 2 * P[X <= min(b, c)])."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(before: Sequence[bool], after: Sequence[bool], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """The change in a rate between two runs on the same prompts (flags in the same order):
    `difference` (after - before), its bootstrap interval over prompts resampled in pairs, the
    discordant counts and the exact McNemar p-value."""
    x, y = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired rates need the same prompts: {x.size} against {y.size}")  # a bug: callers match keys
    if x.size == 0:
        return {"n": 0, "difference": 0.0, "difference_ci95": [0.0, 0.0], "b": 0, "c": 0, "p_mcnemar": 1.0}
    idx = _draws(x.size, resamples, seed)
    diffs = y[idx].mean(axis=1) - x[idx].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    b, c = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    return {
        "n": int(x.size),
        "difference": float(y.mean() - x.mean()),
        "difference_ci95": [float(lo), float(hi)],
        "b": b,
        "c": c,
        "p_mcnemar": mcnemar_exact(b, c),
    }


class Rate(float):
    """A percentage and, where one is known, its 95% interval (`ci`, percentages)."""

    ci: list[float] | None = None


def rate(value: float, ci: Sequence[float] | None) -> Rate:
    """A share (0..1) and its interval as a Rate in percent."""
    r = Rate(100 * value)
    r.ci = None if ci is None else [100 * x for x in ci]
    return r


def rate_of(scores: dict, key: str) -> Rate:
    """The rate `key` of a summary's scores with its interval (`<key>_ci95`) where they hold one."""
    return rate(scores[key], scores.get(f"{key}_ci95"))
