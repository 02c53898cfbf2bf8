"""The fixed inputs at which candidate functions are compared and described."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

N_PROBE_POINTS = 1000
#: Width of the rows in which functions are evaluated: the probe points, then padding.
EVALUATION_WIDTH = 1024


@functools.cache
def _points() -> np.ndarray:
    points = np.clip(np.random.RandomState(0).normal(size=N_PROBE_POINTS), -5.0, 5.0)
    points = points.astype(np.float32)
    points.setflags(write=False)
    return points


def probe_points() -> torch.Tensor:
    """The 1,000 probe points: ``RandomState(0).normal(size=1000)`` clipped to [-5, 5], float32."""
    return torch.from_numpy(_points().copy())


def evaluation_points() -> torch.Tensor:
    """The probe points as a row of width :data:`EVALUATION_WIDTH` (the rest is padding).

    torch computes the last elements of a row that doesn't fill its SIMD registers with scalar
    code, which can differ in the last bit. Batches are therefore kept as rows of this width and
    functions applied to the ``[:, :1000]`` view: torch then loops over each row as over a lone
    vector of the 1,000 probe points, and a function's outputs are bitwise the same alone or in
    a batch (see :func:`reference_arithmetic`).
    """
    padded = torch.zeros(EVALUATION_WIDTH)
    padded[:N_PROBE_POINTS] = probe_points()
    return padded


@contextlib.contextmanager
def reference_arithmetic():
    """Inside the block, torch runs on one thread and keeps subnormal floats.

    Parallel chunks would have scalar tails of their own, and ``torch.set_flush_denormal(True)``
    (which some training code sets) changes tiny outputs: either would change the grouping.
    """
    threads = torch.get_num_threads()
    flushing = (torch.tensor([1e-30]) * 1e-10).item() == 0.0
    torch.set_num_threads(1)
    torch.set_flush_denormal(False)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)
