"""Swapped timm and torchvision models train: backward in train mode with their default dropout."""

from __future__ import annotations

import functools

import pytest
import torch

from optuna_aquasurf._options import DEFAULT_BASELINES
from optuna_aquasurf.integrations import find_activation_sites
from tests.test_integrations_models import MODELS, _build

# The eight baselines, and exp(x): relu, sigmoid, tanh and exp save their output for backward.
EXPRESSIONS = (*DEFAULT_BASELINES, "exp(x)")


def _cases():
    """Every model with relu(x) and exp(x) and the MobileNets with all; the rest is slow."""
    for key in MODELS:
        for expression in EXPRESSIONS:
            fast = "mobilenet" in key or expression in ("relu(x)", "exp(x)")
            marks = () if fast else pytest.mark.slow
            yield pytest.param(key, expression, marks=marks, id=f"{key}-{expression}")


@functools.lru_cache(maxsize=1)  # the cases come model by model
def _original(key: str):
    """The original model, an input batch and the model's activation sites."""
    original, x = _build(key)
    return original, x, find_activation_sites(original, example_input=x)


@pytest.mark.parametrize(("key", "expression"), list(_cases()))
def test_swapped_model_trains(key, expression):
    original, x, sites = _original(key)
    model, _ = sites.apply(original, expression)
    inplace = [path for path, m in model.named_modules() if getattr(m, "inplace", None) is True]
    assert inplace == []

    torch.manual_seed(0)
    out = model.train()(x)
    out.logsumexp(1).mean().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    if expression == "exp(x)" and not out.isfinite().all():
        return  # exp overflows after the residual additions of ResNets and RegNets
    for name, parameter in model.named_parameters():
        assert parameter.grad.isfinite().all(), name
