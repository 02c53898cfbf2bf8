"""Which untried function to train next, given the 2-D map of the space and the scores so far."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin, clone
from sklearn.neighbors import KNeighborsRegressor

#: The acquisition rules a sampler accepts.
ACQUISITIONS = ("explore", "greedy")


def default_regressor(n_neighbors: int = 3) -> RegressorMixin:
    """The paper's surrogate: k-nearest neighbours (k=3) on the 2-D embedding."""
    return KNeighborsRegressor(n_neighbors=n_neighbors)


def farthest_first(coords: np.ndarray, tried: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidates ordered by their distance to the nearest tried point, farthest first."""
    distance = _distance_to_nearest(coords, tried, candidates)
    return candidates[np.argsort(-distance, kind="stable")]


def predict(
    regressor: RegressorMixin, coords: np.ndarray, observed: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """Fit a copy of ``regressor`` on the observed points and predict a score for every point."""
    model = clone(regressor)
    if isinstance(model, KNeighborsRegressor):
        model.set_params(n_neighbors=min(model.n_neighbors, len(observed)))
    model.fit(coords[observed], scores)
    return np.asarray(model.predict(coords), dtype=np.float64)


def rank(
    acquisition: str,
    coords: np.ndarray,
    predicted: np.ndarray,
    tried: np.ndarray,
    candidates: np.ndarray,
    exploration: float,
) -> np.ndarray:
    """Candidates ordered best first, scores being "higher is better".

    ``"greedy"`` (the reference rule) orders by predicted score alone. ``"explore"`` adds
    ``exploration`` times the distance to the nearest tried point, both terms scaled to [0, 1]
    over the candidates, so that regions far from everything tried keep a chance.
    """
    value = predicted[candidates]
    if acquisition == "explore":
        value = _unit(value) + exploration * _unit(_distance_to_nearest(coords, tried, candidates))
    return candidates[np.argsort(-value, kind="stable")]


def _distance_to_nearest(coords: np.ndarray, tried: np.ndarray, candidates: np.ndarray):
    if len(tried) == 0:
        return np.zeros(len(candidates))
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(coords[tried]).query(coords[candidates], k=1)
    return distance


def _unit(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min() if len(values) else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)
