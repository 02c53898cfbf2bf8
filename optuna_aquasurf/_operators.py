"""The operators that activation expressions are built from, kept in one registry.

Names and semantics follow the published Act-Bench benchmarks (see the method notes): 31 unary,
7 binary and 4 n-ary operators. Users add their own with :func:`register_operator`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Arity marker of operators that take two or more arguments.
NARY = "n"

_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Operator:
    """A named elementwise torch function of fixed arity (1, 2) or any arity >= 2 (``"n"``)."""

    name: str
    arity: int | str
    function: Callable[..., torch.Tensor]


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    # The Keras 2 definition used by the benchmarks, not torch's hardsigmoid (slope 1/6).
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def _elish(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return torch.where(x > 0, x * s, torch.expm1(x) * s)


def _reduce(function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    def apply(*args: torch.Tensor) -> torch.Tensor:
        return functools.reduce(function, args)

    return apply


_BUILTIN = [
    Operator("zero", 1, torch.zeros_like),
    Operator("one", 1, torch.ones_like),
    Operator("identity", 1, lambda x: x),
    Operator("negative", 1, torch.neg),
    Operator("abs", 1, torch.abs),
    Operator("reciprocal", 1, torch.reciprocal),
    Operator("square", 1, torch.square),
    Operator("exp", 1, torch.exp),
    Operator("erf", 1, torch.erf),
    Operator("erfc", 1, torch.erfc),
    Operator("sinh", 1, torch.sinh),
    Operator("cosh", 1, torch.cosh),
    Operator("tanh", 1, torch.tanh),
    Operator("expm1", 1, torch.expm1),
    Operator("sigmoid", 1, torch.sigmoid),
    Operator("log_sigmoid", 1, F.logsigmoid),
    Operator("arcsinh", 1, torch.asinh),
    Operator("arctan", 1, torch.atan),
    Operator("bessel_i0e", 1, torch.special.i0e),
    Operator("bessel_i1e", 1, torch.special.i1e),
    Operator("relu", 1, torch.relu),
    Operator("elu", 1, F.elu),
    Operator("selu", 1, torch.selu),
    Operator("swish", 1, F.silu),
    Operator("softplus", 1, F.softplus),
    Operator("softsign", 1, F.softsign),
    Operator("hard_sigmoid", 1, _hard_sigmoid),
    Operator("elish", 1, _elish),
    Operator("leakyrelu", 1, lambda x: F.leaky_relu(x, 0.01)),
    Operator("mish", 1, F.mish),
    Operator("gelu", 1, F.gelu),
    Operator("add", 2, torch.add),
    Operator("sub", 2, torch.sub),
    Operator("mul", 2, torch.mul),
    Operator("div", 2, torch.div),
    Operator("pow", 2, torch.pow),
    Operator("max", 2, torch.maximum),
    Operator("min", 2, torch.minimum),
    Operator("sum_n", NARY, _reduce(torch.add)),
    Operator("prod_n", NARY, _reduce(torch.mul)),
    Operator("max_n", NARY, _reduce(torch.maximum)),
    Operator("min_n", NARY, _reduce(torch.minimum)),
]

_REGISTRY: dict[str, Operator] = {op.name: op for op in _BUILTIN}

#: The 27 unary operators of the paper's benchmarks (Act-Bench), in the benchmarks' order.
PAPER_UNARY: tuple[str, ...] = tuple(op.name for op in _BUILTIN[:27])
#: All 31 built-in unary operators: the paper's 27 plus elish, leakyrelu, mish and gelu.
ALL_UNARY: tuple[str, ...] = tuple(op.name for op in _BUILTIN if op.arity == 1)
#: The 7 built-in binary operators.
ALL_BINARY: tuple[str, ...] = tuple(op.name for op in _BUILTIN if op.arity == 2)
#: The 4 built-in n-ary operators.
ALL_NARY: tuple[str, ...] = tuple(op.name for op in _BUILTIN if op.arity == NARY)


def register_operator(
    name: str,
    function: Callable[..., torch.Tensor],
    arity: int | str = 1,
    *,
    overwrite: bool = False,
) -> Operator:
    """Make a new operator usable in expressions and schemas.

    Parameters
    ----------
    name
        Lower-case identifier (letters, digits, underscores) such as ``"softclip"``.
    function
        Elementwise torch function taking ``arity`` tensors and returning one of the same shape.
        Expressions that use it pickle by name: register it again in any process that
        unpickles them.
    arity
        1, 2, or ``"n"`` for two or more arguments.
    overwrite
        Replace an existing operator of the same name.

    Examples
    --------
    >>> import torch
    >>> from optuna_aquasurf import ActivationFunction, register_operator
    >>> _ = register_operator("softclip", lambda x: torch.clamp(x, -1.0, 1.0))
    >>> ActivationFunction("mul(x,softclip(x))")(torch.tensor([2.0])).item()
    2.0
    """
    if not isinstance(name, str) or not _NAME.match(name) or name == "x":
        raise ValueError(
            f"operator name {name!r} must be a lower-case identifier other than 'x' "
            "(letters, digits, underscores)"
        )
    if arity not in (1, 2, NARY):
        raise ValueError(f"arity must be 1, 2 or 'n', got {arity!r}")
    if not callable(function):
        raise TypeError(f"function for operator {name!r} must be callable, got {function!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"operator {name!r} exists already; pass overwrite=True to replace it")
    operator = Operator(name, arity, function)
    _REGISTRY[name] = operator
    return operator


def get_operator(name: str) -> Operator | None:
    """The registered operator called ``name``, or None."""
    return _REGISTRY.get(name)


def operator_names(arity: int | str | None = None) -> tuple[str, ...]:
    """Names of the registered operators (of one arity if given), in registration order."""
    return tuple(op.name for op in _REGISTRY.values() if arity is None or op.arity == arity)
