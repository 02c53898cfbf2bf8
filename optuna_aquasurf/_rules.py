"""The rules that rank the untried functions for the next pick, given the surrogate.

A rule is chosen once, when the sampler is built (:data:`RULES`, by the name its
``acquisition`` takes); a study of score and cost wraps it in :class:`FrontGain`. Each rule
returns the best candidates first: the next pick is the first that no other worker has claimed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optuna_aquasurf import _front
from optuna_aquasurf._surrogate import Surrogate


@dataclass
class Pick:
    """What a rule ranks from: the surrogate and one study's state at this pick.

    Attributes
    ----------
    surrogate
        The study's :class:`~optuna_aquasurf._surrogate.Surrogate`.
    functions, scores
        The scored functions and their scores (higher is better).
    tried
        The functions tried or being tried (sorted).
    candidates
        The functions that may be picked (sorted).
    rng
        The randomness of this pick.
    n
        How many candidates to rank.
    """

    surrogate: Surrogate
    functions: np.ndarray
    scores: np.ndarray
    tried: np.ndarray
    candidates: np.ndarray
    rng: np.random.Generator
    n: int


class Greedy:
    """The reference's rule: the best predicted score."""

    #: Whether :class:`FrontGain` can rank by this rule's :meth:`optimistic` score.
    ranks_fronts = True

    def optimistic(self, pick: Pick) -> np.ndarray:
        """The score of every function that the rule ranks by, before any scaling."""
        predicted, _ = pick.surrogate.predict(pick.functions, pick.scores)
        return predicted

    def rank(self, pick: Pick) -> np.ndarray:
        return best(self.optimistic(pick)[pick.candidates], pick.candidates, pick.n)


class UpperConfidenceBound(Greedy):
    """The predicted score plus ``kappa`` times its uncertainty, ``kappa`` drawn for every pick
    from an exponential distribution of mean ``exploration``: some picks exploit, some explore."""

    #: ``exploration`` unless given: chosen on the Act-Bench-Digits cnn and regression tables
    #: (of 0.1, 0.25 and 0.5; see benchmarks/README.md).
    default_exploration = 0.25

    def __init__(self, exploration: float | None = None):
        self.exploration = self.default_exploration if exploration is None else exploration

    def optimistic(self, pick: Pick) -> np.ndarray:
        predicted, spread = pick.surrogate.predict(pick.functions, pick.scores, uncertainty=True)
        kappa = pick.rng.exponential(self.exploration)
        return predicted + kappa * spread


class DistanceBonus(Greedy):
    """The predicted score plus ``exploration`` times the distance to the nearest tried
    function, both scaled to [0, 1] over the candidates: regions far from everything tried keep
    a chance."""

    default_exploration = 0.5

    def __init__(self, exploration: float | None = None):
        self.exploration = self.default_exploration if exploration is None else exploration

    ranks_fronts = False

    def rank(self, pick: Pick) -> np.ndarray:
        predicted, _ = pick.surrogate.predict(pick.functions, pick.scores)
        distance = pick.surrogate.distance_to_tried(pick.tried)
        value = _unit(predicted[pick.candidates])
        value = value + self.exploration * _unit(distance[pick.candidates])
        return best(value, pick.candidates, pick.n)


class SpaceFilling:
    """The functions farthest from every tried one, farthest first: the picks of a design, which
    need no score."""

    def rank(self, pick: Pick) -> np.ndarray:
        distance = pick.surrogate.distance_to_tried(pick.tried)
        return best(distance[pick.candidates], pick.candidates, pick.n)


class FrontGain:
    """In a study of score and cost: the candidates that would add most to the front of the
    scored functions, by their :func:`~optuna_aquasurf._front.front_gain` with the optimistic
    score of ``rule`` and the known cost. Above the reference (the median score so far, twice
    the highest cost), the front counts only functions worth a look."""

    def __init__(self, rule: Greedy, costs: np.ndarray):
        self.rule = rule
        self.costs = costs

    def rank(self, pick: Pick) -> np.ndarray:
        optimistic = self.rule.optimistic(pick)
        candidates, costs = pick.candidates, self.costs
        median = np.median(pick.scores if len(pick.scores) else optimistic[candidates])
        reference = (float(median), 2 * float(costs.max()))
        gain = np.full(len(costs), -np.inf)
        gain[candidates] = _front.front_gain(
            optimistic[candidates], costs[candidates], pick.scores, costs[pick.functions], reference
        )
        return best(gain[candidates], candidates, pick.n)


#: The rules ``AquaSurfSampler(acquisition=...)`` takes, built from ``exploration``.
RULES = {
    "ucb": UpperConfidenceBound,
    "explore": DistanceBonus,
    "greedy": lambda exploration: Greedy(),
}


def best(values: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` candidates of highest value, highest first; as the first ``n`` of a stable sort
    (ties in candidate order, NaN last) without sorting them all."""
    key = -values
    if len(key) > n:
        nth = np.partition(key, n - 1)[n - 1]
        kept = np.flatnonzero(~(key > nth))  # the n smallest keys and all ties (NaN kept)
        return candidates[kept[np.argsort(key[kept], kind="stable")[:n]]]
    return candidates[np.argsort(key, kind="stable")]


def _unit(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min() if len(values) else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)
