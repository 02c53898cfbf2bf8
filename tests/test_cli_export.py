"""``aquasurf export``: the generated torch code computes exactly what ActivationFunction does,
its fused path the same within rounding, and it falls back where torch.compile cannot work."""

from __future__ import annotations

import ast
import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from optuna_aquasurf import ActivationFunction, Operator, _operators
from optuna_aquasurf._operators import NARY, get_operator, operator_names
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._export import (
    NARY_FOLD,
    TORCH_CODE,
    module_source,
    torch_body,
    write_module,
)

BUILT_IN = [name for name in operator_names() if name in TORCH_CODE or name in NARY_FOLD]


def load(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "exported.py", "exec"), namespace)
    return namespace


def test_every_built_in_operator_has_torch_code():
    assert {op.name for op in _operators._BUILTIN} == set(TORCH_CODE) | set(NARY_FOLD)


def operator_expression(name: str) -> str:
    """The operator ``name`` applied to ``x`` and, for more arguments, functions of ``x``."""
    args = {1: "x", 2: "x,tanh(x)", NARY: "x,tanh(x),sigmoid(x)"}[get_operator(name).arity]
    return f"{name}({args})"


def inputs() -> torch.Tensor:
    """Evenly spread and random points, as a 3 x 99 tensor."""
    points = [
        torch.linspace(-6, 6, 97),
        torch.randn(200, generator=torch.Generator().manual_seed(0)),
    ]
    return torch.cat(points).reshape(3, 99)


@pytest.mark.parametrize("name", BUILT_IN)
def test_exported_operator_matches_activation_function(name):
    expression = operator_expression(name)
    exported = load(module_source(expression, "exported", "test", cost=1.0))
    x = inputs()
    torch.testing.assert_close(
        exported["Activation"](fused=False)(x),
        ActivationFunction(expression)(x),
        rtol=0,
        atol=0,
        equal_nan=True,
    )


def assert_fused_matches_unfused(expression: str) -> None:
    """The fused path of the exported module gives the plain function's outputs and gradients
    (within float32 rounding), and really compiles."""
    exported = load(module_source(expression, "exported", "test", cost=1.0))
    upstream = torch.randn(3, 99, generator=torch.Generator().manual_seed(1))
    results = []
    for fused in (True, False):
        x = inputs().requires_grad_()
        y = exported["Activation"](fused=fused)(x)
        if y.requires_grad:  # not for constants such as zero(x)
            y.backward(upstream)
        results.append((y.detach(), x.grad))
    assert exported["_compiled"] not in (None, exported["activation"])  # compiled, no fallback
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize(
    "expression", ["mul(swish(x),erf(x))", "max_n(x,tanh(x),zero(x))", "zero(x)"]
)
def test_fused_path_matches_unfused(expression):
    assert_fused_matches_unfused(expression)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_IN)
def test_fused_operator_matches_unfused(name):
    assert_fused_matches_unfused(operator_expression(name))


def test_fused_path_falls_back_without_a_compiler(tmp_path):
    """Where torch.compile cannot work (here: no C++ compiler for inductor, and an empty cache
    of compiled code), the fused path warns once and runs the plain function; ``fused=False``
    never compiles."""
    write_module(tmp_path / "exported.py", "mul(swish(x),erf(x))", "test")
    script = textwrap.dedent(
        """
        import warnings
        import torch
        import exported

        x = torch.linspace(-3, 3, 13)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            unfused = exported.Activation(fused=False)(x)
            assert exported._compiled is None  # torch.compile was never called
            first, second = exported.Activation()(x), exported.Activation()(x)
        assert exported._compiled is exported.activation
        assert torch.equal(first, unfused) and torch.equal(second, unfused)
        [failure] = [w for w in caught if "torch.compile failed" in str(w.message)]  # once
        assert failure.category is RuntimeWarning
        print(failure.message)
        """
    )
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-compiler"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache"),
    }
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(
        "exported: torch.compile failed, so mul(swish(x),erf(x)) runs unfused from now on"
    )
    assert "C++ compiler" in run.stdout


def test_module_states_its_cost(tmp_path, monkeypatch):
    path = tmp_path / "exported_cost.py"
    cost = write_module(path, "mul(swish(x),erf(x))", "test")
    assert cost > 0
    spec = importlib.util.spec_from_file_location("exported_cost", path)
    exported = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "exported_cost", exported)  # for pickle, removed after
    spec.loader.exec_module(exported)
    assert exported.COST == float(f"{cost:.3g}")
    assert f"COST = {exported.COST}:" in exported.__doc__
    unfused = pickle.loads(pickle.dumps(exported.Activation(fused=False)))
    assert repr(unfused) == "Activation(mul(swish(x),erf(x)), fused=False)"


def test_shared_sub_expressions_are_computed_once():
    body = torch_body("add(tanh(x),mul(tanh(x),swish(tanh(x))))")
    assert sum("torch.tanh(x)" in line for line in body) == 1
    assert body[-1].startswith("return torch.add(")


def test_module_imports_only_torch():
    source = module_source("mul(swish(x),erf(x))", "exported", "test", cost=1.0)
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"warnings", "torch", "torch.nn.functional"}
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
