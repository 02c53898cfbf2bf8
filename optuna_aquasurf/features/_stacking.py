"""Several candidates in one pass: copies of the batch stacked along its first dimension."""

from __future__ import annotations

import torch
from torch import nn

from optuna_aquasurf._activation import ActivationFunction
from optuna_aquasurf._expression import evaluate
from optuna_aquasurf.features._diverged import DivergedError
from optuna_aquasurf.features._factors import LayerFactors


class StackedActivation(nn.Module):
    """Activation ``k`` of ``activations`` on part ``k`` of the first dimension, in equal parts.

    Where the parts are equal and need no gradient (before the first probed layer, the copies of
    the batch are alike), what the candidates' expressions share is computed once.
    """

    def __init__(self, activations: list[ActivationFunction]):
        super().__init__()
        self.activations = nn.ModuleList(activations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % len(self.activations):
            raise ValueError(
                f"an input of shape {tuple(x.shape)} does not split into "
                f"{len(self.activations)} candidates along its first dimension"
            )
        parts = x.chunk(len(self.activations))
        if not x.requires_grad and all(torch.equal(parts[0], part) for part in parts[1:]):
            memo = {}
            outputs = [evaluate(act.tree, parts[0], memo) for act in self.activations]
        else:
            outputs = [act(part) for act, part in zip(self.activations, parts)]
        return torch.cat(outputs)


def activation_of(expressions: list[str]) -> nn.Module:
    """The activation module of one candidate, or the stacked one of several."""
    activations = [ActivationFunction(e) for e in expressions]
    return activations[0] if len(activations) == 1 else StackedActivation(activations)


def same_factors(alone: list[LayerFactors], stacked: list[LayerFactors] | DivergedError) -> bool:
    """Whether a candidate's stacked factors are its own (to float32 rounding)."""
    if isinstance(stacked, DivergedError) or len(alone) != len(stacked):
        return False
    for a, b in zip(alone, stacked):
        if (a.name, a.zeros_a, a.zeros_g) != (b.name, b.zeros_a, b.zeros_g):
            return False
        for x, y in ((a.a, b.a), (a.g, b.g)):
            scale = float(x.abs().max()) if x.numel() else 0.0
            if x.shape != y.shape or not torch.allclose(x, y, rtol=1e-4, atol=1e-5 * scale):
                return False
    return True
