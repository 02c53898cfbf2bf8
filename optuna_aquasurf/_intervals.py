"""Intervals of mean scores and of their differences, for confirmed functions (see
:func:`optuna_aquasurf.confirm`): t-intervals, Welch's for a difference. Needs scipy, not torch."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: The confidence of every interval.
CONFIDENCE = 0.95


def mean_interval(scores: list[float]) -> tuple[float, float] | None:
    """The 95% t-interval of the mean of ``scores`` (None below 2)."""
    n = len(scores)
    if n < 2:
        return None
    return _t_interval(np.mean(scores), np.var(scores, ddof=1) / n, n - 1)


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """The 95% Welch interval of ``mean(a) - mean(b)``, with Welch–Satterthwaite degrees of
    freedom (None below 2 scores on either side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    variance_a, variance_b = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    variance = variance_a + variance_b
    squares = variance_a**2 / (len(a) - 1) + variance_b**2 / (len(b) - 1)
    freedom = variance**2 / squares if squares > 0 else math.inf
    return _t_interval(np.mean(a) - np.mean(b), variance, freedom)


def _t_interval(center: float, variance: float, freedom: float) -> tuple[float, float]:
    half_width = stats.t.ppf((1 + CONFIDENCE) / 2, freedom) * math.sqrt(variance)
    return float(center - half_width), float(center + half_width)


def is_better(difference_interval: tuple[float, float] | None, maximize: bool) -> bool:
    """Whether a difference of scores with this interval is an improvement beyond doubt."""
    if difference_interval is None:
        return False
    low, high = difference_interval
    return low > 0 if maximize else high < 0
