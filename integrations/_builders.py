"""Build timm and torchvision models offline and swap their activations."""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from ._policy import SwapPolicy
from ._report import SwapReport
from ._swap import ActivationSpec, swap_activations


def timm_model(
    name: str,
    activation: ActivationSpec,
    *,
    num_classes: int | None = None,
    pretrained: bool = False,
    policy: SwapPolicy | None = None,
    example_input: torch.Tensor | tuple[Any, ...] | None = None,
    return_report: bool = False,
    **kwargs: Any,
) -> nn.Module | tuple[nn.Module, SwapReport]:
    """Create a timm model and put ``activation`` at its main activation sites.

    Parameters
    ----------
    name
        A timm model name, e.g. ``"convnext_atto"`` (``timm.list_models()``).
    activation
        As for :func:`swap_activations`: a module, an expression string, or a factory.
    num_classes
        Size of the classifier; timm's default (usually 1000) when ``None``.
    pretrained
        Passed to ``timm.create_model``; with the default ``False`` nothing is downloaded.
    policy, example_input
        As for :func:`swap_activations`.
    return_report
        Return ``(model, report)`` instead of the model alone.
    **kwargs
        Passed to ``timm.create_model`` (``img_size=32``, ``drop_path_rate=0.1``...).

    Returns
    -------
    nn.Module, or (nn.Module, SwapReport) when ``return_report``.

    Examples
    --------
    >>> from torch import nn
    >>> from optuna_aquasurf.integrations import timm_model
    >>> model, report = timm_model("resnet18", nn.Tanh(), num_classes=10, return_report=True)
    >>> report.counts["replaced"]
    17
    """
    try:
        import timm
    except ImportError as error:
        raise ImportError("timm_model needs timm: pip install 'optuna-aquasurf[timm]'") from error
    if ":" not in name and not timm.is_model(name.partition(".")[0]):
        raise ValueError(_unknown("timm", name, timm.list_models()))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return _swap(model, activation, policy, example_input, return_report)


def torchvision_model(
    name: str,
    activation: ActivationSpec,
    *,
    num_classes: int | None = None,
    weights: Any = None,
    policy: SwapPolicy | None = None,
    example_input: torch.Tensor | tuple[Any, ...] | None = None,
    return_report: bool = False,
    **kwargs: Any,
) -> nn.Module | tuple[nn.Module, SwapReport]:
    """Create a torchvision model and put ``activation`` at its main activation sites.

    Parameters
    ----------
    name
        A torchvision model name, e.g. ``"mobilenet_v3_small"``
        (``torchvision.models.list_models()``).
    activation
        As for :func:`swap_activations`: a module, an expression string, or a factory.
    num_classes
        Size of the classifier; torchvision's default (1000) when ``None``.
    weights
        Passed to ``torchvision.models.get_model``; with the default ``None`` nothing is
        downloaded.
    policy, example_input
        As for :func:`swap_activations`.
    return_report
        Return ``(model, report)`` instead of the model alone.
    **kwargs
        Passed to ``torchvision.models.get_model`` (e.g. ``aux_logits=False,
        init_weights=False`` for ``inception_v3`` and ``googlenet``).

    Returns
    -------
    nn.Module, or (nn.Module, SwapReport) when ``return_report``.

    Examples
    --------
    >>> from torch import nn
    >>> from optuna_aquasurf.integrations import torchvision_model
    >>> model, report = torchvision_model("resnet18", nn.Tanh(), num_classes=10, return_report=True)
    >>> report.counts["replaced"]
    17
    """
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        raise ValueError(_unknown("torchvision", name, names))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(name, weights=weights, **kwargs)
    return _swap(model, activation, policy, example_input, return_report)


def _swap(model, activation, policy, example_input, return_report):
    model, report = swap_activations(
        model, activation, policy=policy, example_input=example_input, inplace=True
    )
    return (model, report) if return_report else model


def _unknown(library: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else "no close name"
    return f"unknown {library} model {name!r} ({hint})"
