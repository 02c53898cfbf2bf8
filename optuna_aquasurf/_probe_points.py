"""The fixed inputs at which candidate functions are compared and described."""

from __future__ import annotations

import functools

import numpy as np
import torch

N_PROBE_POINTS = 1000


@functools.cache
def _points() -> np.ndarray:
    points = np.clip(np.random.RandomState(0).normal(size=N_PROBE_POINTS), -5.0, 5.0)
    points = points.astype(np.float32)
    points.setflags(write=False)
    return points


def probe_points() -> torch.Tensor:
    """The 1,000 probe points: ``RandomState(0).normal(size=1000)`` clipped to [-5, 5], float32."""
    return torch.from_numpy(_points().copy())
