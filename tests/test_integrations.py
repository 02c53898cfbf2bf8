"""swap_activations, SwapPolicy and the builders on small hand-made models."""

from __future__ import annotations

import copy
import pickle
import re
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optuna_aquasurf import ActivationFunction
from optuna_aquasurf.integrations import (
    PerCallActivation,
    Site,
    SwapPolicy,
    SwapReport,
    find_activation_sites,
    swap_activations,
    timm_model,
    torchvision_model,
)


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))


class Reuse(nn.Module):
    """Calls one activation module three times, like torchvision's ResNet blocks (twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.lin(self.act(self.lin(self.act(x)))))


class InplaceFunctional(nn.Module):
    """Functional activations whose results flow through in-place mutation."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        F.relu(y, inplace=True)
        z = y * 2
        z.relu_()
        torch.relu_(z)
        return z + torch.relu(x) + F.relu(x)


class ManyFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        x = F.gelu(self.lin(x))
        x = F.silu(self.lin(x))
        x = F.hardswish(self.lin(x))
        x = F.leaky_relu(self.lin(x), 0.1)
        return self.lin(x).relu()

    def extra_method(self) -> str:
        return "still here"


class InplaceAfterFunctional(nn.Module):
    """In-place calls after functional activations: by position, by keyword, for their effect."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = F.gelu(self.lin(x))
        F.hardtanh(y, -0.1, 0.1, True)
        z = F.dropout(F.gelu(self.lin(y)), 0.5, self.training, inplace=True)
        return z + y


class TrainingBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        x = F.relu(self.lin(x))
        if self.training:
            x = x * 0.5
        return x


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return F.relu(x)
        return x


# -- activation argument -------------------------------------------------------------------------


def test_module_activation_is_copied_per_site():
    model, report = swap_activations(_mlp(), nn.PReLU(), example_input=_x(2, 4))
    new = [model[1], model[3]]
    assert all(isinstance(m, nn.PReLU) for m in new)
    assert new[0] is not new[1] and new[0].weight is not new[1].weight
    assert [(s.path, s.original, s.action) for s in report.sites] == [
        ("1", "ReLU", "replaced"),
        ("3", "GELU", "replaced"),
    ]


def test_expression_activation_becomes_activation_function():
    model, _ = swap_activations(_mlp(), "mul(swish(x),erf(x))", example_input=_x(2, 4))
    assert repr(model[1]) == "ActivationFunction('mul(swish(x),erf(x))')"
    assert model[1] is not model[3]


def test_factory_activation_is_called_per_site():
    model, _ = swap_activations(_mlp(), nn.Tanh, example_input=_x(2, 4))
    assert isinstance(model[1], nn.Tanh) and model[1] is not model[3]


@pytest.mark.parametrize(
    ("activation", "message"),
    [(lambda: 3, "returned int, not an nn.Module"), (3, "got int")],
)
def test_bad_activation_is_refused(activation, message):
    with pytest.raises(TypeError, match=message):
        swap_activations(_mlp(), activation, example_input=_x(2, 4))


CALLERS = {
    "swap_activations": lambda model: swap_activations(model, nn.Tanh(), example_input=_x(2, 4)),
    "find_activation_sites": lambda model: find_activation_sites(model, example_input=_x(2, 4)),
    "ActivationSites.apply": lambda model: find_activation_sites(
        _mlp(), example_input=_x(2, 4)
    ).apply(model, nn.Tanh()),
}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize(
    ("model", "message"),
    [
        ((nn.Identity(), None), "got tuple (did you pass the (model, report) pair of"),
        (_mlp, "got function (call it to build the model?)"),
    ],
)
def test_model_that_is_no_module_is_refused(caller, model, message):
    with pytest.raises(TypeError, match=re.escape(f"{caller} needs an nn.Module, {message}")):
        CALLERS[caller](model)


def test_copy_unless_inplace():
    original = _mlp()
    model, _ = swap_activations(original, nn.Tanh(), example_input=_x(2, 4))
    assert model is not original and isinstance(original[1], nn.ReLU)
    same, _ = swap_activations(original, nn.Tanh(), example_input=_x(2, 4), inplace=True)
    assert same is original and isinstance(original[1], nn.Tanh)


# -- reused and shared modules ---------------------------------------------------------------


def test_reused_module_gets_one_copy_per_call():
    torch.manual_seed(0)
    original = Reuse()
    model, report = swap_activations(original, nn.Tanh(), example_input=_x(2, 4))
    assert isinstance(model.act, PerCallActivation) and len(model.act.calls) == 3
    assert [s.path for s in report.sites] == ["act.calls.0", "act.calls.1", "act.calls.2"]
    assert report.sites[1].note == "call 2 of 3 of a reused module"
    calls = []
    for index, module in enumerate(model.act.calls):
        module.register_forward_hook(lambda *args, index=index: calls.append(index))
    x = _x(2, 4)
    for _ in range(2):
        expected = torch.tanh(original.lin(torch.tanh(original.lin(torch.tanh(x)))))
        torch.testing.assert_close(model(x), expected)
    assert calls == [0, 1, 2, 0, 1, 2]
    assert list(model.state_dict()) == list(original.state_dict())


def test_shared_instance_gets_one_module_per_path():
    relu = nn.ReLU()
    original = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu)
    model, report = swap_activations(original, nn.Tanh(), example_input=_x(2, 4))
    assert isinstance(model[1], nn.Tanh) and isinstance(model[3], nn.Tanh)
    assert model[1] is not model[3]
    assert report.counts["replaced"] == 2


# -- functional activations ------------------------------------------------------------------


def test_inplace_functional_calls_keep_their_semantics():
    torch.manual_seed(0)
    original = InplaceFunctional()
    x = _x(2, 4)
    same, report = swap_activations(original, nn.ReLU(), example_input=x)
    assert report.counts["functional-rewritten"] == 5
    torch.testing.assert_close(same(x), original(x))

    model, _ = swap_activations(original, nn.Tanh(), example_input=x)
    z = torch.tanh(torch.tanh(2 * torch.tanh(original.lin(x))))
    torch.testing.assert_close(model(x), z + 2 * torch.tanh(x))


def test_functional_kinds_are_rewritten_and_methods_kept():
    torch.manual_seed(0)
    original = ManyFunctional()
    x = _x(2, 4)
    model, report = swap_activations(original, nn.Tanh(), example_input=x)
    assert [(s.path, s.original) for s in report.sites] == [
        ("functional_act0", "F.gelu"),
        ("functional_act1", "F.silu"),
        ("functional_act2", "F.hardswish"),
        ("functional_act3", "F.leaky_relu"),
        ("functional_act4", "Tensor.relu"),
    ]
    assert {s.action for s in report.sites} == {"functional-rewritten"}
    expected = x
    for _ in range(5):
        expected = torch.tanh(original.lin(expected))
    torch.testing.assert_close(model(x), expected)
    assert isinstance(model, ManyFunctional) and model.extra_method() == "still here"
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(x), expected)
    with pytest.raises(pickle.PicklingError, match="not the same object"):
        pickle.dumps(model)
    assert list(model.state_dict()) == list(original.state_dict())


def test_inplace_operations_are_switched_off():
    """In-place operations would overwrite what the new activations save for backward."""
    torch.manual_seed(0)
    original = nn.Sequential(InplaceAfterFunctional(), nn.GELU(), nn.Dropout(inplace=True))
    x = _x(2, 4)
    same, _ = swap_activations(original, nn.GELU(), example_input=x)
    for mode in (True, False):
        torch.manual_seed(0)
        expected = original.train(mode)(x)
        torch.manual_seed(0)
        torch.testing.assert_close(same.train(mode)(x), expected)

    model, report = swap_activations(original, "relu(x)", example_input=x)
    assert report.counts["functional-rewritten"] == 2 and report.counts["replaced"] == 1
    assert not model[2].inplace and original[2].inplace
    model.train()(x).sum().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_traced_module_follows_training_mode():
    torch.manual_seed(0)
    original = TrainingBranch()
    x = _x(2, 4)
    model, _ = swap_activations(original, nn.Tanh(), example_input=x)
    expected = torch.tanh(original.lin(x))
    torch.testing.assert_close(model.train()(x), expected * 0.5)
    torch.testing.assert_close(model.eval()(x), expected)


def test_functional_calls_in_gates_are_kept():
    class FunctionalGate(nn.Module):
        def forward(self, x):
            return x * F.relu(x)

    model = nn.Sequential(nn.Linear(4, 4), FunctionalGate())
    policy = SwapPolicy(exclude=(FunctionalGate,))
    with pytest.warns(UserWarning, match="replaced no activation"):
        _, report = swap_activations(model, nn.Tanh(), policy=policy, example_input=_x(2, 4))
    assert report.sites == [Site("1", "F.relu", "kept (policy)", "excluded by policy")]


def test_untraceable_module_warns_and_keeps_working():
    model = nn.Sequential(DataDependent(), nn.Linear(4, 4), nn.ReLU())
    with pytest.warns(UserWarning, match=r"1 functional activation call\(s\) were left") as caught:
        new, report = swap_activations(model, nn.Tanh(), example_input=_x(2, 4).abs())
    assert "0: F.relu (torch.fx cannot trace DataDependent.forward" in str(caught[0].message)
    assert report.counts == {
        "replaced": 1,
        "kept (gate)": 0,
        "kept (policy)": 0,
        "functional-rewritten": 0,
        "functional-left": 1,
    }
    assert type(new[0]) is DataDependent
    assert new(_x(2, 4)).shape == (2, 4)


def test_timm_notrace_modules_are_not_traced(monkeypatch):
    fx_registry = pytest.importorskip("timm.layers._fx")
    monkeypatch.setattr(fx_registry, "_leaf_modules", {TrainingBranch})
    with pytest.warns(UserWarning, match="timm marks TrainingBranch as not traceable"):
        with pytest.warns(UserWarning, match="replaced no activation"):
            _, report = swap_activations(TrainingBranch(), nn.Tanh(), example_input=_x(2, 4))
    assert [s.action for s in report.sites] == ["functional-left"]


def hidden_relu(x):  # autowrapped by name: torch.fx skips names starting with "_"
    return F.relu(x)


class HiddenCall(nn.Module):
    def forward(self, x):
        return hidden_relu(x) + F.relu(x)


def test_calls_hidden_from_fx_are_reported(monkeypatch):
    fx_registry = pytest.importorskip("timm.layers._fx")
    monkeypatch.setattr(fx_registry, "_autowrap_functions", {hidden_relu})
    with pytest.warns(UserWarning, match="missed by torch.fx"):
        model, report = swap_activations(HiddenCall(), nn.Tanh(), example_input=_x(2, 4))
    assert [(s.path, s.action) for s in report.sites] == [
        ("functional_act0", "functional-rewritten"),
        ("", "functional-left"),
    ]
    x = _x(2, 4)
    torch.testing.assert_close(model(x), F.relu(x) + torch.tanh(x))


# -- policy ----------------------------------------------------------------------------------


def _se_model() -> nn.Sequential:
    from torchvision.ops import SqueezeExcitation

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), SqueezeExcitation(8, 2), nn.Sigmoid())


def test_gates_are_kept_by_default():
    original = _se_model()
    model, report = swap_activations(original, nn.Tanh())
    assert [(s.path, s.action, s.note) for s in report.sites] == [
        ("1", "replaced", ""),
        ("2.activation", "kept (gate)", "inside SqueezeExcitation"),
        ("2.scale_activation", "kept (gate)", "inside SqueezeExcitation"),
        ("3", "kept (gate)", "sigmoid-shaped"),
    ]
    assert model[2].activation is not original[2].activation
    assert type(model[2].scale_activation) is nn.Sigmoid


def test_policy_include_and_exclude():
    from torchvision.ops import SqueezeExcitation

    policy = SwapPolicy(include=("2.*",), exclude=("1",))
    _, report = swap_activations(_se_model(), nn.Tanh(), policy=policy)
    assert [s.action for s in report.sites] == [
        "kept (policy)",
        "replaced",
        "replaced",
        "kept (gate)",
    ]
    policy = SwapPolicy(include=(nn.Sigmoid,), exclude=(SqueezeExcitation,))
    _, report = swap_activations(_se_model(), nn.Tanh(), policy=policy)
    assert [s.action for s in report.sites] == [
        "replaced",
        "kept (policy)",
        "kept (policy)",
        "replaced",
    ]


def test_glu_gates_follow_the_option():
    mlp = pytest.importorskip("timm.layers.mlp")
    model = nn.Sequential(mlp.SwiGLU(4, 8), mlp.GluMlp(4, 8))
    with pytest.warns(UserWarning, match="replaced no activation"):
        _, report = swap_activations(model, nn.Tanh(), example_input=_x(2, 4))
    assert [(s.path, s.note) for s in report.sites] == [
        ("0.act", "GLU gate of SwiGLU"),
        ("1.act", "GLU gate of GluMlp"),
    ]
    policy = SwapPolicy(glu_gates="replace")
    new, report = swap_activations(model, nn.Tanh(), policy=policy, example_input=_x(2, 4))
    assert report.counts["replaced"] == 2 and isinstance(new[0].act, nn.Tanh)


def test_extra_types():
    model = nn.Sequential(nn.Linear(4, 4), nn.Softplus())
    policy = SwapPolicy(extra_types=(nn.Softplus,))
    new, _ = swap_activations(model, nn.Tanh(), policy=policy, example_input=_x(2, 4))
    assert isinstance(new[1], nn.Tanh)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"glu_gates": "drop"}, ValueError),
        ({"include": (3,)}, TypeError),
        ({"extra_types": (int,)}, TypeError),
    ],
)
def test_policy_validation(kwargs, error):
    with pytest.raises(error):
        SwapPolicy(**kwargs)


# -- probe, report, devices ------------------------------------------------------------------


def test_swap_leaves_state_modes_and_rng_alone():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    original.eval()
    before = copy.deepcopy(original.state_dict())
    rng = torch.get_rng_state()
    model, _ = swap_activations(original, nn.Tanh())
    assert torch.equal(torch.get_rng_state(), rng)
    assert not any(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_example_input_is_needed_without_conv():
    with pytest.raises(ValueError, match="pass example_input="):
        swap_activations(_mlp(), nn.Tanh())


def test_example_input_that_fails_is_reported():
    with pytest.raises(RuntimeError, match="failed in eval mode for every example input"):
        swap_activations(_mlp(), nn.Tanh(), example_input=_x(2, 5))


def test_train_mode_failure_is_a_warning():
    class EvalOnly(nn.Sequential):
        def forward(self, x):
            if self.training:
                raise RuntimeError("no training here")
            return super().forward(x)

    with pytest.warns(UserWarning, match="train-mode probe forward failed"):
        swap_activations(EvalOnly(nn.Linear(4, 4), nn.ReLU()), nn.Tanh(), example_input=_x(2, 4))


def test_report_table():
    report = SwapReport(
        [
            Site("layer1.0.relu.calls.0", "ReLU", "replaced", "call 1 of 2 of a reused module"),
            Site("", "F.relu", "functional-left", "torch.fx cannot trace Net.forward"),
        ]
    )
    assert str(report).splitlines() == [
        "path                   original  action           note",
        "---------------------  --------  ---------------  ----",
        "layer1.0.relu.calls.0  ReLU      replaced         call 1 of 2 of a reused module",
        "(model)                F.relu    functional-left  torch.fx cannot trace Net.forward",
        "2 sites: 1 replaced, 1 functional-left",
    ]
    assert report.counts["replaced"] == 1 and report.counts["kept (gate)"] == 0


def test_new_modules_follow_the_model_device():
    model = _se_model().to("meta")
    new, _ = swap_activations(model, nn.PReLU())
    assert new[1].weight.device.type == "meta"
    assert new(torch.empty(2, 3, 8, 8, device="meta")).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_models():
    x = _x(2, 3, 16, 16).cuda()
    on_gpu, _ = swap_activations(_se_model().cuda(), "gelu(x)")
    moved, _ = swap_activations(_se_model(), "gelu(x)")
    moved = moved.cuda()
    for model in (on_gpu, moved):
        for mode in (True, False):
            out = model.train(mode)(x)
            out.sum().backward()
            assert out.is_cuda
    assert isinstance(moved[1], ActivationFunction)


# -- builders and imports --------------------------------------------------------------------


def test_import_is_lazy():
    code = (
        "import sys, optuna_aquasurf.integrations; "
        "assert 'timm' not in sys.modules and 'torchvision' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("builder", "name", "close"),
    [(torchvision_model, "resnet19", "resnet18"), (timm_model, "convnext_ato", "convnext_atto")],
)
def test_unknown_model_names_suggest_close_ones(builder, name, close):
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=f"unknown .* model '{name}' \\(close names: .*{close}"):
        builder(name, nn.Tanh())


def test_builders_pass_kwargs():
    pytest.importorskip("timm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = torchvision_model("mobilenet_v3_small", "relu(x)", num_classes=3, dropout=0.0)
    assert model.classifier[-1].out_features == 3 and model.classifier[2].p == 0.0
    model = timm_model("resnet18", "relu(x)", num_classes=5, drop_rate=0.25)
    assert model.num_classes == 5 and model.drop_rate == 0.25
    assert isinstance(model.act1, ActivationFunction)
