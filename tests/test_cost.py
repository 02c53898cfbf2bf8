"""What a function costs: measured forward and backward time over relu's, a static estimate,
and a sampler that never suggests what it cannot afford."""

import numpy as np
import optuna
import pytest
import torch

from optuna_aquasurf import ActivationFunction, AquaSurfSampler, SearchSpace
from optuna_aquasurf._cost import (
    OPERATOR_COSTS,
    UNKNOWN_OPERATOR_COST,
    estimated_cost,
    measure_costs,
)
from tests.test_sampler import activations, closeness_to_gelu


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


def test_max_cost_never_suggests_what_it_cannot_afford(tmp_path):
    space = SearchSpace.from_schemas(
        ["binary(unary(x),unary(x))"], unary=["identity", "relu", "tanh", "sinh", "cosh"]
    )
    storage = f"sqlite:///{tmp_path}/s.db"
    sampler = AquaSurfSampler(space, baselines=["sinh(x)", "relu(x)"], max_cost=4.0, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage)
    with pytest.warns(UserWarning, match=r"baseline sinh\(x\) costs .* above max_cost=4.0"):
        study.optimize(closeness_to_gelu, n_trials=12)
    costs = sampler.costs(study)
    chosen = [space.find_equivalent(a) for a in activations(study)]
    assert activations(study)[0] == "relu(x)"  # its own spelling's cost, not max(relu,relu)'s
    assert all(costs[f] <= 4.0 for f in chosen)
    assert (costs > 4.0).sum() > len(space) / 3  # the bound excludes much of the space
    again = AquaSurfSampler(space, baselines=["sinh(x)", "relu(x)"], max_cost=4.0, seed=0)
    assert np.array_equal(again.costs(study), costs)  # measured once, kept with the study


def test_max_cost_must_be_positive():
    with pytest.raises(ValueError, match="max_cost must be a positive number"):
        AquaSurfSampler(max_cost=0)


def test_a_space_too_large_to_time_gets_the_estimates(monkeypatch):
    from optuna_aquasurf import _map
    from optuna_aquasurf._store import MemoryStore

    monkeypatch.setattr(_map, "MEASURED_COSTS_UP_TO", 2)
    space = SearchSpace.from_expressions(["relu(x)", "sinh(x)", "max(x,tanh(x))"])
    costs = _map.SpaceMap(space).costs(MemoryStore())
    assert costs.tolist() == [estimated_cost(e) for e in space.expressions]


def test_costs_are_kept_per_kind_of_device():
    from optuna_aquasurf._cost import device_kind, stored_costs
    from optuna_aquasurf._store import MemoryStore

    store = MemoryStore()
    names = ["relu(x)", "mul(x,tanh(erf(x)))"]  # kept process-wide: names no other test uses
    cpu = stored_costs(store, names, "cpu", measure=lambda e: np.array([1.0, 7.0]))
    other = stored_costs(store, names, "meta", measure=lambda e: np.array([1.0, 3.0]))
    assert cpu.tolist() == [1.0, 7.0] and other.tolist() == [1.0, 3.0]
    again = stored_costs(store, names, "cpu", measure=lambda e: 1 / 0)  # kept: not measured
    assert again.tolist() == [1.0, 7.0]
    assert device_kind("cpu") == device_kind(torch.device("cpu")) == "cpu1"
    with pytest.raises(ValueError, match="cost_device: no device 'gpu'"):
        AquaSurfSampler(cost_device="gpu")
