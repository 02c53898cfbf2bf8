import copy
import functools
import math
import pickle

import numpy as np
import pytest
import torch

from optuna_aquasurf import ActivationFunction, ExpressionError, register_operator


def value(expression, x):
    return ActivationFunction(expression)(torch.tensor([x], dtype=torch.float64)).item()


@pytest.mark.parametrize("x", [-3.0, -2.5, -0.7, 0.0, 0.4, 2.5, 3.0])
def test_operators_match_their_definitions(x):
    sigmoid = 1 / (1 + math.exp(-x))
    assert value("hard_sigmoid(x)", x) == pytest.approx(min(max(0.2 * x + 0.5, 0.0), 1.0))
    selu = 1.0507009873554805 * (x if x > 0 else 1.6732632423543772 * (math.exp(x) - 1))
    assert value("selu(x)", x) == pytest.approx(selu)
    assert value("leakyrelu(x)", x) == pytest.approx(x if x > 0 else 0.01 * x)
    elish = x * sigmoid if x > 0 else (math.exp(x) - 1) * sigmoid
    assert value("elish(x)", x) == pytest.approx(elish)
    assert value("gelu(x)", x) == pytest.approx(0.5 * x * (1 + math.erf(x / math.sqrt(2))))
    assert value("swish(x)", x) == pytest.approx(x * sigmoid)
    assert value("log_sigmoid(x)", x) == pytest.approx(math.log(sigmoid))
    assert value("mish(x)", x) == pytest.approx(x * math.tanh(math.log1p(math.exp(x))))
    assert value("elu(x)", x) == pytest.approx(x if x > 0 else math.exp(x) - 1)
    assert value("softsign(x)", x) == pytest.approx(x / (1 + abs(x)))
    assert value("bessel_i0e(x)", x) == pytest.approx(float(np.i0(x)) * math.exp(-abs(x)))


def test_binary_and_nary_operators():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert ActivationFunction("pow(abs(x),square(x))")(x).tolist() == pytest.approx(
        [16.0, 0.5**0.25, 3.0**9]
    )
    assert ActivationFunction("sum_n(x,relu(x),one(x))")(x).tolist() == [-1.0, 2.0, 7.0]
    assert ActivationFunction("prod_n(x,x,x)")(x).tolist() == [-8.0, 0.125, 27.0]
    assert ActivationFunction("max_n(negative(x),zero(x),x)")(x).tolist() == [2.0, 0.5, 3.0]
    assert ActivationFunction("min(x,zero(x))")(x).tolist() == [-2.0, 0.0, 0.0]
    assert ActivationFunction("div(x,one(x))")(x).tolist() == x.tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_any_dtype_and_shape(dtype):
    act = ActivationFunction("max(relu(x),cosh(elu(x)))")
    x = torch.randn(2, 3, 4, 5).to(dtype)
    y = act(x)
    assert y.shape == x.shape and y.dtype == dtype


def test_autograd():
    act = ActivationFunction("mul(swish(x),erf(x))")
    x = torch.randn(16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(act, (x,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda():
    act = ActivationFunction("max(relu(x),cosh(elu(x)))", normalize=True).cuda()
    x = torch.randn(8, device="cuda")
    torch.testing.assert_close(act(x).cpu(), act.cpu()(x.cpu()))


def test_pickle_deepcopy_and_repr():
    act = ActivationFunction(" add(relu(x), tanh(x)) ", normalize=True)
    assert repr(act) == "ActivationFunction('add(relu(x),tanh(x))', normalize=True)"
    x = torch.randn(10)
    for clone in (pickle.loads(pickle.dumps(act)), copy.deepcopy(act)):
        assert clone.expression == act.expression
        torch.testing.assert_close(clone(x), act(x))
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), act)
    assert "ActivationFunction('add(relu(x),tanh(x))', normalize=True)" in repr(model)
    assert isinstance(pickle.loads(pickle.dumps(model))[1], ActivationFunction)


def test_inplace_is_accepted_and_ignored():
    """``act_layer(inplace=True)``, as timm's models call it, computes out of place."""
    act = functools.partial(ActivationFunction, "mul(x,tanh(x))")(inplace=True)
    x = torch.randn(10)
    before = x.clone()
    y = act(x)
    assert y.data_ptr() != x.data_ptr()
    torch.testing.assert_close(x, before)
    torch.testing.assert_close(y, ActivationFunction("mul(x,tanh(x))")(x))
    assert repr(act) == "ActivationFunction('mul(x,tanh(x))')"
    assert pickle.loads(pickle.dumps(act)).expression == act.expression


@pytest.mark.parametrize("expression", ["relu(x)", "mul(swish(x),erf(x))", "exp(x)", "square(x)"])
def test_normalize_gives_mean_zero_second_moment_one(expression):
    act = ActivationFunction(expression, normalize=True)
    x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = act(x)
    assert y.mean().item() == pytest.approx(0.0, abs=0.01)
    assert (y**2).mean().item() == pytest.approx(1.0, abs=0.02)


def test_normalize_rejects_constant_functions():
    with pytest.raises(ValueError, match="cannot normalize 'one\\(x\\)'"):
        ActivationFunction("one(x)", normalize=True)


def test_malformed_expression_raises_expression_error():
    with pytest.raises(ExpressionError, match="position 4"):
        ActivationFunction("add(foo(x),x)")


def test_user_registered_operator():
    register_operator("cube_test", lambda x: x * x * x)
    register_operator("mean_n_test", lambda *xs: sum(xs) / len(xs), arity="n")
    act = ActivationFunction("mean_n_test(cube_test(x),x,x)")
    assert act(torch.tensor([2.0])).item() == pytest.approx((8 + 2 + 2) / 3)
    with pytest.raises(ValueError, match="exists already"):
        register_operator("cube_test", torch.tanh)
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_operator("Bad-Name", torch.tanh)
    with pytest.raises(ValueError, match="arity"):
        register_operator("three_test", torch.tanh, arity=3)
