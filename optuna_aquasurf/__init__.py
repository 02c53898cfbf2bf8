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

__all__ = [
    "ALL_BINARY",
    "ALL_NARY",
    "ALL_UNARY",
    "PAPER_UNARY",
    "ActivationFunction",
    "Candidate",
    "Expression",
    "ExpressionError",
    "Operator",
    "SearchSpace",
    "canonical",
    "parse",
    "register_operator",
]
