"""optuna-aquasurf: find better activation functions for your own network, as an Optuna search."""

from optuna_aquasurf._activation import ActivationFunction
from optuna_aquasurf._expression import Expression, ExpressionError, canonical, parse
from optuna_aquasurf._operators import (
    ALL_BINARY,
    ALL_NARY,
    ALL_UNARY,
    PAPER_UNARY,
    Operator,
    register_operator,
)
from optuna_aquasurf._space import Candidate, SearchSpace

__version__ = "0.1.0"

# The sampler pulls in optuna and scikit-learn: imported on first use, as optuna does.
_LAZY = {"AquaSurfSampler": "_sampler", "suggest_activation": "_sampler"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"optuna_aquasurf.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'optuna_aquasurf' has no attribute {name!r}")


__all__ = [
    "ALL_BINARY",
    "ALL_NARY",
    "ALL_UNARY",
    "PAPER_UNARY",
    "ActivationFunction",
    "AquaSurfSampler",
    "Candidate",
    "Expression",
    "ExpressionError",
    "Operator",
    "SearchSpace",
    "canonical",
    "parse",
    "register_operator",
    "suggest_activation",
]
