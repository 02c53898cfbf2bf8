"""Fisher-spectrum features of many candidate activation functions in one user model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np
import torch
from rich.progress import track
from torch import nn

from optuna_aquasurf.features._fisher import Bins, bin_count, spectra_features
from optuna_aquasurf.features._kfac import (
    FISHER_TYPES,
    DivergedError,
    kfac_spectra,
    probed_layers,
)

__all__ = ["DivergedError", "FisherProbe"]

#: Bumped whenever the features change for the same inputs; part of the fingerprint.
FEATURE_VERSION = "fisher-kfac-cdf/1"
#: The progress bar appears for more candidates than this.
PROGRESS_MIN = 20


class FisherProbe:
    """Computes the Fisher-spectrum features of candidate activations in a user's model.

    For each candidate, ``torch.manual_seed(seed)`` is set right before
    ``build_model(ActivationFunction(expression))``, so every candidate starts from the same initial
    weights and only the activation differs; the model runs in eval mode on ``device``, and the
    features are those of :func:`fisher_features`.

    Parameters
    ----------
    build_model
        ``build_model(activation) -> nn.Module``, given an
        :class:`~optuna_aquasurf.ActivationFunction` module to place in the network. A top-level
        function keeps the probe picklable.
    inputs, targets
        One batch and its labels (the first dimension of ``targets`` is the batch).
    loss_fn
        ``loss_fn(outputs, targets) -> batch-mean loss``; default cross-entropy for integer
        targets, mean squared error for float targets.
    seed
        Seed of the initial weights (and of the sampled labels of ``fisher="model"``).
    fisher
        ``"empirical"`` (the given labels) or ``"model"`` (labels sampled from the model).
    bins
        Histogram bins per layer, as in :func:`fisher_features`.
    device
        Where models run; default CUDA when available, else CPU.
    progress
        Show a progress bar when computing features of more than 20 candidates.

    Notes
    -----
    A candidate whose outputs, loss or factors are not finite is *diverged*: its row gets a finite
    fill, every layer's CDF ``0, ..., 0, 1`` (all its mass at the top of the range, as for log
    eigenvalues going to infinity), and is flagged in the mask of
    ``features(..., return_diverged=True)``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from optuna_aquasurf.features import FisherProbe
    >>> def build_model(activation):
    ...     return nn.Sequential(nn.Linear(8, 32), activation, nn.Linear(32, 3))
    >>> inputs, labels = torch.randn(16, 8), torch.arange(16) % 3
    >>> probe = FisherProbe(build_model, inputs, labels)
    >>> matrix, diverged = probe.features(["relu(x)", "tanh(x)"], return_diverged=True)
    >>> matrix.shape == (2, probe.feature_length), diverged.tolist()
    (True, [False, False])
    """

    def __init__(
        self,
        build_model: Callable[[nn.Module], nn.Module],
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        fisher: str = "empirical",
        bins: Bins = None,
        device: str | torch.device | None = None,
        progress: bool = True,
    ):
        if fisher not in FISHER_TYPES:
            raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}")
        self.build_model = build_model
        self.inputs = _to_cpu(inputs)
        self.targets = targets.detach().cpu()
        self.loss_fn = loss_fn
        self.seed = seed
        self.fisher = fisher
        self.bins = bins
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = progress
        self._layers: list[tuple[str, int, int]] | None = None
        self._fingerprint: str | None = None

    @property
    def layers(self) -> list[tuple[str, int, int]]:
        """``(name, num_weights, bins)`` of each layer in the features, from a ``relu`` build."""
        if self._layers is None:
            self._reference()
        return self._layers

    @property
    def feature_length(self) -> int:
        """Length of each row of :meth:`features`."""
        return sum(b for _, _, b in self.layers)

    @property
    def fingerprint(self) -> str:
        """sha256 hex digest of everything that determines the features.

        Covers the feature version, the initial state (parameter and buffer names, shapes, dtypes
        and values of a ``relu`` build), the probed layers and their bins, the bytes of inputs and
        targets, the seed, the Fisher type and the loss function's name. Not the device.
        """
        if self._fingerprint is None:
            self._reference()
        return self._fingerprint

    def features(
        self, space: Iterable, return_diverged: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Feature matrix, one float32 row per candidate.

        Parameters
        ----------
        space
            A :class:`~optuna_aquasurf.SearchSpace`, candidates with an ``expression``, or
            expression strings (a single string gives one row).
        return_diverged
            Also return the boolean mask of diverged candidates.

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, numpy.ndarray)
            ``(n, feature_length)`` matrix without NaNs, and the mask when asked.
        """
        from optuna_aquasurf import ActivationFunction

        if isinstance(space, str):
            space = [space]
        expressions = [getattr(c, "expression", c) for c in space]
        matrix = np.empty((len(expressions), self.feature_length), dtype=np.float32)
        diverged = np.zeros(len(expressions), dtype=bool)
        inputs, targets = _to(self.inputs, self.device), self.targets.to(self.device)
        show = self.progress and len(expressions) > PROGRESS_MIN
        rows = track(
            expressions, description="Fisher features", total=len(expressions), disable=not show
        )
        for i, expression in enumerate(rows):
            row = self._row(ActivationFunction(expression), inputs, targets)
            diverged[i] = row is None
            matrix[i] = self._diverged_row() if row is None else row
        return (matrix, diverged) if return_diverged else matrix

    def _row(self, activation: nn.Module, inputs, targets) -> np.ndarray | None:
        """Features of one candidate, or None when it diverges."""
        model = self._build(activation)
        try:
            spectra = kfac_spectra(model, inputs, targets, self.loss_fn, self.fisher, self.seed)
        except DivergedError:
            return None
        names = [s.name for s in spectra]
        if names != [name for name, _, _ in self.layers]:
            raise RuntimeError(
                f"candidate {activation.expression!r} changed the probed layers: {names} instead "
                f"of {[name for name, _, _ in self.layers]}"
            )
        return spectra_features(spectra, self.bins)

    def _build(self, activation: nn.Module) -> nn.Module:
        """``build_model(activation)`` after seeding; the caller's random state is kept."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else []):
            if cuda:
                torch.manual_seed(self.seed)
            else:  # torch.manual_seed would also queue a (slow) lazy seeding of CUDA
                torch.random.default_generator.manual_seed(self.seed)
            model = self.build_model(activation)
        return model.to(self.device).eval()

    def _diverged_row(self) -> np.ndarray:
        parts = [np.zeros(b, dtype=np.float32) for _, _, b in self.layers]
        for part in parts:
            part[-1] = 1.0
        return np.concatenate(parts)

    def _reference(self) -> None:
        """Builds the ``relu`` model once: the probed layers and the fingerprint."""
        from optuna_aquasurf import ActivationFunction

        model = self._build(ActivationFunction("relu(x)"))
        self._layers = [
            (name, num_weights, bin_count(self.bins, num_weights))
            for name, num_weights in probed_layers(model, _to(self.inputs, self.device))
        ]
        digest = hashlib.sha256(FEATURE_VERSION.encode())
        for name, tensor in model.state_dict().items():
            _update(digest, f"state {name}", tensor)
        for tensor in self.inputs if isinstance(self.inputs, tuple) else (self.inputs,):
            _update(digest, "input", tensor)
        _update(digest, "targets", self.targets)
        loss = "default" if self.loss_fn is None else _qualname(self.loss_fn)
        digest.update(repr((self._layers, self.seed, self.fisher, loss)).encode())
        self._fingerprint = digest.hexdigest()


def _update(digest, label: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu()
    digest.update(f"{label} {tuple(tensor.shape)} {tensor.dtype}".encode())
    digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def _qualname(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{getattr(fn, '__module__', type(fn).__module__)}.{name}"


def _to_cpu(inputs):
    if isinstance(inputs, (tuple, list)):
        return tuple(t.detach().cpu() for t in inputs)
    return inputs.detach().cpu()


def _to(inputs, device: torch.device):
    if isinstance(inputs, tuple):
        return tuple(t.to(device) for t in inputs)
    return inputs.to(device)
