"""The 2-D map of a search space: UMAP of the output features, united with the Fisher features'."""

from __future__ import annotations

import warnings

import numpy as np

from optuna_aquasurf._private import umap_internals, umap_layout_parameters

#: Below this many functions UMAP finds the exact nearest neighbours from all pairwise distances.
_ALL_DISTANCES_BELOW = 4096
#: From this many functions on, a map is laid out from the leading principal components of each
#: kind of features, on all cores and without a seed: the stored map is what every worker uses.
LARGE_MAP = 20_000
#: Principal components kept of each kind of features in a large map.
LARGE_MAP_COMPONENTS = 32


def embed(
    output_features: np.ndarray | None, fisher_features: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """2-D coordinates, one row per function, as in the paper.

    One UMAP on the output features (euclidean, default neighbours) and one on the Fisher
    features (manhattan, 3 neighbours), combined as a UMAP model union when both are given. With
    a seed UMAP runs single-threaded and gives the same map in every process.

    From :data:`LARGE_MAP` functions on, each UMAP runs on the leading
    :data:`LARGE_MAP_COMPONENTS` principal components of its features (euclidean), on all cores
    and without a seed (see :func:`_fit_large`).
    """
    n = len(output_features if output_features is not None else fisher_features)
    if n < 4:
        # UMAP needs a few points; tiny spaces are laid out on a line.
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])
    large = n >= LARGE_MAP
    fit = _fit_large if large else _fit
    maps = []
    with warnings.catch_warnings():
        # Spaces hold near-duplicate functions: "graph not fully connected" and the like.
        warnings.filterwarnings("ignore", category=UserWarning)
        if output_features is not None:
            maps.append(fit(output_features, min(15, n - 1), "euclidean", seed))
        if fisher_features is not None:
            maps.append(fit(fisher_features, 3, "manhattan", seed))
        if len(maps) == 1:
            return maps[0].embedding_.astype(np.float32)
        if large:
            return _union_large(*maps)
        return (maps[0] + maps[1]).embedding_.astype(np.float32)


def _union_large(first, second) -> np.ndarray:
    """The layout of the union of two large maps' graphs, as UMAP's ``first + second`` makes it,
    but started from ``first``'s layout and on all cores (UMAP's own starts from a spectral
    embedding of the whole graph, on one thread)."""
    umap_ = umap_internals()
    graph = umap_.general_simplicial_set_union(first.graph_, second.graph_)
    graph = umap_.reset_local_connectivity(graph, True)
    embedding, _ = umap_.simplicial_set_embedding(
        None,
        graph,
        2,
        1.0,
        *umap_layout_parameters(first),
        1.0,
        5,
        None,
        first.embedding_,
        np.random.RandomState(),
        "euclidean",
        {},
        False,
        {},
        False,
        parallel=True,
    )
    return embedding.astype(np.float32)


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

        points = np.ascontiguousarray(features, dtype=np.float32)  # as UMAP reads them
        distances = pairwise_special_metric(points, metric=metric).astype(np.float32)
        indices, nearest, _ = umap_internals().nearest_neighbors(
            distances, n_neighbors, "precomputed", {}, False, None
        )
        knn = (indices, nearest, None)
    mapper = umap.UMAP(
        n_neighbors=n_neighbors, metric=metric, random_state=seed, n_jobs=1, precomputed_knn=knn
    )
    return mapper.fit(features)


def _fit_large(features: np.ndarray, n_neighbors: int, metric: str, seed: int):
    """UMAP of a large space: of its features' leading principal components, on all cores.

    Distances between 1,000-point outputs cost most of a large map; a few dozen principal
    components keep the neighbourhoods (``metric`` is then euclidean for both kinds of features).
    The layout starts from the principal components, not from a spectral embedding. A seed would
    force UMAP onto one thread, so the layout is not seeded; the PCA is.
    """
    import umap

    reduced = principal_components(features, LARGE_MAP_COMPONENTS, seed)
    # A spectral start solves an eigenproblem per connected component of the neighbour graph,
    # and the near-duplicate functions of a large space make thousands of components.
    return umap.UMAP(n_neighbors=n_neighbors, init="pca", n_jobs=-1).fit(reduced)


def principal_components(features: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """The rows of ``features`` on their ``n_components`` leading principal components (a seeded
    randomized PCA; at most one per row), as float32; ``features`` itself when it has no more
    columns."""
    n_components = min(n_components, len(features))
    if features.shape[1] <= n_components:
        return features
    from sklearn.decomposition import PCA

    solver = "randomized" if n_components < len(features) else "full"
    pca = PCA(n_components, svd_solver=solver, random_state=seed)
    return pca.fit_transform(features).astype(np.float32)
