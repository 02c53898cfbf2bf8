"""Fisher-spectrum features and the probe over candidate activations, on real architectures."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from optuna_aquasurf import SearchSpace
from optuna_aquasurf.features import (
    DivergedError,
    FisherProbe,
    _fisher,
    fisher_features,
    kfac_eigenvalues,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def timm_model(name, **kwargs):
    def build(activation):
        from optuna_aquasurf.integrations import timm_model

        return timm_model(name, activation, num_classes=10, **kwargs)

    return build


def mobilenet(activation):
    from optuna_aquasurf.integrations import torchvision_model

    return torchvision_model("mobilenet_v3_small", activation, num_classes=10)


class SmallCNN(nn.Module):
    def __init__(self, activation: nn.Module):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3),
            activation,
            nn.Conv2d(8, 16, 3, groups=2),
            activation,
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )

    def forward(self, x):
        return self.net(x)


def _expected_length(model: nn.Module) -> int:
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return sum(max(1, sum(p.numel() for p in m.parameters(recurse=False)) // 100) for m in layers)


def _cdf_ends(probe: FisherProbe) -> np.ndarray:
    return np.cumsum([b for _, _, b in probe.layers]) - 1


def _batch(shape, n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=generator), torch.randint(
        0, 10, (n,), generator=generator
    )


@pytest.mark.parametrize(
    "build",
    [
        timm_model("resnet18"),
        timm_model("convnext_atto"),
        timm_model("vit_tiny_patch16_224", img_size=32),
        mobilenet,
    ],
    ids=["resnet18", "convnext_atto", "vit_tiny", "mobilenet_v3_small"],
)
def test_real_architectures(build):
    from optuna_aquasurf import ActivationFunction

    x, y = _batch((3, 32, 32), 4)
    probe = FisherProbe(build, x, y, device="cpu")
    matrix, diverged = probe.features(["tanh(x)", "swish(x)"], return_diverged=True)
    expected = _expected_length(build(ActivationFunction("relu(x)")))
    assert probe.feature_length == expected
    assert matrix.shape == (2, expected) and matrix.dtype == np.float32
    assert np.isfinite(matrix).all() and not diverged.any()
    for cdf in np.split(matrix, _cdf_ends(probe)[:-1] + 1, axis=1):  # one CDF per layer
        assert np.all(np.diff(cdf, axis=1) >= 0)
        np.testing.assert_allclose(cdf[:, -1], 1.0)
    assert not np.array_equal(matrix[0], matrix[1])


def _reference_features(eigenvalues: dict, bins: int) -> np.ndarray:
    """The method's feature from the eigenvalues, with all pairwise sums and ``np.histogram``."""
    parts = []
    for eig_a, eig_g in eigenvalues.values():
        logs = []
        for eigs in (eig_a.numpy(), eig_g.numpy()):
            tol = eigs.max(axis=1, keepdims=True) * eigs.shape[1] * np.finfo(np.float32).eps
            logs.append(
                np.clip(np.log(np.maximum(np.where(eigs > tol, eigs, 0), np.exp(-50))), -50, 50)
            )
        sums = (logs[0][:, :, None] + logs[1][:, None, :]).ravel()
        hist, _ = np.histogram(sums, bins=bins, range=(-100, 100))
        parts.append(np.cumsum(hist) / sums.size)
    return np.concatenate(parts)


def test_features_match_histogram_of_all_pairwise_sums(monkeypatch):
    torch.manual_seed(0)
    model = SmallCNN(nn.Tanh()).eval()
    x, y = _batch((1, 8, 8), 6)
    expected = _reference_features(kfac_eigenvalues(model, x, y), bins=40)
    np.testing.assert_allclose(fisher_features(model, x, y, bins=40), expected, atol=1e-6)
    monkeypatch.setattr(_fisher, "CHUNK", 50)  # many chunks
    np.testing.assert_allclose(fisher_features(model, x, y, bins=40), expected, atol=1e-6)


class _CountsFirstGradient(nn.Module):
    """Linear(4, 8) (40 weights: one bin), the activation, Linear(8, 30) (270 weights: two)."""

    gradients = 0

    def __init__(self, activation):
        super().__init__()
        self.first, self.activation, self.last = nn.Linear(4, 8), activation, nn.Linear(8, 30)

    def forward(self, x):
        hidden = self.first(x)
        if hidden.requires_grad:
            hidden.register_hook(self._count)
        return self.last(self.activation(hidden))

    @classmethod
    def _count(cls, grad):
        cls.gradients += 1


