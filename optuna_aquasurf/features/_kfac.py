"""Kronecker factors of the Fisher information (K-FAC) of a model's Linear and Conv2d layers.

Conventions (Grosse & Martens 2016), for a batch of ``N`` samples and ``T`` locations per sample
(conv: output positions; Linear on sequences: positions; plain Linear: ``T = 1``)::

    A = (1/N) sum_i sum_t a_it a_it^T          a: layer input (conv: patch), 1 appended for a bias
    G = (1/(N*T)) sum_i sum_t g_it g_it^T      g: gradient of sample i's own loss w.r.t. the output

``g`` is ``N`` times the gradient of the batch-mean loss. A grouped convolution has one pair of
factors per group. A layer called several times in one forward pass (weight sharing) counts every
call as further locations, exactly as a convolution counts its positions.

How the factors are captured: forward pre- and post-hooks keep a stack of the layers running, and a
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: The functional call each probed layer type makes in its forward.
_CALLS = {nn.Linear: F.linear, nn.Conv2d: F.conv2d}

FISHER_TYPES = ("empirical", "model")


class DivergedError(ValueError):
    """The loss or a Kronecker factor of a candidate model is not finite."""


def kfac_eigenvalues(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fisher: str = "empirical",
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Eigenvalues of the two Kronecker factors of every Linear and Conv2d layer.

    The model runs in its current mode (call ``model.eval()`` first for the usual probe), in the
    dtype and on the device of its parameters; ``inputs`` and ``targets`` must already be there.

    Parameters
    ----------
    model
        Any module; its ``nn.Linear`` and ``nn.Conv2d`` layers (subclasses included) are probed.
    inputs
        The batch, or a tuple of tensors passed to ``model`` positionally.
    targets
        The labels; the first dimension is the batch (``N``). Integer targets mean classification,
        float targets regression.
    loss_fn
        ``loss_fn(outputs, targets)`` returning the **mean** loss over the batch (the factors scale
        its gradient by ``N``). Default: cross-entropy for integer targets (class dimension 1, or
        last when ``outputs.shape[:-1] == targets.shape``), mean squared error for float targets.
    fisher
        ``"empirical"`` uses ``targets``; ``"model"`` samples them from the model's predictive
        distribution (categorical from the softmax for integer targets, unit-variance Gaussian
        around the outputs for float targets) with a generator seeded by ``seed``.
    seed
        Seed of the sampled targets of ``fisher="model"``.

    Returns
    -------
    dict
        ``{layer_name: (eig_A, eig_G)}`` in module order, ascending eigenvalues of shape
        ``(groups, d_A)`` and ``(groups, d_G)``: ``groups`` is 1 except for grouped convolutions,
        ``d_A = in_features + bias`` (conv: ``in_channels / groups * kh * kw + bias``),
        ``d_G = out_features`` (conv: ``out_channels / groups``).

    Raises
    ------
    DivergedError
        When the model outputs, the loss or a factor is not finite.
    """
    return {
        s.name: (s.full_a(), s.full_g())
        for s in kfac_spectra(model, inputs, targets, loss_fn, fisher, seed)
    }


@dataclass
class LayerSpectrum:
    """The factors' eigenvalues of one layer, with their known zeros kept apart.

    ``eig_a`` (``groups x m_A``) with ``zeros_a`` further zero eigenvalues per group are the
    eigenvalues of ``A`` (``m_A + zeros_a = d_A``); the same for ``G``. The zeros come from the
    smaller-Gram-side shortcut (a factor of rank at most ``rows < d``).
    """

    name: str
    num_weights: int
    eig_a: torch.Tensor
    zeros_a: int
    eig_g: torch.Tensor
    zeros_g: int

    def full_a(self) -> torch.Tensor:
        return _with_zeros(self.eig_a, self.zeros_a)

    def full_g(self) -> torch.Tensor:
        return _with_zeros(self.eig_g, self.zeros_g)


