"""The first descriptor of a function: its outputs at the probe points."""

from __future__ import annotations

import numpy as np

from optuna_aquasurf._space import SearchSpace

#: Outputs are clipped to [-OUTPUT_CLIP, OUTPUT_CLIP]; see :func:`output_features`.
OUTPUT_CLIP = 100.0


def output_features(space: SearchSpace, clip: float = OUTPUT_CLIP) -> np.ndarray:
    """Each function's outputs at the 1,000 probe points, one float32 row per function.

    Non-finite values are made finite so that distances between rows stay meaningful:
    ``+inf`` becomes ``clip``, ``-inf`` becomes ``-clip`` and NaN becomes 0; then every value is
    clipped to ``[-clip, clip]``, so a function that explodes at a few points is far from the
    tame ones without drowning all other distances.

    Examples
    --------
    >>> from optuna_aquasurf import SearchSpace
    >>> from optuna_aquasurf.features import output_features
    >>> output_features(SearchSpace.from_expressions(["relu(x)", "exp(x)"])).shape
    (2, 1000)
    """
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    outputs = space.outputs().numpy()
    np.nan_to_num(outputs, copy=False, nan=0.0, posinf=clip, neginf=-clip)
    return np.clip(outputs, -clip, clip, out=outputs)  # in place: 400,000 rows are 1.6 GB
