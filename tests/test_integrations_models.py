"""swap_activations on real timm and torchvision models, built offline with random weights."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from optuna_aquasurf import ActivationFunction
from optuna_aquasurf.integrations import swap_activations, timm_model, torchvision_model

timm = pytest.importorskip("timm")
import timm.layers.activations as timm_acts  # noqa: E402

EXPRESSION = "mul(swish(x),erf(x))"


# Modules and functions that must not run outside kept gates once the model is swapped.
OLD_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.ELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    timm_acts.GELU,
    timm_acts.GELUTanh,
    timm_acts.Swish,
    timm_acts.Mish,
    timm_acts.HardSwish,
    timm_acts.HardSigmoid,
    timm_acts.Sigmoid,
    timm_acts.Tanh,
)
OLD_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.hardswish,
    F.mish,
    F.elu,
    F.leaky_relu,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
    torch.sigmoid,
    torch.Tensor.sigmoid,
}

NO_AUX = {"aux_logits": False, "init_weights": False}

# name: (builder, model name, kwargs, input side, expected counts, same-function activation)
MODELS = {
    "tv-resnet18": (torchvision_model, "resnet18", {}, 32, {"replaced": 17}, nn.ReLU),
    "tv-mobilenet_v3_small": (
        torchvision_model,
        "mobilenet_v3_small",
        {},
        32,
        {"replaced": 24, "kept (gate)": 18},
        None,
    ),
    "tv-efficientnet_b0": (
        torchvision_model,
        "efficientnet_b0",
        {},
        32,
        {"replaced": 33, "kept (gate)": 32},
        nn.SiLU,
    ),
    "tv-inception_v3": (
        torchvision_model,
        "inception_v3",
        NO_AUX,
        75,
        {"functional-rewritten": 94},
        nn.ReLU,
    ),
    "tv-googlenet": (
        torchvision_model,
        "googlenet",
        NO_AUX,
        32,
        {"functional-rewritten": 57},
        nn.ReLU,
    ),
    "tv-densenet121": (
        torchvision_model,
        "densenet121",
        {},
        32,
        {"replaced": 120, "functional-rewritten": 1},
        nn.ReLU,
    ),
    "timm-resnet18": (timm_model, "resnet18", {}, 32, {"replaced": 17}, nn.ReLU),
    "timm-convnext_atto": (timm_model, "convnext_atto", {}, 32, {"replaced": 12}, nn.GELU),
    "timm-vit_tiny": (
        timm_model,
        "vit_tiny_patch16_224",
        {"img_size": 32},
        32,
        {"replaced": 12},
        nn.GELU,
    ),
    "timm-efficientnet_b0": (
        timm_model,
        "efficientnet_b0",
        {},
        32,
        {"replaced": 33, "kept (gate)": 32},
        nn.SiLU,
    ),
    "timm-mobilenetv3_small_100": (
        timm_model,
        "mobilenetv3_small_100",
        {},
        32,
        {"replaced": 24, "kept (gate)": 18},
        None,
    ),
    "timm-regnetx_002": (timm_model, "regnetx_002", {}, 32, {"replaced": 40}, nn.ReLU),
}


def _build(key: str) -> tuple[nn.Module, torch.Tensor]:
    """The original model (seeded) and an input batch."""
    builder, name, kwargs, side, _, _ = MODELS[key]
    torch.manual_seed(0)
    if builder is timm_model:
        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    else:
        import torchvision

        model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)
    return model, torch.randn(2, 3, side, side)


class _CallCounter(TorchFunctionMode):
    """Counts old activation calls (modules and functions) made outside ``allowed`` modules."""

    def __init__(self, model: nn.Module, allowed: set[int]) -> None:
        super().__init__()
        self.stack: list[nn.Module] = []
        self.allowed = allowed
        self.old_calls: list[str] = []
        self.new_calls: dict[int, int] = {}
        self.handles = []
        for module in model.modules():
            self.handles.append(module.register_forward_pre_hook(self._enter))
            self.handles.append(module.register_forward_hook(self._leave))

    def _outside(self) -> bool:
        return not any(id(m) in self.allowed for m in self.stack)

    def _enter(self, module, args):
        self.stack.append(module)
        if isinstance(module, ActivationFunction):
            self.new_calls[id(module)] = self.new_calls.get(id(module), 0) + 1
        elif isinstance(module, OLD_MODULES) and self._outside():
            self.old_calls.append(type(module).__name__)

    def _leave(self, module, args, output):
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in OLD_FUNCTIONS and self._outside():
            self.old_calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("key", list(MODELS))
def test_swap_real_model(key):
    builder, name, kwargs, side, expected, _ = MODELS[key]
    original, x = _build(key)
    model, report = swap_activations(original, EXPRESSION, example_input=x)

    counts = {action: n for action, n in report.counts.items() if n}
    assert counts == expected, str(report)
    assert type(model).__name__ == type(original).__name__ and isinstance(model, type(original))

    # Kept gates are the original modules, untouched.
    kept = [site.path for site in report.sites if site.action == "kept (gate)"]
    for path in kept:
        assert type(model.get_submodule(path)) is type(original.get_submodule(path))
        assert isinstance(model.get_submodule(path), OLD_MODULES)

    # Old activations run only inside kept gates or the new modules; each new module runs once.
    new_modules = [m for m in model.modules() if isinstance(m, ActivationFunction)]
    assert len(new_modules) == report.counts["replaced"] + report.counts["functional-rewritten"]
    allowed = {id(model.get_submodule(p)) for p in kept} | {id(m) for m in new_modules}
    model.train()
    counter = _CallCounter(model, allowed)
    with counter:
        out = model(x)
    for handle in counter.handles:
        handle.remove()
    assert counter.old_calls == []
    assert sorted(counter.new_calls) == sorted(id(m) for m in new_modules)
    assert set(counter.new_calls.values()) == {1}

    # Shape and backward.
    assert out.shape == (2, 10)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    assert model(x).shape == (2, 10)

    # Checkpoints load both ways.
    model.load_state_dict(original.state_dict(), strict=True)
    original.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("key", [k for k, spec in MODELS.items() if spec[5] is not None])
def test_same_function_swap_keeps_outputs(key):
    """Swapping in the function each site already computes changes nothing."""
    original, x = _build(key)
    model, _ = swap_activations(original, MODELS[key][5], example_input=x)
    original.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))


@pytest.mark.parametrize(
    ("builder", "name", "kwargs"),
    [
        (timm_model, "vit_tiny_patch16_224", {"img_size": 32}),
        (torchvision_model, "inception_v3", NO_AUX),
    ],
)
def test_builders_infer_the_example_input(builder, name, kwargs):
    model, report = builder(name, EXPRESSION, num_classes=10, return_report=True, **kwargs)
    assert report.counts["replaced"] + report.counts["functional-rewritten"] > 0
    assert report.counts["functional-left"] == 0
    side = 32 if "vit" in name else 75
    assert model.eval()(torch.randn(1, 3, side, side)).shape == (1, 10)


def test_timm_methods_survive():
    model = timm_model("convnext_atto", "gelu(x)", num_classes=10)
    features = model.forward_features(torch.randn(1, 3, 64, 64))
    assert features.shape[1] == model.num_features
    assert all(not isinstance(m, (nn.GELU, timm_acts.GELU)) for m in model.modules()), (
        "a GELU was left"
    )


def _model_function(key: str):
    """A ``model()`` of a model file: the original model, built anew at each call."""
    builder, name, kwargs, _, _, _ = MODELS[key]
    if builder is timm_model:
        return functools.partial(timm.create_model, name, num_classes=10, **kwargs)
    import torchvision

    return functools.partial(
        torchvision.models.get_model, name, weights=None, num_classes=10, **kwargs
    )


@pytest.mark.parametrize("key", list(MODELS))
def test_fisher_probe_stacks_candidates_of_model_files(key):
    """``model()`` files: candidates stacked in one pass get the features they get alone."""
    from optuna_aquasurf.cli._userfile import SwappedModel
    from optuna_aquasurf.features import FisherProbe

    side = MODELS[key][3]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, side, side, generator=generator)
    y = torch.randint(0, 10, (2,), generator=generator)
    build = SwappedModel(_model_function(key), lambda: (x,))
    expressions = ["tanh(x)", "swish(x)", "mul(x,erf(x))", "softsign(x)"]
    stacked = FisherProbe(build, x, y, device="cpu", progress=False)
    assert stacked.stack_size > 2  # by default, as many as keep a pass under 2**22 outputs
    alone = FisherProbe(build, x, y, device="cpu", progress=False, stack=1)
    matrix, expected = stacked.features(expressions), alone.features(expressions)
    # Float32 rounding of the larger stacked products may move an eigenvalue across bin edges
    # (one at the rank tolerance across many: how many depends on the LAPACK numpy ships), so
    # the CDFs are compared by their mean distance, an eigenvalue's move spread over all bins.
    assert np.abs(matrix - expected).mean() < 1e-4
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-2)
