"""The 2-D map of a search space: UMAP of the output features, united with the Fisher features'."""

from __future__ import annotations

import warnings

import numpy as np

#: Below this many functions UMAP finds the exact nearest neighbours from all pairwise distances.
_ALL_DISTANCES_BELOW = 4096


def embed(
    output_features: np.ndarray | None, fisher_features: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """2-D coordinates, one row per function, as in the paper.

    One UMAP on the output features (euclidean, default neighbours) and one on the Fisher
    features (manhattan, 3 neighbours), combined as a UMAP model union when both are given. With
    a seed UMAP runs single-threaded and gives the same map in every process.
    """
    n = len(output_features if output_features is not None else fisher_features)
    if n < 4:
        # UMAP needs a few points; tiny spaces are laid out on a line.
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])
    maps = []
    with warnings.catch_warnings():
        # Spaces hold near-duplicate functions: "graph not fully connected" and the like.
        warnings.filterwarnings("ignore", category=UserWarning)
        if output_features is not None:
            maps.append(_fit(output_features, min(15, n - 1), "euclidean", seed))
        if fisher_features is not None:
            maps.append(_fit(fisher_features, 3, "manhattan", seed))
        union = maps[0] if len(maps) == 1 else maps[0] + maps[1]
    return union.embedding_.astype(np.float32)


def _fit(features: np.ndarray, n_neighbors: int, metric: str, seed: int):
    """``umap.UMAP(n_neighbors, metric, random_state=seed).fit(features)``, faster.

    For fewer than 4,096 points UMAP computes all pairwise distances through scikit-learn, which
    calls UMAP's compiled metric once per pair from Python (most of the time of a paper-space
    map). Here UMAP's compiled loop computes the same distances (in float32, as scikit-learn
    returns them) and UMAP's own routine picks the nearest neighbours among them: the same
    neighbours, graph and map, to the bit.
    """
    import umap  # slow to import (numba): only when a map is needed

    knn = (None, None, None)
    if len(features) < _ALL_DISTANCES_BELOW:
        from umap.distances import pairwise_special_metric
        from umap.umap_ import nearest_neighbors

        points = np.ascontiguousarray(features, dtype=np.float32)  # as UMAP reads them
        distances = pairwise_special_metric(points, metric=metric).astype(np.float32)
        indices, nearest, _ = nearest_neighbors(
            distances, n_neighbors, "precomputed", {}, False, None
        )
        knn = (indices, nearest, None)
    mapper = umap.UMAP(
        n_neighbors=n_neighbors, metric=metric, random_state=seed, n_jobs=1, precomputed_knn=knn
    )
    return mapper.fit(features)
