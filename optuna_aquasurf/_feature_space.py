"""The space the surrogate predicts in: each function's output and Fisher features, reduced.

The 2-D map is for the eye; between its two dimensions, neighbours that the features tell apart
end up side by side. The surrogate reads the features themselves instead: each kind reduced to
its leading principal components and scaled to a mean squared norm of one, the two side by side.
It reads them through two views (:func:`feature_views`): the output block alone, and both
blocks; how much each view counts is fitted to every study's own scores (see
:func:`optuna_aquasurf._surrogate.view_shares`).
"""

from __future__ import annotations

import numpy as np

from optuna_aquasurf._embedding import principal_components

#: Principal components kept of each kind of features.
FEATURE_COMPONENTS = 16
#: Functions whose distance to their nearest other function sets the length scale.
LENGTH_SCALE_SAMPLE = 2048
#: The length scale, as a share of the median distance of a function to its nearest other one.
LENGTH_SCALE_SHARE = 0.5


def feature_space(
    output_components: np.ndarray | None, fisher_features: np.ndarray | None, seed: int = 0
) -> np.ndarray:
    """One row per function: its output principal components (the leading
    :data:`FEATURE_COMPONENTS` columns of ``output_components``, which are sorted) beside its
    Fisher features' own, each block of mean squared norm one. float32."""
    blocks = []
    if output_components is not None:
        blocks.append(_unit_block(output_components[:, :FEATURE_COMPONENTS]))
    if fisher_features is not None:
        fisher = principal_components(_centred(fisher_features), FEATURE_COMPONENTS, seed)
        blocks.append(_unit_block(fisher))
    return np.hstack(blocks).astype(np.float32)


def feature_views(features: np.ndarray, output_components: np.ndarray | None) -> list[np.ndarray]:
    """The views of the :func:`feature_space` ``features`` that the surrogate reads: the output
    block alone, then both blocks; the one block when there is one kind of features."""
    if output_components is None:
        return [features]
    n_outputs = min(FEATURE_COMPONENTS, output_components.shape[1])
    if n_outputs == features.shape[1]:
        return [features]
    return [features[:, :n_outputs], features]


def length_scale(points: np.ndarray, seed: int = 0) -> float:
    """Distance over which a function's score stops telling about another's:
    :data:`LENGTH_SCALE_SHARE` of the median distance from a function to its nearest other
    (distinct) function, measured on a seeded sample of :data:`LENGTH_SCALE_SAMPLE` functions."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    sample = rng.choice(len(points), min(LENGTH_SCALE_SAMPLE, len(points)), replace=False)
    tree = cKDTree(points)
    distance, _ = tree.query(points[np.sort(sample)], k=min(8, len(points)))
    nearest = [row[row > 0][0] for row in distance if (row > 0).any()]
    return LENGTH_SCALE_SHARE * float(np.median(nearest)) if nearest else 1.0


def _centred(features: np.ndarray) -> np.ndarray:
    features = np.where(np.isfinite(features), features, 0.0)
    return features - features.mean(axis=0)


def _unit_block(block: np.ndarray) -> np.ndarray:
    block = _centred(np.asarray(block, dtype=np.float64))
    norm = np.sqrt(np.mean(np.sum(block * block, axis=1)))
    return block / norm if norm > 0 else block
