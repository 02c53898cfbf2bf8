"""K-FAC factors against an independent brute force: per-sample loops and explicit patches."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optuna_aquasurf.features import DivergedError, kfac_eigenvalues
from optuna_aquasurf.features._losses import sample_targets

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def float64():
    """The comparisons with brute force run in float64 (restored after each test)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _padded(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The conv input with the padding the layer applies, written out by hand."""
    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same

    (kh, kw), (dh, dw) = module.kernel_size, module.dilation
    if isinstance(module, Conv2dSame):
        return pad_same(x, module.kernel_size, module.stride, module.dilation)
    if module.padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    elif module.padding == "valid":
        pads = (0, 0, 0, 0)
    else:
        ph, pw = module.padding
        pads = (pw, pw, ph, ph)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return F.pad(x, pads, mode=mode)


def _input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(groups, locations, d_A)`` rows of one sample's input, 1 appended for the bias."""
    if isinstance(module, nn.Linear):
        rows = x.reshape(1, -1, x.shape[-1])
    else:
        x = _padded(module, x)[0]
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        ho = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
        patches = []
        for i in range(ho):
            for j in range(wo):
                patch = x[:, i * sh : i * sh + dh * (kh - 1) + 1 : dh]
                patch = patch[:, :, j * sw : j * sw + dw * (kw - 1) + 1 : dw]
                patches.append(patch.reshape(module.groups, -1))
        rows = torch.stack(patches, dim=1)
    if module.bias is not None:
        rows = torch.cat([rows, torch.ones(rows.shape[:2] + (1,))], dim=2)
    return rows


def _output_rows(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """``(groups, locations, d_G)`` rows of one sample's output gradient."""
    if isinstance(module, nn.Linear):
        return g.reshape(1, -1, g.shape[-1])
    groups = module.groups
    return g[0].reshape(groups, g.shape[1] // groups, -1).transpose(1, 2)


def brute_force(model, inputs, targets, loss_fn):
    """Eigenvalues of A and G from per-sample loops, with plain hooks that keep every call."""
    layers = {m: n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    calls = {}

    def keep(module, args, output):
        calls.setdefault(module, []).append((args[0], output))
        return output.clone()  # what follows, in-place activations too, sees a copy

    handles = [m.register_forward_hook(keep) for m in layers]
    n = targets.shape[0]
    a_sum, g_sum, locations = {}, {}, {}
    try:
        for i in range(n):
            calls.clear()
            loss = loss_fn(model(inputs[i : i + 1]), targets[i : i + 1])
            for module, used in calls.items():
                grads = torch.autograd.grad(loss, [o for _, o in used], retain_graph=True)
                for (x, _), g in zip(used, grads):
                    a, r = _input_rows(module, x.detach()), _output_rows(module, g)
                    a_sum[module] = a_sum.get(module, 0) + a.mT @ a
                    g_sum[module] = g_sum.get(module, 0) + r.mT @ r
                    locations[module] = locations.get(module, 0) + r.shape[1]
    finally:
        for h in handles:
            h.remove()
    return {
        layers[m]: (
            torch.linalg.eigvalsh(a_sum[m] / n),
            torch.linalg.eigvalsh(g_sum[m] / locations[m]),
        )
        for m in a_sum
    }


def check(model, inputs, targets, loss_fn=None, **kwargs):
    """kfac_eigenvalues agrees with the brute force to 1e-5 relative to the largest eigenvalue."""
    model.eval()
    if targets.is_floating_point():
        default = F.mse_loss
    else:  # classes last for sequences of labels
        default = lambda o, t: F.cross_entropy(o.movedim(-1, 1) if t.ndim > 1 else o, t)  # noqa: E731
    ours = kfac_eigenvalues(model, inputs, targets, loss_fn, **kwargs)
    reference = brute_force(model, inputs, targets, loss_fn or default)
    assert list(ours) == list(reference)
    for name, (eig_a, eig_g) in ours.items():
        ref_a, ref_g = reference[name]
        for got, want in ((eig_a, ref_a), (eig_g, ref_g)):
            assert got.shape == want.shape, name
            scale = want.abs().max().clamp(min=1e-300)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale.item())
    return ours


def _data(shape, classes, n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator)
    return x, torch.randint(0, classes, (n,), generator=generator)


def test_mlp_both_gram_sides():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    for n in (3, 12):  # 3 rows < d_A = 7 uses the Gram matrix, 12 rows the covariance
        x, y = _data((6,), 3, n=n)
        eigs = check(model, x, y)
        assert eigs["0"][0].shape == (1, 7) and eigs["2"][1].shape == (1, 3)


def test_linear_on_sequences_and_back_to_back_linears():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 5, bias=False), nn.GELU(), nn.Linear(5, 3))
    x = torch.randn(5, 7, 4)
    y = torch.randint(0, 3, (5, 7))
    check(model, x, y)


def test_convolutions():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding="valid"),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, dilation=2, groups=2, padding=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, groups=4, padding="same", bias=False),
        nn.Tanh(),
        nn.Conv2d(4, 6, 4, padding="same"),
        nn.Tanh(),
        nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect"),
        nn.Tanh(),
        nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0), padding_mode="circular"),
        nn.Flatten(),
        nn.Linear(4 * 3 * 5, 5),
    )
    x, y = _data((3, 11, 13), 5, n=6)
    eigs = check(model, x, y)
    assert eigs["2"][0].shape == (2, 2 * 9 + 1)
    assert eigs["4"][0].shape == (4, 9) and eigs["4"][1].shape == (4, 1)


