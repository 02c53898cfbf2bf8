import subprocess
import sys

import numpy as np
import pytest
import torch

from optuna_aquasurf import ALL_UNARY, PAPER_UNARY, ActivationFunction, ExpressionError, SearchSpace
from optuna_aquasurf._probe_points import probe_points
from optuna_aquasurf.features import output_features


@pytest.fixture(scope="module")
def paper_space():
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)


def test_paper_space_has_2918_functions_from_5103_names(paper_space):
    assert paper_space.n_names == 5103
    assert len(paper_space) == 2918
    assert sum(len(c.equivalents) for c in paper_space) == 5103
    assert len(PAPER_UNARY) == 27 and len(ALL_UNARY) == 31


def test_groups_hold_functionally_equal_members(paper_space):
    x = probe_points()
    rng = np.random.default_rng(0)
    for index in rng.choice(len(paper_space), size=40, replace=False):
        candidate = paper_space[int(index)]
        reference = ActivationFunction(candidate.expression)(x)
        for name in candidate.equivalents:
            assert torch.equal(
                ActivationFunction(name)(x).view(torch.int32), reference.view(torch.int32)
            )
            assert paper_space.index(name) == candidate.index
    relu = paper_space["max(relu(x),zero(x))"]
    assert "add(zero(x),relu(x))" in relu.equivalents


def test_lookup_accepts_any_spelling_and_rejects_non_members(paper_space):
    assert paper_space.index(" add( relu(x), tanh(x) ) ") == paper_space.index(
        "add(tanh(x),relu(x))"
    )
    assert "add(relu(x),tanh(x))" in paper_space
    assert "relu(x)" not in paper_space
    assert "relu(" not in paper_space
    with pytest.raises(KeyError, match="not a member"):
        paper_space.index("relu(x)")
    with pytest.raises(ExpressionError):
        paper_space.index("relu(")
    assert paper_space.find_equivalent("relu(x)") == paper_space.index("max(relu(x),zero(x))")
    assert paper_space.find_equivalent("gelu(x)") is None


def test_non_finite_functions_are_flagged(paper_space):
    assert not paper_space["div(one(x),zero(x))"].finite
    assert paper_space["add(relu(x),tanh(x))"].finite
    outputs = paper_space.outputs()
    assert np.array_equal(torch.isfinite(outputs).all(dim=1).numpy(), paper_space.finite)


def test_order_is_identical_in_another_process(paper_space):
    code = (
        "from optuna_aquasurf import SearchSpace, PAPER_UNARY\n"
        "s = SearchSpace.from_schemas(['binary(unary(x),unary(x))'], unary=PAPER_UNARY)\n"
        "print(s.fingerprint); print('|'.join(s.expressions))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    fingerprint, expressions = result.stdout.splitlines()
    assert fingerprint == paper_space.fingerprint
    assert expressions.split("|") == paper_space.expressions


def test_output_features_are_finite_and_documented(paper_space):
    features = output_features(paper_space)
    assert features.shape == (2918, 1000) and features.dtype == np.float32
    assert np.isfinite(features).all() and np.abs(features).max() <= 100.0
    x = probe_points().numpy()
    np.testing.assert_array_equal(
        features[paper_space.index("add(relu(x),zero(x))")], np.maximum(x, 0)
    )
    row = features[paper_space.index("div(one(x),zero(x))")]
    assert (row == 100.0).all()


def test_nested_schemas_and_operator_subsets():
    space = SearchSpace.from_schemas(
        ["unary(unary(x))", "n-ary(unary(x),unary(x),unary(x))", "add(unary(x),x)"],
        unary=["relu", "tanh", "abs"],
        nary=["sum_n", "max_n"],
    )
    assert space.n_names == 9 + 2 * 27 + 3
    assert space.index("tanh(abs(x))") == space.index("tanh(abs(x))")
    assert "max_n(relu(x),tanh(x),abs(x))" in space
    assert "prod_n(relu(x),tanh(x),abs(x))" not in space
    assert "add(relu(x),x)" in space
    # relu(relu(x)), abs(relu(x)) and relu(abs(x)) ... group with simpler members
    assert space["abs(relu(x))"].expression == "relu(relu(x))"


def test_deeper_schema_reuses_shared_families():
    space = SearchSpace.from_schemas(
        ["binary(unary(x),binary(unary(x),unary(x)))"],
        unary=["relu", "tanh"],
        binary=["add", "mul"],
    )
    assert space.n_names == 2 * 2 * (2 * 2 * 2)
    x = probe_points()
    candidate = space["mul(tanh(x),add(relu(x),tanh(x)))"]
    expected = torch.tanh(x) * (torch.relu(x) + torch.tanh(x))
    torch.testing.assert_close(space.outputs([candidate.index])[0], expected)


def test_space_from_expressions():
    space = SearchSpace.from_expressions(["relu(x)", "max(x, zero(x))", "tanh(x)", "relu(x)"])
    assert len(space) == 2 and space.n_names == 3
    assert space[0].equivalents == ("relu(x)", "max(x,zero(x))")
    assert space["max(x,zero(x))"].index == 0
    assert space[-1].expression == "tanh(x)"
    with pytest.raises(IndexError):
        space[2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schemas=["trinary(x)"]), "unknown schema word or operator 'trinary'"),
        (dict(schemas=["binary(x)"]), "'binary' takes 2 arguments"),
        (dict(schemas=["unary(x)"], unary=[]), "unary= is empty"),
        (dict(schemas=["unary(x)"], unary=["relu", "foo"]), "unknown operator 'foo'"),
        (dict(schemas=["unary(x)"], unary=["add"]), "'add' takes 2 arguments"),
        (dict(schemas=[]), "at least one schema"),
    ],
)
def test_bad_schemas_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_schemas(**kwargs)


def test_grouping_ignores_global_torch_arithmetic_settings(paper_space):
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(2)
    try:
        again = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
        assert (torch.tensor([1e-30]) * 1e-10).item() == 0.0  # the user's setting is kept
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    assert again.fingerprint == paper_space.fingerprint


def test_near_twins_are_listed_and_the_exact_grouping_is_kept(paper_space):
    """Functions equal up to float rounding (swish(x) and mul(sigmoid(x),identity(x)) differ by at
    most 2.4e-7) stay apart in the exact grouping and are listed as near twins."""
    twins = paper_space.near_twins()
    assert len(paper_space) == 2918
    assert (len(twins), sum(map(len, twins))) == (103, 226)  # 2,795 functions once merged
    swish, twin = (
        paper_space.index("add(swish(x),zero(x))"),
        paper_space.index("mul(sigmoid(x),identity(x))"),
    )
    assert swish != twin and any({swish, twin} <= set(group) for group in twins)
    outputs = paper_space.outputs()
    for group in twins:
        first = outputs[group[0]]
        assert all(torch.allclose(outputs[m], first, rtol=1e-4, atol=1e-5) for m in group)
        bits = first.numpy().tobytes()  # -0.0 and 0.0 differ here, as in the exact grouping
        assert all(outputs[m].numpy().tobytes() != bits for m in group[1:])