def test_single_bin_layers_are_constant_and_not_computed():
    from optuna_aquasurf import ActivationFunction

    x, y = torch.randn(16, 4), torch.arange(16) % 30
    expressions = ["tanh(x)", "relu(x)", "mul(x,sigmoid(x))"]
    matrix = FisherProbe(_CountsFirstGradient, x, y).features(expressions)
    assert _CountsFirstGradient.gradients == 0
    for expression, row in zip(expressions, matrix):
        torch.manual_seed(0)
        model = _CountsFirstGradient(ActivationFunction(expression)).eval()
        np.testing.assert_array_equal(row, fisher_features(model, x, y))
    assert _CountsFirstGradient.gradients == len(expressions)
    assert matrix[:, 0].tolist() == [1.0] * len(expressions)


def test_same_seed_same_features_and_fingerprint():
    x, y = _batch((1, 8, 8), 16)
    first, second = FisherProbe(SmallCNN, x, y), FisherProbe(SmallCNN, x, y)
    expressions = ["tanh(x)", "mul(x,sigmoid(x))", "relu(x)"]
    np.testing.assert_array_equal(first.features(expressions), second.features(expressions))
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0
    other_seed = FisherProbe(SmallCNN, x, y, seed=1)
    assert other_seed.fingerprint != first.fingerprint
    assert not np.array_equal(other_seed.features(expressions), first.features(expressions))
    assert FisherProbe(SmallCNN, x, y, fisher="model").fingerprint != first.fingerprint
    assert FisherProbe(SmallCNN, x, y, bins=7).fingerprint != first.fingerprint
    assert FisherProbe(SmallCNN, x + 1, y).fingerprint != first.fingerprint


def test_diverged_candidates_are_marked_and_filled():
    x, y = _batch((1, 8, 8), 16)
    probe = FisherProbe(SmallCNN, 10 * x, y)
    matrix, diverged = probe.features(["tanh(x)", "exp(exp(exp(x)))"], return_diverged=True)
    assert diverged.tolist() == [False, True]
    assert np.isfinite(matrix).all()
    fill = np.zeros(probe.feature_length, dtype=np.float32)
    fill[_cdf_ends(probe)] = 1.0
    np.testing.assert_array_equal(matrix[1], fill)
    from optuna_aquasurf import ActivationFunction

    torch.manual_seed(0)
    with pytest.raises(DivergedError, match="not finite"):
        fisher_features(SmallCNN(ActivationFunction("exp(exp(exp(x)))")).eval(), 10 * x, y)


