"""timm's own way to set an activation: ``timm.create_model(name, act_layer=...)`` with an
:class:`ActivationFunction`, on three families with gates (random weights, built offline).

Each model is compared module by module with the same model built with ``act_layer=nn.ReLU``:
every ReLU there is what ``act_layer`` reaches, and the modules of any other class are the
model's own (gates included).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from optuna_aquasurf import ActivationFunction

timm = pytest.importorskip("timm")

EXPRESSION = "mul(swish(x),erf(x))"


def _mobilenetv3_keeps_its_relu(name: str) -> bool:
    """The ReLUs that ``act_layer`` does not reach in mobilenetv3_small_100: blocks 0 and 1,
    whose arch strings end in ``_nre`` (ReLU whatever ``act_layer`` is), and the reduce
    activation (``se.act1``) of every squeeze-excite, which mobilenetv3 forces to ReLU."""
    return name.startswith(("blocks.0.", "blocks.1.")) or name.endswith(".se.act1")


#: name: (which of the reference's ReLUs stay ReLU, the gates' class, how many gates).
FAMILIES = {
    "resnet18": (lambda name: False, None, 0),
    "mobilenetv3_small_100": (_mobilenetv3_keeps_its_relu, nn.Hardsigmoid, 9),
    "efficientnet_b0": (lambda name: False, nn.Sigmoid, 16),
}


def build(name: str, act_layer) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=10, act_layer=act_layer)


@pytest.mark.parametrize("name", FAMILIES)
def test_act_layer_is_the_expression_wherever_it_reaches(name):
    keeps_relu, gate_class, n_gates = FAMILIES[name]
    reference = dict(build(name, nn.ReLU).named_modules())
    model = dict(build(name, partial(ActivationFunction, EXPRESSION)).named_modules())
    assert model.keys() == reference.keys()

    reached = [n for n, m in reference.items() if type(m) is nn.ReLU and not keeps_relu(n)]
    kept = [n for n, m in reference.items() if type(m) is nn.ReLU and keeps_relu(n)]
    assert reached
    for n in reached:
        assert isinstance(model[n], ActivationFunction), n
        assert model[n].expression == EXPRESSION
    for n in kept:
        assert type(model[n]) is nn.ReLU, n
    assert sum(isinstance(m, ActivationFunction) for m in model.values()) == len(reached)

    # Every other module, gates included, is the model's own.
    for n, m in reference.items():
        if type(m) is not nn.ReLU:
            assert type(model[n]) is type(m), n
    gates = [m for n, m in model.items() if n.endswith(".gate")]
    assert len(gates) == n_gates
    assert all(type(g) is gate_class for g in gates)


def test_mobilenetv3_act_layer_misses_exactly_the_arch_string_and_squeeze_excite_relus():
    reference = build("mobilenetv3_small_100", nn.ReLU)
    names = [n for n, m in reference.named_modules() if type(m) is nn.ReLU]
    kept = [n for n in names if _mobilenetv3_keeps_its_relu(n)]
    # 5 in blocks 0 and 1, and one in each of the 9 squeeze-excites (block 0 has one too).
    assert len(kept) == 14
    assert sum(n.endswith(".se.act1") for n in kept) == 9


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_and_backward_in_train_mode(name):
    torch.manual_seed(0)
    model = build(name, partial(ActivationFunction, EXPRESSION)).train()
    x = torch.randn(2, 3, 32, 32)
    model(x).square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
