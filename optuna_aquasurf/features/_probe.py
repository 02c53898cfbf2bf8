"""Fisher-spectrum features of many candidate activation functions in one user model."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from rich.progress import track
from torch import nn

from optuna_aquasurf._activation import ActivationFunction
from optuna_aquasurf.features._decompose import LayerSpectrum, decompose_stacked
from optuna_aquasurf.features._diverged import DivergedError
from optuna_aquasurf.features._fingerprint import fingerprint
from optuna_aquasurf.features._fisher import Bins, bin_count, layer_cdfs
from optuna_aquasurf.features._kfac import kfac_factors, probed_layers, stacked_kfac_factors
from optuna_aquasurf.features._settings import LossFunction, ProbeSettings
from optuna_aquasurf.features._stacking import activation_of, same_factors

__all__ = ["FisherProbe"]

#: The progress bar appears for more candidates than this.
PROGRESS_MIN = 20
#: Automatic stacking: at most this many activation outputs (elements) in one pass ...
STACK_ELEMENTS = 1 << 22
#: ... and at most this many candidates.
STACK_MAX = 32
#: The two candidates of the check that stacking gives each candidate its own factors.
STACK_CHECK = ("relu(x)", "tanh(x)")


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
        :class:`~optuna_aquasurf.ActivationFunction` module to place in the network (with
        ``swap_activations``, return the model of its ``(model, report)``). A top-level function
        keeps the probe picklable.
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
    stack
        Candidates computed together in one forward and backward pass, on copies of the batch
        stacked along the first dimension (each copy with its candidate's activation; the same
        factors, one candidate's per copy). ``None``: as many as keep the activation outputs of
        a pass under 2**22 elements (at most 32). Before stacking, a check compares the stacked
        factors of ``relu`` and ``tanh`` with those computed one at a time; when they differ
        (a model that mixes samples, or whose batch is not the first dimension), ``None`` falls
        back to one at a time and an explicit ``stack`` raises ``ValueError``. ``1``: one at a
        time.

    Attributes
    ----------
    settings : ProbeSettings
        ``inputs`` (a tuple), ``targets``, ``loss_fn``, ``fisher`` and ``seed``, the tensors on
        the CPU.

    Notes
    -----
    A candidate whose outputs, loss or factors are not finite is *diverged*: its row gets a finite
    fill, every layer's CDF ``0, ..., 0, 1`` (all its mass at the top of the range, as for log
    eigenvalues going to infinity), and is flagged in the mask of
    ``features(..., return_diverged=True)``.

    A layer with a single bin (by default, fewer than 200 weights) has the CDF ``1`` whatever the
    candidate: its factors are not computed, do not count toward divergence, and the backward
    pass stops where no other layer needs it.

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
        loss_fn: LossFunction | None = None,
        seed: int = 0,
        fisher: str = "empirical",
        bins: Bins = None,
        device: str | torch.device | None = None,
        progress: bool = True,
        stack: int | None = None,
    ):
        self.settings = ProbeSettings(inputs, targets, loss_fn, fisher, seed).to("cpu")
        if stack is not None and (not isinstance(stack, (int, np.integer)) or stack < 1):
            raise ValueError(f"stack must be a positive int or None, got {stack!r}")
        self.build_model = build_model
        self.bins = bins
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = progress
        self.stack = stack
        self._layers: list[tuple[str, int, int]] | None = None
        self._fingerprint: str | None = None
        self._elements = 0
        self._stack: int | None = None

    @property
    def layers(self) -> list[tuple[str, int, int]]:
        """``(name, num_weights, bins)`` of each layer in the features, from a ``relu`` build."""
        if self._layers is None:
            self._reference()
        return self._layers

    @property
    def stack_size(self) -> int:
        """Candidates computed in one pass (after the check of ``stack``, see the class notes)."""
        return self._stack_size()

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
        if isinstance(space, str):
            space = [space]
        expressions = [getattr(c, "expression", c) for c in space]
        matrix = np.empty((len(expressions), self.feature_length), dtype=np.float32)
        diverged = np.zeros(len(expressions), dtype=bool)
        settings = self.settings.to(self.device)
        stack = self._stack_size() if len(expressions) > 1 else 1
        starts = range(0, len(expressions), stack)
        show = self.progress and len(expressions) > PROGRESS_MIN
        for start in track(starts, description="Fisher features", disable=not show):
            group = expressions[start : start + stack]
            for i, row in enumerate(self._rows(group, settings), start):
                diverged[i] = row is None
                matrix[i] = self._diverged_row() if row is None else row
        return (matrix, diverged) if return_diverged else matrix

    def _rows(self, expressions: list[str], settings: ProbeSettings) -> list[np.ndarray | None]:
        """Features of candidates computed in one pass, None for those that diverge."""
        model = self._build(activation_of(expressions))
        candidates = decompose_stacked(self._factors(model, len(expressions), settings))
        computed = list(self._computed_layers())
        finite = []
        for expression, spectra in zip(expressions, candidates):
            if isinstance(spectra, DivergedError):
                continue
            if [s.name for s in spectra] != computed:
                raise RuntimeError(
                    f"candidate {expression!r} changed the probed layers: "
                    f"{[s.name for s in spectra]} instead of {computed}"
                )
            finite.append(spectra)
        rows = iter(self._cdfs(finite))
        return [None if isinstance(c, DivergedError) else next(rows) for c in candidates]

    def _cdfs(self, candidates: list[list[LayerSpectrum]]) -> np.ndarray:
        """The feature rows of candidates that did not diverge, a layer for all at once."""
        columns = np.cumsum([0] + [bins for _, _, bins in self.layers])
        position = {name: i for i, (name, _, _) in enumerate(self.layers)}
        matrix = np.ones((len(candidates), self.feature_length), dtype=np.float32)  # one bin: 1
        for spectra in zip(*candidates):  # one layer, in every candidate
            i = position[spectra[0].name]
            matrix[:, columns[i] : columns[i + 1]] = layer_cdfs(list(spectra), self.layers[i][2])
        return matrix

    def _computed_layers(self) -> dict[str, int]:
        """Name and bins of the layers whose CDF depends on the candidate (more than one bin)."""
        return {name: bins for name, _, bins in self.layers if bins > 1}

    def _factors(self, model: nn.Module, stack: int, settings: ProbeSettings):
        return stacked_kfac_factors(model, settings, stack, self._computed_layers())

    def _stack_size(self) -> int:
        """Candidates per pass, once checked that stacking gives each its own factors."""
        if self._stack is None:
            if self.stack is None:
                self._reference()
                stack = min(STACK_MAX, STACK_ELEMENTS // max(1, self._elements))
                self._stack = stack if stack > 1 and self._stacking_agrees() else 1
            elif self.stack > 1 and not self._stacking_agrees():
                raise ValueError(
                    f"stack={self.stack}: the factors of candidates stacked in one pass differ "
                    "from those computed one at a time (the model mixes samples, or its batch "
                    "is not the first dimension); use stack=1 or None"
                )
            else:
                self._stack = self.stack
        return self._stack

    def _stacking_agrees(self) -> bool:
        """Whether :data:`STACK_CHECK` stacked in one pass get their factors one at a time."""
        settings = self.settings.to(self.device)
        try:
            alone = [
                kfac_factors(self._build(activation_of([e])), settings, self._computed_layers())
                for e in STACK_CHECK
            ]
            model = self._build(activation_of(list(STACK_CHECK)))
            stacked = self._factors(model, len(STACK_CHECK), settings)
        except Exception:  # noqa: BLE001 - a model that cannot be stacked is computed one at a time
            return False
        return all(same_factors(a, b) for a, b in zip(alone, stacked))

    def _build(self, activation: nn.Module) -> nn.Module:
        """``build_model(activation)`` after seeding; the caller's random state is kept."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else []):
            if cuda:
                torch.manual_seed(self.settings.seed)
            else:  # torch.manual_seed would also queue a (slow) lazy seeding of CUDA
                torch.random.default_generator.manual_seed(self.settings.seed)
            model = self.build_model(activation)
        if not isinstance(model, nn.Module):
            raise TypeError(_not_a_module(model))
        return model.to(self.device).eval()

    def _diverged_row(self) -> np.ndarray:
        parts = [np.zeros(b, dtype=np.float32) for _, _, b in self.layers]
        for part in parts:
            part[-1] = 1.0
        return np.concatenate(parts)

    def _reference(self) -> None:
        """Builds the ``relu`` model once: the probed layers, the fingerprint, and the number of
        activation outputs of one pass."""

        def count(module, args, output):
            self._elements += output.numel()

        model = self._build(ActivationFunction("relu(x)"))
        # Every activation module of the model, be it the one given or copies of it (swapped).
        activations = [m for m in model.modules() if isinstance(m, ActivationFunction)]
        handles = [m.register_forward_hook(count) for m in activations]
        self._elements = 0
        try:
            self._layers = [
                (name, num_weights, bin_count(self.bins, num_weights))
                for name, num_weights in probed_layers(model, self.settings.to(self.device))
            ]
        finally:
            for handle in handles:
                handle.remove()
        self._fingerprint = fingerprint(model, self.settings, self._layers)


def _not_a_module(built) -> str:
    """What is wrong with a ``build_model`` that returned ``built``, not an ``nn.Module``."""
    message = f"build_model(activation) must return an nn.Module, got {type(built).__name__}"
    if isinstance(built, tuple) and built and isinstance(built[0], nn.Module):
        parts = ", ".join(type(part).__name__ for part in built)
        message += (
            f" ({parts}): swap_activations returns (model, report); return just the model, "
            "e.g. `return swap_activations(...)[0]`"
        )
    return message