def test_model_fisher_bins_and_inputs_of_features():
    x, y = _batch((1, 8, 8), 16)
    space = SearchSpace.from_expressions(["tanh(x)", "relu(x)", "max(x,tanh(x))"])
    empirical = FisherProbe(SmallCNN, x, y, progress=False)
    model = FisherProbe(SmallCNN, x, y, fisher="model", progress=False)
    by_space = empirical.features(space)
    np.testing.assert_array_equal(by_space, empirical.features(space.expressions))
    np.testing.assert_array_equal(by_space[:1], empirical.features("tanh(x)"))
    sampled = model.features(space)
    assert sampled.shape == by_space.shape and np.isfinite(sampled).all()
    assert not np.array_equal(sampled, by_space)
    assert FisherProbe(SmallCNN, x, y, bins=5).feature_length == 3 * 5
    halves = FisherProbe(SmallCNN, x, y, bins=lambda n: n // 2)
    assert halves.feature_length == sum(n // 2 for _, n, _ in empirical.layers)
    with pytest.raises(ValueError, match="bins"):
        FisherProbe(SmallCNN, x, y, bins=0).feature_length  # noqa: B018
    with pytest.raises(ValueError, match="fisher"):
        FisherProbe(SmallCNN, x, y, fisher="true")


def test_regression_many_candidates_with_progress_and_pickle():
    x = torch.randn(12, 3)
    targets = torch.randn(12, 2)
    probe = FisherProbe(_mlp, x, targets, progress=True)
    expressions = [f"mul(x,{s})" for s in ("sigmoid(x)", "tanh(x)", "erf(x)")] * 7
    matrix = probe.features(expressions)
    assert matrix.shape == (21, probe.feature_length) and np.isfinite(matrix).all()
    clone = pickle.loads(pickle.dumps(probe))
    assert clone.fingerprint == probe.fingerprint
    np.testing.assert_array_equal(clone.features(expressions[:3]), matrix[:3])


def test_shared_layer_and_unseen_out_proj():
    x, y = _batch((5, 8), 6)
    with pytest.warns(RuntimeWarning, match=r"attn\.out_proj"):
        probe = FisherProbe(_attention, x, y)
        assert [name for name, _, _ in probe.layers] == ["shared", "head"]
        assert np.isfinite(probe.features(["tanh(x)"])).all()


def _mlp(activation):
    return nn.Sequential(nn.Linear(3, 16), activation, nn.Linear(16, 2))


class _Attention(nn.Module):
    def __init__(self, activation):
        super().__init__()
        self.shared = nn.Linear(8, 8)
        self.activation = activation
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.activation(self.shared(self.activation(self.shared(x))))
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


_attention = _Attention


@pytest.mark.parametrize("bins", [None, 4], ids=["default_bins", "every_layer_computed"])
@pytest.mark.parametrize("fisher", ["empirical", "model"])
@pytest.mark.parametrize("build", [SmallCNN, _attention], ids=["grouped_cnn", "attention"])
def test_stacked_candidates_match_one_at_a_time(build, fisher, bins):
    x, y = _batch((1, 8, 8), 8) if build is SmallCNN else _batch((5, 8), 6)
    expressions = ["tanh(x)", "exp(exp(exp(x)))", "relu(x)", "mul(x,erf(x))", "softplus(x)"]
    kwargs = {"fisher": fisher, "bins": bins, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the attention's unseen out_proj
        alone = FisherProbe(build, 10 * x, y, stack=1, **kwargs)
        expected, expected_diverged = alone.features(expressions, return_diverged=True)
        assert expected_diverged.tolist() == [False, True, False, False, False]
        for stack in (2, 5, None):
            probe = FisherProbe(build, 10 * x, y, stack=stack, **kwargs)
            matrix, diverged = probe.features(expressions, return_diverged=True)
            np.testing.assert_array_equal(matrix, expected)
            np.testing.assert_array_equal(diverged, expected_diverged)
            assert probe.fingerprint == alone.fingerprint


class _MixesSamples(nn.Module):
    """Centres each feature over the batch: samples are not computed on their own."""

    def __init__(self, activation):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), activation, nn.Linear(16, 4))

    def forward(self, x):
        hidden = self.net[1](self.net[0](x))
        return self.net[2](hidden - hidden.mean(0))


def test_stacking_is_checked_and_falls_back():
    x, y = torch.randn(12, 3), torch.arange(12) % 4
    expressions = ["tanh(x)", "relu(x)", "sigmoid(x)"]
    expected = FisherProbe(_MixesSamples, x, y, bins=4, stack=1).features(expressions)
    automatic = FisherProbe(_MixesSamples, x, y, bins=4)
    np.testing.assert_array_equal(automatic.features(expressions), expected)
    with pytest.raises(ValueError, match="stack=3"):
        FisherProbe(_MixesSamples, x, y, bins=4, stack=3).features(expressions)
    with pytest.raises(ValueError, match="stack"):
        FisherProbe(_MixesSamples, x, y, stack=0)


def test_a_builder_that_returns_no_module_says_what_it_got():
    from optuna_aquasurf.integrations import swap_activations

    x, targets = torch.randn(4, 3), torch.randn(4, 2)

    def swapped(activation):
        return swap_activations(_mlp(nn.ReLU()), activation, example_input=x)

    with pytest.raises(TypeError, match=r"got tuple \(Sequential, SwapReport\)") as error:
        FisherProbe(swapped, x, targets).features("tanh(x)")
    assert "swap_activations returns (model, report)" in str(error.value)
    with pytest.raises(TypeError, match=r"must return an nn\.Module, got str$"):
        FisherProbe(lambda activation: "mlp", x, targets).features("tanh(x)")