def _with_zeros(eigs: torch.Tensor, zeros: int) -> torch.Tensor:
    padded = torch.cat([eigs.new_zeros(eigs.shape[0], zeros), eigs], dim=1)
    return padded.sort(dim=1).values


def kfac_spectra(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fisher: str = "empirical",
    seed: int = 0,
) -> list[LayerSpectrum]:
    """The spectra of :func:`kfac_eigenvalues`, one per captured layer, in module order."""
    return decompose(kfac_factors(model, inputs, targets, loss_fn, fisher, seed))


@dataclass
class LayerFactors:
    """The Kronecker factors of one layer, reduced to the smaller Gram side where it is smaller.

    ``a`` (``groups x m x m``) has the eigenvalues of ``A`` except for ``zeros_a`` further zeros;
    the same for ``g``.
    """

    name: str
    num_weights: int
    groups: int
    a: torch.Tensor
    zeros_a: int
    g: torch.Tensor
    zeros_g: int

    def candidate(self, k: int, stack: int) -> LayerFactors:
        """The factors of copy ``k`` of ``stack`` stacked candidates (their blocks ``k``)."""
        if stack == 1:
            return self
        rows = slice(k * self.groups, (k + 1) * self.groups)
        return replace(self, a=self.a[rows], g=self.g[rows])


def kfac_factors(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fisher: str = "empirical",
    seed: int = 0,
    layers: Collection[str] | None = None,
) -> list[LayerFactors]:
    """The factors of :func:`kfac_eigenvalues`, before :func:`decompose`."""
    (factors,) = stacked_kfac_factors(model, inputs, targets, 1, loss_fn, fisher, seed, layers)
    if isinstance(factors, DivergedError):
        raise factors
    return factors


def stacked_kfac_factors(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    stack: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fisher: str = "empirical",
    seed: int = 0,
    layers: Collection[str] | None = None,
) -> list[list[LayerFactors] | DivergedError]:
    """The factors of ``stack`` models in one forward and backward pass.

    ``model`` runs on ``stack`` copies of the batch, stacked along the first dimension; copy ``k``
    is candidate ``k`` (a model that computes each sample on its own, with an activation that
    treats each copy as its candidate). Every copy gets its own outputs, targets and batch-mean
    loss, and the gradient of their sum gives each copy's own per-sample gradients.

    ``layers``, when given, names the layers to capture (others are left out, and the backward
    pass stops where none of the named layers needs it).

    Returns
    -------
    list
        Per copy, its factors as :func:`kfac_factors` gives them for that candidate alone, or the
        :class:`DivergedError` that it would raise.
    """
    if fisher not in FISHER_TYPES:
        raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")
    n = targets.shape[0]
    if stack > 1:
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        inputs = tuple(torch.cat([t] * stack) for t in inputs)
    results: list[list[LayerFactors] | DivergedError | None] = [None] * stack
    with _Capture(model, stack, layers) as capture:
        outputs = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(f"the model must return a tensor, got {type(outputs).__name__}")
        if outputs.shape[0] % stack:
            raise ValueError(
                f"outputs of shape {tuple(outputs.shape)} do not split into {stack} candidates"
            )
        total = None
        for k, part in enumerate(outputs.chunk(stack) if stack > 1 else (outputs,)):
            try:
                loss = _loss(part, targets, loss_fn, fisher, seed)
            except DivergedError as err:
                results[k] = err
                continue
            total = loss if total is None else total + loss
        wrt = capture.gradient_inputs()
        if total is not None and total.requires_grad and wrt:
            torch.autograd.grad(total, wrt, allow_unused=True)
    capture.warn_missing()
    layers = [_reduce(layer, n) for layer in capture.captured_layers()]
    return [
        [layer.candidate(k, stack) for layer in layers] if result is None else result
        for k, result in enumerate(results)
    ]


