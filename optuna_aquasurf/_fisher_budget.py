"""Fisher features on a budget: computed for a space-filling subset, placed for the rest.

A Fisher feature costs a forward and backward pass of the user's model; output features cost
nothing. Beyond a budget of functions, the Fisher features of a space are computed for the
functions that cover its output features best (each pick the function farthest from those picked
so far), and every other function takes the mean Fisher features of its nearest computed ones by
output features.
"""

from __future__ import annotations

import numpy as np

#: Fisher features are computed for every function of a space up to this many; beyond, for a
#: space-filling subset of this many.
DEFAULT_FISHER_BUDGET = 4096
#: Computed functions whose Fisher features a function without its own takes the mean of.
NEIGHBOURS = 3


def space_filling_subset(points: np.ndarray, size: int) -> np.ndarray:
    """Positions of ``size`` rows of ``points`` that cover them: the first row, then each time
    the row farthest (euclidean) from all rows picked so far. Sorted."""
    points = np.asarray(points, dtype=np.float32)
    picked = np.empty(size, dtype=np.int64)
    picked[0] = 0
    distance = np.linalg.norm(points - points[0], axis=1)
    for i in range(1, size):
        picked[i] = int(np.argmax(distance))
        np.minimum(distance, np.linalg.norm(points - points[picked[i]], axis=1), out=distance)
    return np.sort(picked)


def fill_from_neighbours(
    points: np.ndarray, subset: np.ndarray, features: np.ndarray
) -> np.ndarray:
    """Features of every row of ``points``: ``features`` (one row per position of ``subset``)
    where computed, elsewhere the mean of the :data:`NEIGHBOURS` nearest computed rows."""
    from sklearn.neighbors import KNeighborsRegressor

    filled = np.empty((len(points), features.shape[1]), dtype=np.float32)
    filled[subset] = features
    rest = np.setdiff1d(np.arange(len(points)), subset)
    if len(rest):
        regressor = KNeighborsRegressor(n_neighbors=min(NEIGHBOURS, len(subset)))
        regressor.fit(points[subset], features)
        for start in range(0, len(rest), 8192):  # a bounded block of distances at a time
            block = rest[start : start + 8192]
            filled[block] = regressor.predict(points[block])
    return filled
