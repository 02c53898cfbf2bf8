"""optuna-aquasurf: find better activation functions for your own network, as an Optuna search.

Public names are imported on first use (as Optuna does), so ``import optuna_aquasurf`` is quick and
torch, optuna and scikit-learn load only when needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "ActivationFunction": "_activation",
    "AquaSurfSampler": "_sampler",
    "suggest_activation": "_sampler",
    "SpaceExhaustedError": "_sampler",
    "ConfirmRecord": "_confirm",
    "ConfirmReport": "_confirm",
    "confirm": "_confirm",
    "SpaceMap": "_map",
    "Candidate": "_space",
    "SearchSpace": "_space",
    "Expression": "_expression",
    "ExpressionError": "_expression",
    "canonical": "_expression",
    "parse": "_expression",
    "ALL_BINARY": "_operators",
    "ALL_NARY": "_operators",
    "ALL_UNARY": "_operators",
    "PAPER_UNARY": "_operators",
    "Operator": "_operators",
    "register_operator": "_operators",
}

__all__ = [
    "ALL_BINARY",
    "ALL_NARY",
    "ALL_UNARY",
    "PAPER_UNARY",
    "ActivationFunction",
    "AquaSurfSampler",
    "Candidate",
    "ConfirmRecord",
    "ConfirmReport",
    "Expression",
    "ExpressionError",
    "Operator",
    "SearchSpace",
    "SpaceExhaustedError",
    "SpaceMap",
    "canonical",
    "confirm",
    "parse",
    "register_operator",
    "suggest_activation",
]

if TYPE_CHECKING:
    from optuna_aquasurf._activation import ActivationFunction
    from optuna_aquasurf._confirm import ConfirmRecord, ConfirmReport, confirm
    from optuna_aquasurf._expression import Expression, ExpressionError, canonical, parse
    from optuna_aquasurf._map import SpaceMap
    from optuna_aquasurf._operators import (
        ALL_BINARY,
        ALL_NARY,
        ALL_UNARY,
        PAPER_UNARY,
        Operator,
        register_operator,
    )
    from optuna_aquasurf._sampler import AquaSurfSampler, SpaceExhaustedError, suggest_activation
    from optuna_aquasurf._space import Candidate, SearchSpace


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'optuna_aquasurf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"optuna_aquasurf.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
