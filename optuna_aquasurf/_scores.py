"""What trials say about their functions: one score per function, and scores as quantiles.

A study scores activations with one objective, or with two: the score and the activation's
cost (``directions=[..., "minimize"]``, the second value being ``act.cost``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import rankdata


def has_cost_objective(study: optuna.Study) -> bool:
    """Whether ``study`` has two objectives, the score and the activation's cost (minimised)."""
    return len(study.directions) == 2 and study.directions[1] == StudyDirection.MINIMIZE


def maximizes_score(study: optuna.Study) -> bool:
    """Whether the score (the first objective) of ``study`` is maximised.

    Raises
    ------
    ValueError
        For a multi-objective study other than (score, cost).
    """
    if len(study.directions) > 1 and not has_cost_objective(study):
        directions = [d.name.lower() for d in study.directions]
        raise ValueError(
            f"study {study.study_name!r} has the objectives {directions}: activations are "
            "searched for one objective, the score, or for two, the score and the activation's "
            'cost (directions=[..., "minimize"], the second value being act.cost)'
        )
    return study.directions[0] == StudyDirection.MAXIMIZE


def trial_score(trial: FrozenTrial) -> float | None:
    """A completed trial's value (its first, in a study of score and cost), or a pruned
    trial's last reported value; else None."""
    if trial.state == TrialState.COMPLETE and trial.values:
        return float(trial.values[0])
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
