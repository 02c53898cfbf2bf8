"""Descriptors of candidate activation functions, computed without training.

- :func:`output_features`: each function's outputs at the fixed probe points.
- :func:`kfac_eigenvalues`, :func:`fisher_features`, :class:`FisherProbe`: the eigenvalue
  spectrum of the model's Fisher information (K-FAC) at initialization.
"""

from optuna_aquasurf.features._diverged import DivergedError
from optuna_aquasurf.features._fisher import fisher_features
from optuna_aquasurf.features._kfac import kfac_eigenvalues
from optuna_aquasurf.features._outputs import output_features
from optuna_aquasurf.features._probe import FisherProbe

__all__ = [
    "DivergedError",
    "FisherProbe",
    "fisher_features",
    "kfac_eigenvalues",
    "output_features",
]
