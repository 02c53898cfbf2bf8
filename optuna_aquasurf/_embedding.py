"""The 2-D map of a search space: UMAP of the output features, united with the Fisher features'."""

from __future__ import annotations

import warnings

import numpy as np


def embed(
    output_features: np.ndarray | None, fisher_features: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """2-D coordinates, one row per function, as in the paper.

    One UMAP on the output features (euclidean, default neighbours) and one on the Fisher
    features (manhattan, 3 neighbours), combined as a UMAP model union when both are given. With
    a seed UMAP runs single-threaded and gives the same map in every process.
    """
    import umap  # slow to import (numba): only when a map is needed

    n = len(output_features if output_features is not None else fisher_features)
    if n < 4:
        # UMAP needs a few points; tiny spaces are laid out on a line.
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])
    maps = []
    with warnings.catch_warnings():
        # Spaces hold near-duplicate functions: "graph not fully connected" and the like.
        warnings.filterwarnings("ignore", category=UserWarning)
        if output_features is not None:
            mapper = umap.UMAP(n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
            maps.append(mapper.fit(output_features))
        if fisher_features is not None:
            mapper = umap.UMAP(n_neighbors=3, metric="manhattan", random_state=seed, n_jobs=1)
            maps.append(mapper.fit(fisher_features))
        union = maps[0] if len(maps) == 1 else maps[0] + maps[1]
    return union.embedding_.astype(np.float32)