def _loss(outputs, targets, loss_fn, fisher, seed) -> torch.Tensor:
    """The batch-mean loss of one candidate's outputs."""
    if not torch.isfinite(outputs).all():
        raise DivergedError("the model outputs are not finite")
    if fisher == "model":
        targets = sample_targets(outputs, targets, seed)
    loss = (loss_fn or default_loss)(outputs, targets)
    if loss.ndim != 0:
        raise ValueError(f"loss_fn must return the batch-mean loss (a scalar), got {loss.shape}")
    if not torch.isfinite(loss):
        raise DivergedError(f"the loss is not finite ({loss.item()})")
    return loss


def probed_layers(
    model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]
) -> list[tuple[str, int]]:
    """``(name, num_weights)`` of the layers K-FAC sees, from one forward pass without backward."""
    with _Capture(model) as capture:
        model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    capture.warn_missing()
    return [(layer.name, layer.num_weights) for layer in capture.captured_layers()]


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer targets, mean squared error for float targets (batch means)."""
    if targets.is_floating_point():
        if outputs.shape != targets.shape:
            raise ValueError(
                f"float targets mean regression (MSE) and need the outputs' shape "
                f"{tuple(outputs.shape)}, got {tuple(targets.shape)}; pass loss_fn otherwise"
            )
        return F.mse_loss(outputs, targets)
    return F.cross_entropy(outputs.movedim(_class_dim(outputs, targets), 1), targets)


def sample_targets(outputs: torch.Tensor, targets: torch.Tensor, seed: int) -> torch.Tensor:
    """Targets drawn from the model's predictive distribution, on the CPU for reproducibility."""
    generator = torch.Generator().manual_seed(seed)
    out = outputs.detach().cpu()
    if targets.is_floating_point():
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return (out + noise).to(device=targets.device, dtype=targets.dtype)
    logits = out.movedim(_class_dim(outputs, targets), -1)
    probs = torch.softmax(logits.double(), dim=-1).reshape(-1, logits.shape[-1])
    drawn = torch.multinomial(probs, 1, generator=generator)
    return drawn.reshape(targets.shape).to(device=targets.device, dtype=targets.dtype)


def _class_dim(outputs: torch.Tensor, targets: torch.Tensor) -> int:
    if outputs.ndim == targets.ndim + 1:
        if outputs.shape[:1] + outputs.shape[2:] == targets.shape:
            return 1
        if outputs.shape[:-1] == targets.shape:
            return -1
    raise ValueError(
        f"integer targets of shape {tuple(targets.shape)} do not fit class scores of shape "
        f"{tuple(outputs.shape)} (classes in dimension 1 or last); pass loss_fn"
    )


@dataclass
class _Factor:
    """Accumulates ``sum x^T x`` over rows ``x`` of ``groups`` independent blocks.

    With ``bias``, every row gets a homogeneous 1 appended, implicitly: the extra row and column
    of the sum are the column sums and the row count. Adds with at least ``dim`` rows go straight
    into the sum; shorter ones are kept, so a factor with fewer rows than columns in total is
    decomposed through its (smaller) Gram matrix. ``empty`` is the ``groups x 0 x 0`` matrix of a
    factor that receives no rows (a layer whose output the loss does not depend on).
    """

    dim: int
    empty: torch.Tensor
    bias: bool = False
    rows: int = 0
    cov: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    pending: list[torch.Tensor] = field(default_factory=list)

    def add(self, x: torch.Tensor) -> None:
        self.rows += x.shape[1]
        if x.shape[1] >= self.dim:
            self._accumulate(x)
        else:
            self.pending.append(x)

    def _accumulate(self, x: torch.Tensor) -> None:
        cov, sums = x.mT @ x, x.sum(dim=1)
        self.cov = cov if self.cov is None else self.cov + cov
        self.sums = sums if self.sums is None else self.sums + sums

    def reduced(self, scale: float) -> tuple[torch.Tensor, int]:
        """A matrix whose eigenvalues, with ``zeros`` more zeros, are those of ``scale * sum``."""
        if self.cov is None and self.rows < self.dim:
            if not self.pending:
                return self.empty, self.dim
            x = torch.cat(self.pending, dim=1)
            gram = x @ x.mT + 1 if self.bias else x @ x.mT
            return scale * gram, self.dim - self.rows
        for x in self.pending:
            self._accumulate(x)
        self.pending = []
        if not self.bias:
            return scale * self.cov, 0
        groups, width = self.sums.shape
        full = self.cov.new_empty(groups, width + 1, width + 1)
        full[:, :width, :width] = self.cov
        full[:, :width, width] = self.sums
        full[:, width, :width] = self.sums
        full[:, width, width] = self.rows
        return scale * full, 0


