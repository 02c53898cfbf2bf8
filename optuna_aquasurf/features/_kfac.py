"""Kronecker factors of the Fisher information (K-FAC) of a model's Linear and Conv2d layers.

Conventions (Grosse & Martens 2016), for a batch of ``N`` samples and ``T`` locations per sample
(conv: output positions; Linear on sequences: positions; plain Linear: ``T = 1``)::

    A = (1/N) sum_i sum_t a_it a_it^T          a: layer input (conv: patch), 1 appended for a bias
    G = (1/(N*T)) sum_i sum_t g_it g_it^T      g: gradient of sample i's own loss w.r.t. the output

``g`` is ``N`` times the gradient of the batch-mean loss. A grouped convolution has one pair of
factors per group. A layer called several times in one forward pass (weight sharing) counts every
call as further locations, exactly as a convolution counts its positions.

One forward and backward pass captures the factors
(:mod:`optuna_aquasurf.features._capture`); their eigenvalues come from
:mod:`optuna_aquasurf.features._decompose`.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from optuna_aquasurf.features._capture import FactorCapture
from optuna_aquasurf.features._decompose import LayerSpectrum, decompose
from optuna_aquasurf.features._diverged import DivergedError
from optuna_aquasurf.features._factors import LayerFactors
from optuna_aquasurf.features._settings import LossFunction, ProbeSettings


def kfac_eigenvalues(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    loss_fn: LossFunction | None = None,
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
    settings = ProbeSettings(inputs, targets, loss_fn, fisher, seed)
    return {s.name: (s.full_a(), s.full_g()) for s in kfac_spectra(model, settings)}


def kfac_spectra(model: nn.Module, settings: ProbeSettings) -> list[LayerSpectrum]:
    """The spectra of :func:`kfac_eigenvalues`, one per captured layer, in module order."""
    return decompose(kfac_factors(model, settings))


def kfac_factors(
    model: nn.Module, settings: ProbeSettings, layers: Collection[str] | None = None
) -> list[LayerFactors]:
    """The factors of :func:`kfac_eigenvalues`, before :func:`decompose`."""
    (factors,) = stacked_kfac_factors(model, settings, 1, layers)
    if isinstance(factors, DivergedError):
        raise factors
    return factors


def stacked_kfac_factors(
    model: nn.Module,
    settings: ProbeSettings,
    stack: int,
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
    inputs = settings.stacked_inputs(stack)
    results: list[list[LayerFactors] | DivergedError | None] = [None] * stack
    with FactorCapture(model, stack, layers) as capture:
        outputs = model(*inputs)
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(f"the model must return a tensor, got {type(outputs).__name__}")
        if outputs.shape[0] % stack:
            raise ValueError(
                f"outputs of shape {tuple(outputs.shape)} do not split into {stack} candidates"
            )
        total = None
        for k, part in enumerate(outputs.chunk(stack) if stack > 1 else (outputs,)):
            try:
                loss = settings.loss(part)
            except DivergedError as err:
                results[k] = err
                continue
            total = loss if total is None else total + loss
        wrt = capture.gradient_inputs()
        if total is not None and total.requires_grad and wrt:
            torch.autograd.grad(total, wrt, allow_unused=True)
    capture.warn_missing()
    factors = capture.factors(settings.batch_size)
    return [
        [layer.candidate(k, stack) for layer in factors] if result is None else result
        for k, result in enumerate(results)
    ]


def probed_layers(model: nn.Module, settings: ProbeSettings) -> list[tuple[str, int]]:
    """``(name, num_weights)`` of the layers K-FAC sees, from one forward pass without backward."""
    with FactorCapture(model) as capture:
        model(*settings.inputs)
    capture.warn_missing()
    return [(layer.name, layer.num_weights) for layer in capture.captured_layers()]
