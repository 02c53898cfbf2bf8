"""The surrogate: from the functions' coordinates (in the feature space or on the 2-D map), the
scores observed so far and the prior's, a predicted score for every function and how sure it is.

The model is a k-nearest-neighbour regressor (inverse-distance weighted, k=3, unless the user
gives another scikit-learn regressor). In the feature space it reads two views of the functions
(the outputs alone, and the outputs beside the Fisher features) and mixes their predictions by
how well each predicted the study's own scores (:func:`view_shares`): a model whose Fisher
features say little about its scores costs nothing, one whose Fisher features say much gets
their worth. Its neighbour tables are kept between picks (:class:`Neighbours`), so that a pick
in a large space costs one pass over the points per new observation rather than a kd-tree query
of every point.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from sklearn.base import RegressorMixin, clone
from sklearn.neighbors import KNeighborsRegressor

from optuna_aquasurf import _transfer
from optuna_aquasurf._feature_space import length_scale

#: Nearest scored functions whose scores tell how sure a prediction is (unless the regressor is
#: a k-nearest-neighbour one: then its own k).
UNCERTAINTY_NEIGHBOURS = 3
#: New sites that `Neighbours` adds one by one (each costs about 1% of a kd-tree query of every
#: point); more are cheaper as one query.
_ADD_AT_MOST = 64
#: How sharply the views' shares follow their leave-one-out rank correlations: a view ahead by
#: 0.17 counts twice as much. Chosen on the Act-Bench-Digits cnn and regression tables, of 1, 2,
#: 3, 4, 5 and 8 (see benchmarks/README.md).
SHARE_SHARPNESS = 4.0
#: Scored functions, at most, whose leave-one-out predictions weigh the views (a seeded sample
#: of them beyond).
SHARE_SAMPLE = 256


class Surrogate:
    """The predictions of one study's surrogate, from its scores and its prior.

    Built once per study and kept between its picks, with the tables and constants that do
    not change as scores come: the neighbour tables, the length scales of the uncertainty and
    the prior's surfaces.

    Each view predicts every function's score and how unsure it is; the surrogate mixes them
    with the views' shares (:func:`view_shares`): its prediction is the shares' mean of the
    views', and its uncertainty adds to the mean of their variances how far they disagree.

    Parameters
    ----------
    views
        The functions' coordinates the surrogate reads, one array per view, one row per
        function; the last holds them all (it measures distances to tried functions and
        places the prior).
    regressor
        The scikit-learn regressor from points to scores (see :func:`default_regressor`).
    seed
        Seed of the samples that measure the length scales and the shares.
    prior
        Each prior source's scored functions and their quantiles (0 worst, 1 best).
    """

    def __init__(
        self,
        views: Sequence[np.ndarray],
        regressor: RegressorMixin,
        seed: int = 0,
        prior: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    ):
        self.views = list(views)
        self.regressor = regressor
        self.seed = seed
        self.prior = list(prior)
        self._tried = Neighbours()
        self._scored = [Neighbours() for _ in self.views]

    @property
    def points(self) -> np.ndarray:
        """The view that holds all coordinates."""
        return self.views[-1]

    @cached_property
    def length_scales(self) -> list[float]:
        """Each view's distance over which a score stops telling about another function's (see
        :func:`~optuna_aquasurf._feature_space.length_scale`)."""
        return [length_scale(view, self.seed) for view in self.views]

    @cached_property
    def prior_surfaces(self) -> list[_transfer.PriorSurface]:
        """Each prior source's quantiles spread over the points."""
        scale = self.length_scales[-1]
        return [prior_surface(self.points, f, q, scale) for f, q in self.prior]

    def predict(
        self, functions: np.ndarray, scores: np.ndarray, uncertainty: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The predicted score of every function from the observed ``scores`` of ``functions``
        (higher is better) and the prior, and with ``uncertainty`` how unsure each prediction
        is (see :func:`predict_with_uncertainty`; else None)."""
        predicted, spread = None, None
        if len(scores) > 0:
            views = [
                self._predict_view(v, functions, scores, uncertainty)
                for v in range(len(self.views))
            ]
            predicted, spread = views[0]
            if len(views) > 1:
                shares = view_shares(self.views, functions, scores, self.regressor, self.seed)
                predicted = sum(share * mean for share, (mean, _) in zip(shares, views))
                if uncertainty:
                    spread = np.sqrt(
                        sum(
                            share * (np.square(std) + np.square(mean - predicted))
                            for share, (mean, std) in zip(shares, views)
                        )
                    )
        if self.prior:
            predicted, share = _transfer.with_prior(
                self.prior_surfaces, functions, scores, predicted
            )
            if spread is not None:
                spread = (1 - share) * spread
        return predicted, spread

    def _predict_view(self, view: int, functions, scores, uncertainty: bool):
        """One view's prediction of every function and, with ``uncertainty``, its spread."""
        points, scored = self.views[view], self._scored[view]
        predicted, spread = None, None
        if uncertainty:
            k = neighbours_of(self.regressor)
            scale = self.length_scales[view]
            knn, spread = predict_with_uncertainty(scored, points, functions, scores, k, scale)
            if is_default_knn(self.regressor):
                predicted = knn
        if predicted is None:
            predicted = predict(self.regressor, points, functions, scores, scored)
        return predicted, spread

    def distance_to_tried(self, tried: np.ndarray) -> np.ndarray:
        """Distance of every function to the nearest of ``tried`` (zero while none is)."""
        return distance_to_nearest(self._tried, self.points, tried)


def view_shares(
    views: Sequence[np.ndarray],
    functions: np.ndarray,
    scores: np.ndarray,
    regressor: RegressorMixin,
    seed: int = 0,
) -> np.ndarray:
    """How much each view counts in the surrogate's prediction, from the study's own scores.

    Each scored function's score is predicted from the others' by inverse-distance kNN in each
    view (leave-one-out; with the ``k`` of ``regressor``), and each view is rated by the rank
    correlation (Spearman) of these predictions with the scores: a view that orders the study's
    functions as their scores do is one whose neighbours say most. The shares are
    ``exp(SHARE_SHARPNESS * rho)``, normalised; equal while fewer than 3 functions are scored
    or their scores are all equal.
    """
    if len(views) == 1:
        return np.ones(1)
    rho = np.zeros(len(views))
    if len(scores) >= 3 and np.ptp(scores) > 0:
        if len(scores) > SHARE_SAMPLE:
            rng = np.random.default_rng(seed)
            kept = np.sort(rng.choice(len(scores), SHARE_SAMPLE, replace=False))
            functions, scores = functions[kept], scores[kept]
        k = min(neighbours_of(regressor), len(scores) - 1)
        rho = np.array([_leave_one_out_rho(view[functions], scores, k) for view in views])
    shares = np.exp(SHARE_SHARPNESS * (rho - rho.max()))
    return shares / shares.sum()


def _leave_one_out_rho(points: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Spearman correlation between ``scores`` and their leave-one-out inverse-distance kNN
    predictions among ``points`` (0 where it is undefined)."""
    from scipy.spatial.distance import cdist
    from scipy.stats import rankdata

    squared = cdist(points, points, "sqeuclidean")
    np.fill_diagonal(squared, np.inf)
    nearest = np.argpartition(squared, k - 1, axis=1)[:, :k]
    distance = np.sqrt(np.take_along_axis(squared, nearest, axis=1))
    with np.errstate(divide="ignore"):
        weights = 1.0 / distance
    exact = np.isinf(weights)
    weights = np.where(exact.any(axis=1, keepdims=True), exact, weights)
    predicted = np.sum(weights * scores[nearest], axis=1) / np.sum(weights, axis=1)
    if np.ptp(predicted) == 0:
        return 0.0
    return float(np.corrcoef(rankdata(predicted), rankdata(scores))[0, 1])


def prior_surface(
    points: np.ndarray, functions: np.ndarray, quantiles: np.ndarray, length_scale: float
) -> _transfer.PriorSurface:
    """The :class:`~optuna_aquasurf._transfer.PriorSurface` of a source that scored
    ``functions`` of the space whose surrogate coordinates are ``points``."""
    neighbours = Neighbours()
    regressor = default_regressor()
    predicted = predict(regressor, points, functions, quantiles, neighbours)
    squared, _ = neighbours.nearest(points, functions, regressor.n_neighbors)  # predict's table
    closeness = np.exp(-np.square(np.sqrt(squared[:, 0]) / length_scale))
    return _transfer.PriorSurface(functions, quantiles, predicted, closeness)


def default_regressor(n_neighbors: int = 3) -> RegressorMixin:
    """k-nearest neighbours (k=3), weighted by inverse distance."""
    return KNeighborsRegressor(n_neighbors=n_neighbors, weights="distance")


def neighbours_of(regressor: RegressorMixin) -> int:
    """How many nearest scored functions the uncertainty reads."""
    if isinstance(regressor, KNeighborsRegressor):
        return regressor.n_neighbors
    return UNCERTAINTY_NEIGHBOURS


def is_default_knn(regressor: RegressorMixin) -> bool:
    """Whether ``regressor`` predicts as :func:`predict_with_uncertainty` does."""
    return _is_euclidean_knn(regressor) and regressor.weights == "distance"


class Neighbours:
    """For every point of a map, its ``k`` nearest sites, kept up to date as sites come.

    Between two suggestions the tried (or scored) functions mostly grow by a trial or two, and
    a kd-tree query of every point of a large space costs hundreds of milliseconds. Here a new
    site is measured against every point, and only the points it comes closer to are re-sorted.
    A first call, another map, another ``k``, a site gone (a deleted trial, another study) or
    many new sites rebuild the table with one kd-tree query. Distances are those of the kd-tree,
    to the bit; of two sites at exactly the same distance, the one found first is kept.
    """

    def __init__(self) -> None:
        self._coords: np.ndarray | None = None
        self._columns = np.empty((2, 0))  # the points' coordinates, one row per dimension
        self._sites = np.empty(0, dtype=np.int64)
        self._squared = np.empty((0, 0))
        self._index = np.empty((0, 0), dtype=np.int64)

    def nearest(
        self, coords: np.ndarray, sites: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` sites nearest to every point of ``coords``, nearest first.

        Parameters
        ----------
        coords
            The map, one row per point; pass the same array object to reuse the table.
        sites
            Sorted, unique positions of the sites in ``coords``.
        k
            Neighbours per point.

        Returns
        -------
        squared, index
            Squared distances and positions of the sites, ``(len(coords), k)`` each (``inf`` and
            -1 past the last site); the table itself, to read only.
        """
        removed = np.setdiff1d(self._sites, sites, assume_unique=True)
        new = np.setdiff1d(sites, self._sites, assume_unique=True)
        fresh = coords is not self._coords or k != self._index.shape[1] or len(removed) > 0
        if fresh:
            self._coords = coords
            self._columns = np.asarray(coords, dtype=np.float64).T.copy()
            self._squared = np.full((len(coords), k), np.inf)
            self._index = np.full((len(coords), k), -1, dtype=np.int64)
        if len(sites) > 0 and (fresh or len(new) > _ADD_AT_MOST):
            self._query_tree(sites)
        else:
            for site in new:
                self._add(site)
        self._sites = sites
        return self._squared, self._index

    def _add(self, site: int) -> None:
        squared = _squared_distance(self._columns, self._columns[:, site])
        closer = np.flatnonzero(squared < self._squared[:, -1])
        candidates = np.column_stack([self._squared[closer], squared[closer]])
        index = np.column_stack([self._index[closer], np.full(len(closer), site)])
        order = np.argsort(candidates, axis=1, kind="stable")[:, :-1]
        self._squared[closer] = np.take_along_axis(candidates, order, axis=1)
        self._index[closer] = np.take_along_axis(index, order, axis=1)

    def _query_tree(self, sites: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        k = self._index.shape[1]
        points = self._columns.T
        _, found = cKDTree(points[sites]).query(points, k=list(range(1, k + 1)))
        self._index = np.append(sites, -1)[found]  # the tree numbers missing neighbours len(sites)
        squared = _squared_distance(self._columns[:, :, None], self._columns[:, self._index])
        self._squared = np.where(self._index >= 0, squared, np.inf)


def distance_to_nearest(neighbours: Neighbours, coords: np.ndarray, sites: np.ndarray):
    """Distance of every point of ``coords`` to the nearest site (zero when there is none)."""
    if len(sites) == 0:
        return np.zeros(len(coords))
    squared, _ = neighbours.nearest(coords, sites, k=1)
    return np.sqrt(squared[:, 0])


def predict(
    regressor: RegressorMixin,
    coords: np.ndarray,
    observed: np.ndarray,
    scores: np.ndarray,
    neighbours: Neighbours | None = None,
) -> np.ndarray:
    """Fit a copy of ``regressor`` on the observed points and predict a score for every point.

    With a ``neighbours`` table, a euclidean k-nearest-neighbour regressor (the default) predicts
    from that table rather than from a kd-tree query of every point: the same predictions, each
    newly observed point costing one pass over the points.
    """
    if neighbours is not None and _is_euclidean_knn(regressor):
        weights, neighbour_scores, _ = _neighbour_weights(
            neighbours, coords, observed, scores, regressor.n_neighbors, regressor.weights
        )
        return _weighted_mean(weights, neighbour_scores)
    model = clone(regressor)
    if isinstance(model, KNeighborsRegressor):
        model.set_params(n_neighbors=min(model.n_neighbors, len(observed)))
    model.fit(coords[observed], scores)
    return np.asarray(model.predict(coords), dtype=np.float64)


def predict_with_uncertainty(
    neighbours: Neighbours,
    coords: np.ndarray,
    observed: np.ndarray,
    scores: np.ndarray,
    k: int,
    length_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse-distance kNN prediction of every point (as :func:`predict` gives it with the
    default regressor), and how unsure it is, in units of score.

    The uncertainty combines the spread (inverse-distance weighted standard deviation) of the
    scores of the point's ``k`` nearest scored points with a term that grows with the distance
    ``d`` to the nearest one, from 0 to the standard deviation of all scores: ``sqrt(spread**2 +
    std**2 * (1 - exp(-(d / length_scale)**2)))``, as a Gaussian process's prior variance returns
    far from its data.
    """
    weights, neighbour_scores, nearest = _neighbour_weights(
        neighbours, coords, observed, scores, k, "distance"
    )
    predicted = _weighted_mean(weights, neighbour_scores)
    shares = weights / _sum_rows(weights)
    mean = _sum_rows(shares * neighbour_scores)
    spread = _sum_rows(shares * np.square(neighbour_scores - mean))
    far = np.var(scores) * -np.expm1(-nearest / length_scale**2)
    return predicted, np.sqrt(spread + far)


def _neighbour_weights(neighbours, coords, observed, scores, k, weights):
    """Weights and scores of every point's ``k`` nearest observed points (fewer while fewer are
    observed), one row per neighbour (``(k, len(coords))`` each: the sums over neighbours stay
    fast), and the squared distance to the nearest one. Weights as scikit-learn's kNN gives
    them: ones, or inverse distances (the points at distance zero alone, when there are some)."""
    squared, index = neighbours.nearest(coords, observed, k)
    k = min(k, len(observed))
    score = np.zeros(len(coords))
    score[observed] = scores
    neighbour_scores = score[index[:, :k].T]
    if weights == "uniform":
        return np.ones_like(neighbour_scores), neighbour_scores, squared[:, 0]
    with np.errstate(divide="ignore"):
        inverse = 1.0 / np.sqrt(squared[:, :k].T)
    exact = np.isinf(inverse)
    on_a_point = np.logical_or.reduce(exact, axis=0)
    inverse[:, on_a_point] = exact[:, on_a_point]
    return inverse, neighbour_scores, squared[:, 0]


def _weighted_mean(weights: np.ndarray, neighbour_scores: np.ndarray) -> np.ndarray:
    """The kNN prediction from one row per neighbour, summed nearest first as scikit-learn
    sums them, for the same bits."""
    return _sum_rows(weights * neighbour_scores) / _sum_rows(weights)


def _sum_rows(values: np.ndarray) -> np.ndarray:
    """The sum of the rows of a few long rows, in row order."""
    total = values[0].copy()
    for row in values[1:]:
        total += row
    return total


def _is_euclidean_knn(regressor: RegressorMixin) -> bool:
    return (
        type(regressor) is KNeighborsRegressor
        and regressor.weights in ("uniform", "distance")
        and regressor.metric_params is None
        and (
            regressor.metric == "euclidean"
            or (regressor.metric == "minkowski" and regressor.p == 2)
        )
    )


def _squared_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared euclidean distances between points ``a`` and ``b`` given dimension by dimension
    (first axis) and broadcast, summed over the dimensions in order as the kd-tree sums them."""
    total = 0.0
    for a_dimension, b_dimension in zip(a, b):
        total = total + np.square(a_dimension - b_dimension)
    return total
