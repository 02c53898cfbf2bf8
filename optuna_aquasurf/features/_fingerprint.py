"""The fingerprint of a probe: a digest of everything that determines its features."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from optuna_aquasurf.features._settings import ProbeSettings

#: Bumped whenever the features change for the same inputs; part of the fingerprint.
FEATURE_VERSION = "fisher-kfac-cdf/2"


def fingerprint(model: nn.Module, settings: ProbeSettings, layers: list[tuple]) -> str:
    """sha256 hex digest of a probe's features: see :attr:`FisherProbe.fingerprint`.

    ``model`` is the probe's reference build, ``layers`` its probed layers with their bins.
    """
    digest = hashlib.sha256(FEATURE_VERSION.encode())
    for name, tensor in model.state_dict().items():
        _update(digest, f"state {name}", tensor)
    for tensor in settings.inputs:
        _update(digest, "input", tensor)
    _update(digest, "targets", settings.targets)
    loss = "default" if settings.loss_fn is None else _qualname(settings.loss_fn)
    digest.update(repr((layers, settings.seed, settings.fisher, loss)).encode())
    return digest.hexdigest()


def _update(digest, label: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu()
    digest.update(f"{label} {tuple(tensor.shape)} {tensor.dtype}".encode())
    digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def _qualname(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{getattr(fn, '__module__', type(fn).__module__)}.{name}"
