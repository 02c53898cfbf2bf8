"""What a function costs: measured forward and backward time over relu's, and a static
estimate."""

import pytest
import torch

from optuna_aquasurf import ActivationFunction
from optuna_aquasurf._cost import (
    OPERATOR_COSTS,
    UNKNOWN_OPERATOR_COST,
    estimated_cost,
    measure_costs,
)


def test_the_estimate_counts_each_operator_with_its_weight():
    assert estimated_cost("relu(x)") == OPERATOR_COSTS["relu"]
    assert estimated_cost("max(sinh(x),relu(x))") == pytest.approx(
        OPERATOR_COSTS["max"] + OPERATOR_COSTS["sinh"] + OPERATOR_COSTS["relu"]
    )
    assert estimated_cost("x") == 0.0
    assert set(OPERATOR_COSTS) >= {"relu", "pow", "sum_n"}
    assert UNKNOWN_OPERATOR_COST > 0


def test_measured_costs_are_relative_to_relu_and_tell_cheap_from_expensive():
    relu, sinh, pow_ = measure_costs(["relu(x)", "sinh(x)", "pow(sinh(x),cosh(x))"])
    assert 0.3 < relu < 3
    assert sinh > 3 * relu and pow_ > sinh
    act = ActivationFunction("relu(x)")
    assert 0.3 < act.cost < 3 and act.cost == act.cost  # measured once
    assert ActivationFunction("max(x,zero(x))").cost > 3  # the same function, written slower


def test_measuring_leaves_the_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    measure_costs(["tanh(x)"])
    assert torch.rand(1) == expected
