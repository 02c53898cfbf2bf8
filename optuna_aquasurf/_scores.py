"""What trials say about their functions: one score per function, and scores as quantiles."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import rankdata


def trial_score(trial: FrozenTrial) -> float | None:
    """A completed trial's value, or a pruned trial's last reported value; else None."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def function_scores(
    results: Iterable[tuple[int, float | None, bool]], maximize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Functions with a score and their scores, from ``(function, score, failed)`` results.

    A function's score is the mean of its results with a score. A function whose results all
    failed gets the worst score observed (nothing while there is none); a result that neither
    scored nor failed (a running trial) says nothing.
    """
    values: dict[int, list[float]] = {}
    failed: list[int] = []
    for function, score, has_failed in results:
        if score is not None:
            values.setdefault(function, []).append(score)
        elif has_failed:
            failed.append(function)
    if values and failed:
        observed = [v for vs in values.values() for v in vs]
        worst = min(observed) if maximize else max(observed)
        for function in failed:
            values.setdefault(function, [worst])  # a retry that completed overrides
    functions = np.array(sorted(values), dtype=np.int64)
    # Most functions have one result, whose value is its mean: np.mean is slow for a few values.
    scores = np.array(
        [values[f][0] if len(values[f]) == 1 else np.mean(values[f]) for f in functions],
        dtype=np.float64,
    )
    return functions, scores


def quantiles(scores: np.ndarray, maximize: bool) -> np.ndarray:
    """Each score's place among ``scores``, from near 0 (the worst) to near 1 (the best): its
    mid-rank over the number of scores (ties share their mean rank)."""
    ranks = rankdata(scores if maximize else -np.asarray(scores))
    return (ranks - 0.5) / len(ranks)