@dataclass
class _Layer:
    name: str
    module: nn.Module
    call: Callable
    groups: int = 1
    num_weights: int = 0
    a: _Factor | None = None
    g: _Factor | None = None


class _Capture(TorchFunctionMode):
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
                layer.a = _Factor(rows.shape[2] + (bias is not None), empty, bias is not None)
                layer.g = _Factor(weight.shape[0] // groups, empty)
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


def _reduce(layer: _Layer, n: int) -> LayerFactors:
    a, zeros_a = layer.a.reduced(1.0 / n)
    g, zeros_g = layer.g.reduced(n * n / layer.a.rows)
    return LayerFactors(layer.name, layer.num_weights, layer.groups, a, zeros_a, g, zeros_g)


def decompose(factors: list[LayerFactors]) -> list[LayerSpectrum]:
    """Eigenvalues of every factor, batching ``eigvalsh`` over matrices of the same size.

    Raises
    ------
    DivergedError
        When a factor is not finite, or its eigendecomposition fails even in float64.
    """
    _check_finite(factors)
    eigs = {}
    for batch in _by_size(_matrices(0, factors)):
        stacked = torch.cat([m for _, m in batch])
        try:
            (values,) = _eigvalsh([stacked])
        except torch.linalg.LinAlgError:
            try:
                values = _careful_eigvalsh(stacked)
            except torch.linalg.LinAlgError as err:
                names = sorted({factors[i].name for (_, i, _), _ in batch})
                raise DivergedError(f"eigendecomposition failed for layers {names}: {err}") from err
        _split(batch, values, eigs)
    return _spectra(0, factors, eigs)


def decompose_stacked(
    candidates: list[list[LayerFactors] | DivergedError],
) -> list[list[LayerSpectrum] | DivergedError]:
    """:func:`decompose` of many candidates' factors, one ``eigvalsh`` call per size for all.

    A diverged candidate (given as its error, or with a factor that is not finite) gives its
    :class:`DivergedError`. When an eigendecomposition fails, every candidate is decomposed on
    its own, exactly as :func:`decompose` does.
    """
    results: list[list[LayerFactors] | DivergedError] = list(candidates)
    matrices = [
        entry
        for c, factors in enumerate(candidates)
        if not isinstance(factors, DivergedError)
        for entry in _matrices(c, factors)
    ]
    bad: dict[int, tuple[int, str]] = {}  # per candidate, its first factor that is not finite
    for batch in _by_size(matrices):
        finite = torch.isfinite(torch.cat([m for _, m in batch])).all(dim=(1, 2))
        flags, start = finite.tolist(), 0
        for (c, i, which), matrix in batch:
            start += matrix.shape[0]
            if not all(flags[start - matrix.shape[0] : start]):
                bad[c] = min(bad.get(c, (i, which)), (i, which))
    for c, (i, which) in bad.items():
        results[c] = _not_finite(which, candidates[c][i].name)
    eigs = {}
    try:
        good = [(key, m) for key, m in matrices if not isinstance(results[key[0]], DivergedError)]
        batches = _by_size(good)
        values = _eigvalsh([torch.cat([m for _, m in batch]) for batch in batches])
        for batch, batch_values in zip(batches, values):
            _split(batch, batch_values, eigs)
    except torch.linalg.LinAlgError:
        return [_decompose_or_error(r) for r in results]
    return [
        r if isinstance(r, DivergedError) else _spectra(c, r, eigs) for c, r in enumerate(results)
    ]


def _decompose_or_error(factors: list[LayerFactors] | DivergedError):
    if isinstance(factors, DivergedError):
        return factors
    try:
        return decompose(factors)
    except DivergedError as err:
        return err


def _check_finite(factors: list[LayerFactors]) -> None:
    for layer in factors:
        for which, matrix in (("A", layer.a), ("G", layer.g)):
            if not torch.isfinite(matrix).all():
                raise _not_finite(which, layer.name)


def _not_finite(which: str, name: str) -> DivergedError:
    return DivergedError(f"the Kronecker factor {which} of layer {name!r} is not finite")


def _matrices(c: int, factors: list[LayerFactors]) -> list[tuple[tuple, torch.Tensor]]:
    """``((candidate, layer, "A" or "G"), matrix)`` of every factor of candidate ``c``."""
    return [
        ((c, i, which), matrix)
        for i, layer in enumerate(factors)
        for which, matrix in (("A", layer.a), ("G", layer.g))
    ]


def _by_size(matrices: list[tuple[tuple, torch.Tensor]]) -> list[list[tuple[tuple, torch.Tensor]]]:
    """The matrices grouped by size (dtype and device too), the empty ones left out."""
    by_size: dict[tuple, list] = {}
    for key, matrix in matrices:
        by_size.setdefault((matrix.shape[-1], matrix.dtype, matrix.device), []).append(
            (key, matrix)
        )
    return [batch for (size, _, _), batch in by_size.items() if size]


def _split(batch, values: torch.Tensor, eigs: dict) -> None:
    for (key, _), part in zip(batch, values.split([m.shape[0] for _, m in batch])):
        eigs[key] = part


def _spectra(c: int, factors: list[LayerFactors], eigs: dict) -> list[LayerSpectrum]:
    def values(i, which, matrix):
        key = (c, i, which)
        return eigs[key] if key in eigs else matrix.new_zeros(matrix.shape[0], 0)

    return [
        LayerSpectrum(
            f.name,
            f.num_weights,
            values(i, "A", f.a),
            f.zeros_a,
            values(i, "G", f.g),
            f.zeros_g,
        )
        for i, f in enumerate(factors)
    ]


def _eigvalsh(batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """``torch.linalg.eigvalsh`` of several batches; on the CPU, spread over the intra-op threads.

    LAPACK decomposes the matrices of a batch one after the other, and its own threads do little
    for matrices this small; a share of the batch per thread is about that many times faster.
    Meanwhile torch's intra-op threads are set to one, process-wide.
    """
    threads = torch.get_num_threads()
    if threads == 1 or any(b.device.type != "cpu" for b in batches):
        return [torch.linalg.eigvalsh(b) for b in batches]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            shares = [
                [pool.submit(torch.linalg.eigvalsh, share) for share in batch.chunk(threads)]
                for batch in batches
            ]
            return [torch.cat([future.result() for future in batch]) for batch in shares]
    finally:
        torch.set_num_threads(threads)


def _careful_eigvalsh(stacked: torch.Tensor) -> torch.Tensor:
    """Retry of a failed float32 ``eigvalsh`` (LAPACK may not converge): scaled, in float64."""
    scale = stacked.abs().amax(dim=(1, 2)).clamp(min=torch.finfo(stacked.dtype).tiny)
    values = torch.linalg.eigvalsh((stacked / scale[:, None, None]).double())
    return (values * scale[:, None].double()).to(stacked.dtype)
