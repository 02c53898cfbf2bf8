"""``aquasurf export``: the generated torch code computes exactly what ActivationFunction does."""

from __future__ import annotations

import ast

import pytest
import torch

from optuna_aquasurf import ActivationFunction, Operator, _operators
from optuna_aquasurf._operators import NARY, get_operator, operator_names
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._export import NARY_FOLD, TORCH_CODE, module_source, torch_body

BUILT_IN = [name for name in operator_names() if name in TORCH_CODE or name in NARY_FOLD]


def load(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "exported.py", "exec"), namespace)
    return namespace


def test_every_built_in_operator_has_torch_code():
    assert {op.name for op in _operators._BUILTIN} == set(TORCH_CODE) | set(NARY_FOLD)


@pytest.mark.parametrize("name", BUILT_IN)
def test_exported_operator_matches_activation_function(name):
    arity = get_operator(name).arity
    args = {1: "x", 2: "x,tanh(x)", NARY: "x,tanh(x),sigmoid(x)"}[arity]
    expression = f"{name}({args})"
    exported = load(module_source(expression, "exported", "test"))
    x = torch.cat(
        [torch.linspace(-6, 6, 97), torch.randn(200, generator=torch.Generator().manual_seed(0))]
    )
    torch.testing.assert_close(
        exported["Activation"]()(x),
        ActivationFunction(expression)(x),
        rtol=0,
        atol=0,
        equal_nan=True,
    )


def test_shared_sub_expressions_are_computed_once():
    body = torch_body("add(tanh(x),mul(tanh(x),swish(tanh(x))))")
    assert sum("torch.tanh(x)" in line for line in body) == 1
    assert body[-1].startswith("return torch.add(")


def test_module_imports_only_torch():
    source = module_source("mul(swish(x),erf(x))", "exported", "test")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"torch", "torch.nn.functional"}
    assert load(source)["EXPRESSION"] == "mul(swish(x),erf(x))"


def test_identity_and_x():
    assert torch_body("x") == ["return x"]
    assert torch_body("identity(x)") == ["return x"]


def test_custom_operator_and_bad_expression_are_user_errors(monkeypatch):
    clip = Operator("export_test_clip", 1, lambda x: torch.clamp(x, -1, 1))
    monkeypatch.setitem(_operators._REGISTRY, clip.name, clip)  # registered for this test only
    with pytest.raises(UserError, match="not built in"):
        torch_body("export_test_clip(x)")
    with pytest.raises(UserError, match="Invalid expression"):
        torch_body("relu(x")
