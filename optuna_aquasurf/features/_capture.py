"""Capture of the Kronecker factors of every Linear and Conv2d layer during one pass.

Forward pre- and post-hooks keep a stack of the layers running, and a
:class:`~torch.overrides.TorchFunctionMode` sees the ``linear``/``conv2d`` call each layer makes.
That call's input is the layer input exactly as used (after any padding done in ``forward``, such as
``padding_mode="reflect"`` or timm's ``Conv2dSame``; with the weight actually used, such as timm's
standardised ``StdConv2d`` weight), and a tensor hook registered on its result receives the exact
gradient of the pre-activation, even when an in-place activation follows. Layers whose weights are
used outside their own ``forward`` (``nn.MultiheadAttention.out_proj``) cannot be seen this way;
they are left out with a warning that names them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from optuna_aquasurf.features._factors import FactorSum, LayerFactors

#: The functional call each probed layer type makes in its forward.
_CALLS = {nn.Linear: F.linear, nn.Conv2d: F.conv2d}


@dataclass
class _Layer:
    """A probed layer, its functional call and, once that call has run, the sums of its factors."""

    name: str
    module: nn.Module
    call: Callable
    groups: int = 1
    num_weights: int = 0
    a: FactorSum | None = None
    g: FactorSum | None = None

    def factors(self, n: int) -> LayerFactors:
        """The factors of a batch of ``n`` samples (``T`` locations each, ``a.rows = n * T``).

        ``A = sum a a^T / n`` and ``G = sum g g^T / (n * T)``, where ``g`` is ``n`` times the
        captured gradient (that of the batch-mean loss).
        """
        a, zeros_a = self.a.reduced(1.0 / n)
        g, zeros_g = self.g.reduced(n * n / self.a.rows)
        return LayerFactors(self.name, self.num_weights, self.groups, a, zeros_a, g, zeros_g)


class FactorCapture(TorchFunctionMode):
    """Records the factors of every Linear/Conv2d layer (or of those ``names`` names) during one
    forward and backward pass.

    With ``stack`` candidates stacked along the batch dimension, each factor has ``stack`` times
    the blocks of one candidate, candidate-major.
    """

    def __init__(self, model: nn.Module, stack: int = 1, names: Collection[str] | None = None):
        super().__init__()
        self.model = model
        self.stack_size = stack
        self.layers: dict[nn.Module, _Layer] = {}
        for name, module in model.named_modules():
            for cls, call in _CALLS.items():
                if isinstance(module, cls) and (names is None or name in names):
                    self.layers[module] = _Layer(name, module, call)
        self.stack: list[_Layer] = []
        self.gradient_wrt: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.requires_grad: dict[torch.nn.Parameter, bool] = {}
        self.grad_mode = torch.enable_grad()

    def __enter__(self):
        probed = set()
        for module, layer in self.layers.items():
            self.handles.append(module.register_forward_pre_hook(self._pre_hook(layer)))
            self.handles.append(module.register_forward_hook(self._post_hook(layer)))
            probed.update(module.parameters(recurse=False))
        # Only the probed layers' weights need a gradient, so that their outputs have one; what
        # comes before the first probed layer is computed without autograd.
        for p in self.model.parameters():
            self.requires_grad[p] = p.requires_grad
            p.requires_grad_(p in probed)
        self.grad_mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self.stack:  # a layer's forward raised: its function mode is still on
            self.stack.clear()
            TorchFunctionMode.__exit__(self, *exc)
        self.grad_mode.__exit__(*exc)
        for handle in self.handles:
            handle.remove()
        for p, flag in self.requires_grad.items():
            p.requires_grad_(flag)
        # The layer outputs hold gradient hooks that hold this object: a cycle through autograd
        # that Python's garbage collector cannot see, which would keep every graph alive.
        self.gradient_wrt.clear()

    # The function mode is on only while a probed layer runs, not for everything in between.
    def _pre_hook(self, layer: _Layer):
        def hook(module, args):
            if not self.stack:
                TorchFunctionMode.__enter__(self)
            self.stack.append(layer)

        return hook

    def _post_hook(self, layer: _Layer):
        def hook(module, args, output):
            self.stack.pop()
            if not self.stack:
                TorchFunctionMode.__exit__(self, None, None, None)

        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.stack and func is self.stack[-1].call:
            self._record(self.stack[-1], out, *_bind(func, args, kwargs))
        return out

    def _record(self, layer: _Layer, out: torch.Tensor, x, weight, bias, *conv) -> None:
        with torch.no_grad():
            x = _at_least_float32(x.detach())
            stack = self.stack_size
            if layer.call is F.linear:
                groups, rows = 1, x.reshape(stack, -1, x.shape[-1])
            else:
                groups, rows = conv[-1], _patches(x, weight.shape, *conv)
                if stack > 1:
                    rows = rows.reshape(groups, stack, -1, rows.shape[-1]).transpose(0, 1)
                    rows = rows.reshape(stack * groups, -1, rows.shape[-1])
            if layer.a is None:
                layer.groups = groups
                layer.num_weights = weight.numel() + (0 if bias is None else bias.numel())
                empty = rows.new_zeros(stack * groups, 0, 0)
                layer.a = FactorSum(rows.shape[2] + (bias is not None), empty, bias is not None)
                layer.g = FactorSum(weight.shape[0] // groups, empty)
            layer.a.add(rows)
        if out.requires_grad:  # else computed under no_grad: no gradient reaches it
            out.register_hook(self._gradient_hook(layer))
            # should an in-place operation change ``out`` before the backward pass, a gradient
            # with respect to the layer's input (or its weight) still passes through the hook
            fallback = x if x.requires_grad else weight
            self.gradient_wrt.append((out, out._version, fallback))

    def _gradient_hook(self, layer: _Layer):
        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                grad, stack = _at_least_float32(grad), self.stack_size
                if layer.call is F.linear:
                    rows = grad.reshape(stack, -1, grad.shape[-1])
                elif stack == 1:
                    width = grad.shape[1] // layer.groups
                    rows = grad.permute(0, 2, 3, 1).reshape(-1, layer.groups, width)
                    rows = rows.transpose(0, 1)
                else:
                    width = grad.shape[1] // layer.groups
                    rows = grad.permute(0, 2, 3, 1).reshape(stack, -1, layer.groups, width)
                    rows = rows.transpose(1, 2).reshape(stack * layer.groups, -1, width)
                layer.g.add(rows)

        return hook

    def gradient_inputs(self) -> list[torch.Tensor]:
        """Tensors to differentiate the loss with respect to so that every hook fires.

        These are the layer outputs, so that the backward pass goes no further than the hooks
        need. A layer output changed in place since (an in-place activation) is no longer the
        tensor the hook is on; its layer's input (or weight) takes its place.
        """
        tensors = {}
        for out, version, fallback in self.gradient_wrt:
            tensor = out if out._version == version else fallback
            tensors[id(tensor)] = tensor
        return [t for t in tensors.values() if t.requires_grad]

    def captured_layers(self) -> list[_Layer]:
        return [layer for layer in self.layers.values() if layer.a is not None]

    def factors(self, n: int) -> list[LayerFactors]:
        """The factors of every captured layer, in module order, for a batch of ``n`` samples."""
        return [layer.factors(n) for layer in self.captured_layers()]

    def warn_missing(self) -> None:
        missing = [layer for layer in self.layers.values() if layer.a is None]
        if missing:
            names = ", ".join(
                f"{layer.name} ({type(layer.module).__name__}, no {layer.call.__name__} call in "
                "its forward)"
                for layer in missing
            )
            warnings.warn(
                f"K-FAC left out layers it could not see: {names}. Their weights are used "
                "outside their forward() (as nn.MultiheadAttention.out_proj), not at all, or "
                "through another operation.",
                RuntimeWarning,
                stacklevel=4,
            )


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Half precision tensors in float32: the factors are sums of many products."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _bind(call: Callable, args: tuple, kwargs: dict) -> tuple:
    """``(input, weight, bias, [stride, padding, dilation, groups])`` of a linear/conv2d call."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    count = 3 if call is F.linear else 7
    values = list(args) + [
        kwargs.get(k, d) for k, d in zip(names[len(args) :], defaults[len(args) :])
    ]
    return tuple(values[:count])


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _patches(x, weight_shape, stride, padding, dilation, groups) -> torch.Tensor:
    """Conv2d input patches, ``(groups, N * positions, kh * kw * in_channels / groups)``.

    The patches of ``torch.nn.functional.unfold`` with their columns permuted (kernel position
    first, then channel; a permutation leaves the factor's eigenvalues unchanged), copied from a
    strided view of the channels-last input: several times faster than ``unfold``.
    """
    (kh, kw), (sh, sw), (dh, dw) = weight_shape[2:], _pair(stride), _pair(dilation)
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        x = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    elif padding != "valid" and any(_pair(padding)):
        ph, pw = _pair(padding)
        x = F.pad(x, (pw, pw, ph, ph))
    n, channels, height, width = x.shape
    ho, wo = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
    x = x.permute(0, 2, 3, 1).contiguous()
    step_n, step_h, step_w, step_c = x.stride()
    patches = x.as_strided(
        (n, ho, wo, kh, kw, channels),
        (step_n, sh * step_h, sw * step_w, dh * step_h, dw * step_w, step_c),
        x.storage_offset(),
    )
    if groups == 1:
        return patches.reshape(1, n * ho * wo, kh * kw * channels)
    patches = patches.reshape(n * ho * wo, kh * kw, groups, channels // groups)
    return patches.permute(2, 0, 1, 3).reshape(groups, n * ho * wo, -1)
