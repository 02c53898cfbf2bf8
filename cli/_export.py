"""``aquasurf export``: an activation as a self-contained PyTorch module file (torch only)."""

from __future__ import annotations

import functools
from pathlib import Path

from optuna_aquasurf import Expression, parse
from optuna_aquasurf.cli._console import UserError

#: Each built-in operator as plain torch code, arguments ``{0}`` and ``{1}``; the same functions
#: as ``optuna_aquasurf._operators``, so outputs are identical.
TORCH_CODE = {
    "zero": "torch.zeros_like({0})",
    "one": "torch.ones_like({0})",
    "identity": "{0}",
    "negative": "torch.neg({0})",
    "abs": "torch.abs({0})",
    "reciprocal": "torch.reciprocal({0})",
    "square": "torch.square({0})",
    "exp": "torch.exp({0})",
    "erf": "torch.erf({0})",
    "erfc": "torch.erfc({0})",
    "sinh": "torch.sinh({0})",
    "cosh": "torch.cosh({0})",
    "tanh": "torch.tanh({0})",
    "expm1": "torch.expm1({0})",
    "sigmoid": "torch.sigmoid({0})",
    "log_sigmoid": "F.logsigmoid({0})",
    "arcsinh": "torch.asinh({0})",
    "arctan": "torch.atan({0})",
    "bessel_i0e": "torch.special.i0e({0})",
    "bessel_i1e": "torch.special.i1e({0})",
    "relu": "torch.relu({0})",
    "elu": "F.elu({0})",
    "selu": "torch.selu({0})",
    "swish": "F.silu({0})",
    "softplus": "F.softplus({0})",
    "softsign": "F.softsign({0})",
    "hard_sigmoid": "torch.clamp(0.2 * {0} + 0.5, 0.0, 1.0)",
    "elish": (
        "torch.where({0} > 0, {0} * torch.sigmoid({0}), torch.expm1({0}) * torch.sigmoid({0}))"
    ),
    "leakyrelu": "F.leaky_relu({0}, 0.01)",
    "mish": "F.mish({0})",
    "gelu": "F.gelu({0})",
    "add": "torch.add({0}, {1})",
    "sub": "torch.sub({0}, {1})",
    "mul": "torch.mul({0}, {1})",
    "div": "torch.div({0}, {1})",
    "pow": "torch.pow({0}, {1})",
    "max": "torch.maximum({0}, {1})",
    "min": "torch.minimum({0}, {1})",
}
#: n-ary operators: their binary operator applied left to right over the arguments.
NARY_FOLD = {"sum_n": "add", "prod_n": "mul", "max_n": "max", "min_n": "min"}

_TEMPLATE = '''\
"""The activation function {expression}, found by optuna-aquasurf.

{origin}
Needs only PyTorch. Use it like any activation module:

    from {module} import Activation
    model = nn.Sequential(nn.Linear(64, 64), Activation(), nn.Linear(64, 10))
"""

import torch
{functional}from torch import nn

EXPRESSION = "{expression}"


def activation(x: torch.Tensor) -> torch.Tensor:
    """Apply {expression} elementwise."""
{body}


class Activation(nn.Module):
    """{expression} as a module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(x)

    def extra_repr(self) -> str:
        return EXPRESSION
'''


def torch_body(expression: str) -> list[str]:
    """Lines of plain torch code computing ``expression`` from ``x``, ending in ``return``.

    Each distinct sub-expression is computed once, into ``t0``, ``t1``...

    Raises
    ------
    UserError
        For a malformed expression or an operator without a torch form (a custom operator).
    """
    try:
        tree = parse(expression)
    except ValueError as error:
        raise UserError(f"Invalid expression: {error}") from None
    names: dict[Expression, str] = {Expression("x"): "x"}
    lines: list[str] = []

    def code(node: Expression) -> str:
        args = [name(a) for a in node.args]
        if node.op in NARY_FOLD:
            binary = TORCH_CODE[NARY_FOLD[node.op]]
            return functools.reduce(lambda a, b: binary.format(a, b), args)
        if node.op not in TORCH_CODE:
            raise UserError(
                f"The operator {node.op!r} of {expression} is not built in: export knows the "
                "built-in operators only."
            )
        return TORCH_CODE[node.op].format(*args)

    def name(node: Expression) -> str:
        if node not in names:
            value = code(node)
            names[node] = f"t{len(lines)}"
            lines.append(f"{names[node]} = {value}")
        return names[node]

    result = code(tree) if tree.args else "x"
    return [*lines, f"return {result}"]


def module_source(expression: str, module: str, origin: str) -> str:
    """The text of a module file defining ``activation(x)`` and ``Activation`` for
    ``expression``; ``module`` is its import name, ``origin`` a line saying where it comes from."""
    body = torch_body(expression)
    canonical = str(parse(expression))
    uses_functional = any("F." in line for line in body)
    return _TEMPLATE.format(
        expression=canonical,
        origin=origin,
        module=module,
        functional="import torch.nn.functional as F\n" if uses_functional else "",
        body="\n".join(f"    {line}" for line in body),
    )


def write_module(path: Path, expression: str, origin: str) -> None:
    """Write the module file of ``expression`` to ``path`` (a ``.py`` file)."""
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise UserError(f"--out {path}: give a .py file name that is a Python identifier.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(module_source(expression, path.stem, origin))