def test_timm_convolutions_that_pad_or_standardise_in_forward():
    from timm.layers import Conv2dSame, StdConv2d

    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(3, 4, 3, stride=2), nn.Tanh(), StdConv2d(4, 4, 3, padding=1), nn.Flatten()
    )
    model = nn.Sequential(model, nn.Linear(4 * 5 * 5, 3))
    x, y = _data((3, 9, 10), 3, n=4)
    check(model, x, y)


def test_regression_and_sequence_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(6, 4)
    check(model, x, torch.randn(6, 2))


def test_layer_called_twice_counts_every_call_as_locations():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(4, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))

    torch.manual_seed(0)
    x, y = _data((4,), 3, n=5)
    check(Twice(), x, y)


def test_layer_the_loss_ignores_has_zero_gradient_factor():
    class Ignored(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 3)
            self.ignored = nn.Linear(4, 2)

        def forward(self, x):
            self.ignored(x)
            with torch.no_grad():
                self.ignored(x)
            return self.used(x)

    x, y = _data((4,), 3)
    eigs = kfac_eigenvalues(Ignored(), x, y)
    assert eigs["ignored"][1].shape == (1, 2) and not eigs["ignored"][1].any()
    assert eigs["ignored"][0].shape == (1, 5) and eigs["ignored"][0].max() > 0


def test_custom_loss_and_model_fisher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4)).eval()
    x, y = _data((5,), 4, n=10)

    def loss_fn(outputs, targets):
        return F.nll_loss(F.log_softmax(outputs, dim=1), targets)

    check(model, x, y, loss_fn)
    sampled = sample_targets(model(x), y, seed=3)
    model_fisher = kfac_eigenvalues(model, x, y, fisher="model", seed=3)
    empirical = kfac_eigenvalues(model, x, sampled)
    for name in model_fisher:
        torch.testing.assert_close(model_fisher[name][1], empirical[name][1])
    other = kfac_eigenvalues(model, x, y, fisher="model", seed=4)
    assert not torch.allclose(model_fisher["2"][1], other["2"][1])
    regression = kfac_eigenvalues(model, x, torch.randn(10, 4), fisher="model", seed=3)
    assert all(torch.isfinite(g).all() for _, g in regression.values())


def test_multihead_attention_out_proj_is_reported():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    x, y = torch.randn(4, 5, 8), torch.randint(0, 3, (4,))
    with pytest.warns(RuntimeWarning, match=r"attn\.out_proj"):
        eigs = kfac_eigenvalues(Attention().eval(), x, y)
    assert list(eigs) == ["head"]


def test_frozen_weights_are_probed_and_left_frozen():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = _data((4,), 3)
    model.requires_grad_(False)
    frozen = kfac_eigenvalues(model, x, y)
    assert not any(p.requires_grad for p in model.parameters())
    model.requires_grad_(True)
    for name, (eig_a, eig_g) in check(model, x, y).items():
        torch.testing.assert_close(frozen[name][0], eig_a)
        torch.testing.assert_close(frozen[name][1], eig_g)


def test_non_finite_loss_and_bad_arguments():
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = _data((4,), 3)
    with pytest.raises(DivergedError, match="outputs"):
        kfac_eigenvalues(model, x * float("inf"), y)
    with pytest.raises(DivergedError, match="loss"):
        kfac_eigenvalues(model, x, y, loss_fn=lambda o, t: o.sum() * float("nan"))
    with pytest.raises(ValueError, match="fisher"):
        kfac_eigenvalues(model, x, y, fisher="true")
    with pytest.raises(ValueError, match="scalar"):
        kfac_eigenvalues(model, x, y, loss_fn=lambda o, t: F.cross_entropy(o, t, reduction="none"))
    with pytest.raises(ValueError, match="class scores"):
        kfac_eigenvalues(model, x, y[:, None])


class _FailingLinear(nn.Linear):
    def forward(self, x):
        super().forward(x)
        raise RuntimeError("the layer failed")


def test_a_layer_that_raises_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), _FailingLinear(5, 3))
    model[0].weight.requires_grad_(False)
    x, y = _data((4,), 3)
    with pytest.raises(RuntimeError, match="the layer failed"):
        kfac_eigenvalues(model, x, y)
    assert torch._C._len_torch_function_stack() == 0  # the capture's function mode is off
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]


def test_nothing_of_a_computation_stays_in_memory():
    """The factors' capture must not outlive the call (a cycle through autograd hooks would keep
    each candidate's whole graph alive: gigabytes over a search space)."""
    import gc

    from optuna_aquasurf.features._capture import FactorCapture

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    inputs, targets = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for _ in range(3):
        kfac_eigenvalues(model, inputs, targets)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is FactorCapture]
