"""Descriptors of candidate activation functions, computed without training.

- :func:`output_features`: each function's outputs at the fixed probe points.
- :func:`kfac_eigenvalues`, :func:`fisher_features`, :class:`FisherProbe`: the eigenvalue
  spectrum of the model's Fisher information (K-FAC) at initialization.
"""

from optuna_aquasurf.features._outputs import output_features

__all__ = [
    "output_features",
]
