"""Transfer: what earlier searches' scores predict here, and how much to trust them.

Each prior source gives quantiles (0 worst, 1 best) on the functions it scored. Spread over the
space by the same inverse-distance kNN as the study's own surrogate, they predict a quantile for
every function; the study's own scores turn that quantile into a score (the quantile of its own
scores). The prediction the sampler ranks by is a weighted mean of its own surrogate's and the
sources', where a source counts as :data:`PRIOR_OBSERVATIONS` observations of the study's own
(fewer far from the functions it scored), times its agreement with the study: the rank
correlation of their scores on the functions both scored, lowered by its standard error, once
there are :data:`AGREEMENT_AFTER` of them (none when they disagree). The prior's share thus
falls as the study's own observations grow, and a source that ranks functions the other way
counts for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: What a source that agrees with the study is worth, in observations of the study's own.
PRIOR_OBSERVATIONS = 8.0
#: Functions scored by both the study and a source before their agreement sets its weight.
AGREEMENT_AFTER = 5
#: The largest rank correlation taken as it is (``atanh`` of 1 is infinite).
AGREEMENT_CAP = 0.999


@dataclass(frozen=True)
class PriorSurface:
    """One source's scores spread over the space.

    Attributes
    ----------
    functions, quantiles
        The functions the source scored and their quantiles.
    predicted
        The quantile predicted for every function (the kNN of the sampler's surrogate, see
        :func:`optuna_aquasurf._surrogate.prior_surface`).
    closeness
        How close every function is to the nearest function the source scored: 1 on one,
        falling as ``exp(-(d / length_scale)**2)``.
    """

    functions: np.ndarray
    quantiles: np.ndarray
    predicted: np.ndarray
    closeness: np.ndarray


def agreement(surface: PriorSurface, functions: np.ndarray, scores: np.ndarray) -> float:
    """The weight of a source, from 0 to 1: how surely its quantiles rank the functions both it
    and the study scored as the study's ``scores`` (higher is better) do.

    That is the lower end of the one-standard-error interval of their Spearman correlation
    (``tanh(atanh(rho) - 1 / sqrt(n - 3))`` over ``n`` shared functions), clipped at 0: a
    correlation measured on a few functions counts for less. 1 while they share fewer than
    :data:`AGREEMENT_AFTER`.
    """
    from scipy.stats import spearmanr

    shared, mine, theirs = np.intersect1d(functions, surface.functions, return_indices=True)
    if len(shared) < AGREEMENT_AFTER:
        return 1.0
    correlation = spearmanr(scores[mine], surface.quantiles[theirs]).statistic
    if not correlation > 0:  # NaN (constant scores) too
        return 0.0
    low = np.tanh(np.arctanh(min(correlation, AGREEMENT_CAP)) - 1 / np.sqrt(len(shared) - 3))
    return float(max(low, 0.0))


def with_prior(
    surfaces: list[PriorSurface],
    functions: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The prediction of every function with the sources' (scores: higher is better), and the
    sources' share of it, per function.

    Parameters
    ----------
    surfaces
        The sources.
    functions, scores
        The study's own observations.
    predicted
        Its own surrogate's prediction of every function; None while it has no observation:
        the prediction is then the sources' quantile.
    """
    weights = [PRIOR_OBSERVATIONS * agreement(s, functions, scores) * s.closeness for s in surfaces]
    total = np.sum(weights, axis=0)
    with np.errstate(invalid="ignore"):
        quantile = sum(w * s.predicted for w, s in zip(weights, surfaces)) / total
    quantile = np.where(total > 0, quantile, 0.5)
    if predicted is None:
        return quantile, np.ones_like(quantile)
    share = total / (total + len(scores))
    return (1 - share) * predicted + share * np.quantile(scores, quantile), share
