"""The Pareto front of functions scored (higher is better) and costed (lower is better), its
hypervolume, and what a new function would add to it.

Costs enter on a log scale: going from 2 to 4 relu passes counts as much as from 10 to 20.
"""

from __future__ import annotations

import numpy as np


def on_front(scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Which points no other point beats: none has a higher score for at most their cost, or a
    lower cost for at least their score (of equal points, the first is kept)."""
    scores, costs = np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)
    order = np.lexsort((np.arange(len(scores)), -scores, costs))  # cheapest first, then best
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], scores[order][:-1]]))
    front = np.zeros(len(scores), dtype=bool)
    front[order] = scores[order] > best_before
    return front


def hypervolume(scores: np.ndarray, costs: np.ndarray, reference: tuple[float, float]) -> float:
    """The area that the points dominate above the ``reference`` (score, cost), with costs on a
    log scale; points that do not beat the reference on both add nothing."""
    levels, edges = _staircase(scores, costs, reference)
    return float(np.sum((levels[1:] - levels[0]) * np.diff(edges[1:])))


def front_gain(
    scores: np.ndarray,
    costs: np.ndarray,
    front_scores: np.ndarray,
    front_costs: np.ndarray,
    reference: tuple[float, float],
) -> np.ndarray:
    """What each new point (``scores``, ``costs``) would add to the front of the others: the
    hypervolume it adds where it adds some; otherwise minus how far its score falls short of
    the best score at its cost or below (0 on the front's edge)."""
    levels, edges = _staircase(front_scores, front_costs, reference)
    scores = np.asarray(scores, dtype=float)
    log_costs = np.log(np.asarray(costs, dtype=float))
    gain = np.zeros(len(scores))
    for level, start, end in zip(levels, edges[:-1], edges[1:]):
        width = np.clip(end - np.maximum(start, log_costs), 0.0, None)
        gain += width * np.clip(scores - level, 0.0, None)
    # The best score already reached at each point's cost: the level of the step it falls in.
    step = np.searchsorted(edges, log_costs, side="right") - 1
    shortfall = scores - levels[np.clip(step, 0, len(levels) - 1)]
    return np.where(gain > 0, gain, np.minimum(shortfall, 0.0))


def _staircase(
    scores: np.ndarray, costs: np.ndarray, reference: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The best score reached at each cost, as steps: ``levels[i]`` holds from log cost
    ``edges[i]`` to ``edges[i + 1]``; the first level is the reference score, from -inf up to the
    cheapest point, and the last edge is the reference cost."""
    reference_score, reference_cost = reference
    scores, costs = np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)
    useful = on_front(scores, costs) & (scores > reference_score) & (costs < reference_cost)
    order = np.argsort(costs[useful], kind="stable")
    levels = np.concatenate([[reference_score], scores[useful][order]])
    edges = np.concatenate([[-np.inf], np.log(costs[useful][order]), [np.log(reference_cost)]])
    return levels, edges
