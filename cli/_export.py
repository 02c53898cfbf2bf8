"""``aquasurf export``: an activation as a self-contained PyTorch module file (torch only), fused
by ``torch.compile`` where it works, stating its cost."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from optuna_aquasurf import Expression, parse
from optuna_aquasurf._cost import measured_cost
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

``Activation()`` runs ``activation`` fused by ``torch.compile`` (compiled at its first call, once
per process for all modules); ``Activation(fused=False)`` runs it one torch call per operator.
Where ``torch.compile`` cannot work (no C++ compiler, an unsupported Python), the fused path warns
once and runs the plain function.

COST = {cost:.3g}: a forward and backward pass of ``activation`` (unfused, float32, one CPU thread
unless its study measured costs on another device) takes {cost:.3g} times as long as relu's.
"""

import warnings

import torch
{functional}from torch import nn

EXPRESSION = "{expression}"
#: Forward and backward time of ``activation`` over relu's (unfused, float32).
COST = {cost:.3g}


def activation(x: torch.Tensor) -> torch.Tensor:
    """Apply {expression} elementwise."""
{body}


#: ``activation`` compiled by ``torch.compile``: None until the first fused call, then the
#: compiled function, or ``activation`` itself once compiling has failed.
_compiled = None


def fused_activation(x: torch.Tensor) -> torch.Tensor:
    """``activation`` through ``torch.compile``, or unfused (after one warning) where that fails."""
    global _compiled
    if _compiled is activation:
        return activation(x)
    try:
        if _compiled is None:
            _compiled = torch.compile(activation, dynamic=True)
        return _compiled(x)
    except Exception as error:
        result = activation(x)  # an error of the input itself raises here, as it would unfused
        _compiled = activation
        warnings.warn(
            f"{{__name__}}: torch.compile failed, so {{EXPRESSION}} runs unfused from now on "
            f"({{type(error).__name__}}: {{error}})",
            RuntimeWarning,
            stacklevel=2,
        )
        return result


class Activation(nn.Module):
    """{expression} as a module: fused by ``torch.compile`` unless ``fused=False``."""

    def __init__(self, fused: bool = True):
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_activation(x) if self.fused else activation(x)

    def extra_repr(self) -> str:
        return EXPRESSION if self.fused else f"{{EXPRESSION}}, fused=False"
'''


def torch_body(expression: str) -> list[str]:
    """Lines of plain torch code computing ``expression`` from ``x``, ending in ``return``.

    Each distinct sub-expression is computed once, into ``t0``, ``t1``...

    Raises
    ------
    UserError
        For a malformed expression or an operator without a torch form (a custom operator).
    """
    tree = _parse(expression)
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


def module_source(expression: str, module: str, origin: str, cost: float) -> str:
    """The text of a module file defining ``activation(x)``, its fused path and ``Activation``.

    Parameters
    ----------
    expression
        The activation function.
    module
        The module's import name, for its docstring.
    origin
        A line saying where the function comes from.
    cost
        Its forward and backward time over relu's, the module's ``COST``.
    """
    body = torch_body(expression)
    uses_functional = any("F." in line for line in body)
    return _TEMPLATE.format(
        expression=str(parse(expression)),
        origin=origin,
        module=module,
        cost=cost,
        functional="import torch.nn.functional as F\n" if uses_functional else "",
        body="\n".join(f"    {line}" for line in body),
    )


def study_origin(record: dict[str, Any]) -> str:
    """Where a function of a study comes from, said in the module file and by ``aquasurf
    export``: the study, the trial, its score (its mean, once confirmed) and, in a study of
    score and cost, its member number on the Pareto front (a record of
    :func:`~optuna_aquasurf.cli._views.export_record`).
    """
    if record.get("n", 1) > 1:
        score = f"mean {record['mean']:.6g} of {record['n']} scores, best trial {record['trial']}"
    else:
        score = f"trial {record['trial']}: score {record['score']:.6g}"
    origin = f"Study {record['study']!r}, {score} ({record['direction']})"
    if "front_member" in record:
        origin += (
            f", front member {record['front_member']} of {record['front_size']} "
            "(as `aquasurf best` numbers them)"
        )
    return origin + "."


def write_module(path: Path, expression: str, origin: str, cost: float | None = None) -> float:
    """Write the module file of ``expression`` to ``path`` (a ``.py`` file), with ``cost`` (the
    one its study knows) or, without it, the cost measured now on the CPU
    (:func:`optuna_aquasurf._cost.measured_cost`).

    Returns
    -------
    float
        The function's cost written as ``COST``: its forward and backward time over relu's.
    """
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise UserError(f"--out {path}: give a .py file name that is a Python identifier.")
    if cost is None:
        cost = measured_cost(str(_parse(expression)))
    source = module_source(expression, path.stem, origin, cost)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return cost


def _parse(expression: str) -> Expression:
    """``expression`` parsed; a UserError if it is malformed."""
    try:
        return parse(expression)
    except ValueError as error:
        raise UserError(f"Invalid expression: {error}") from None
