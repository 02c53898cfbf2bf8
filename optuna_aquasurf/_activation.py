"""The activation function of an expression, as a torch module."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from optuna_aquasurf._expression import evaluate, parse

#: Gauss-Hermite nodes used to compute the normalisation constants of ``normalize=True``.
QUADRATURE_NODES = 100


class ActivationFunction(nn.Module):
    """An elementwise activation function given by an expression such as ``"mul(swish(x),erf(x))"``.

    Works on any device, float dtype and tensor shape, keeps autograd, pickles (by expression) and
    deep-copies.

    Parameters
    ----------
    expression
        The function of ``x``; see the operators in :mod:`optuna_aquasurf` (``PAPER_UNARY`` and
        friends). Whitespace is ignored; :attr:`expression` holds the canonical spelling.
    normalize
        Shift and scale the output so that, for ``x ~ N(0, 1)``, it has mean 0 and second
        moment 1. The two constants are computed once, by Gauss-Hermite quadrature.
    cost
        Its :attr:`cost` when known already (:func:`suggest_activation` gives the study's);
        measured on first use otherwise.
    inplace
        Accepted and ignored, so that ``partial(ActivationFunction, expression)`` serves where
        ``nn.ReLU`` does: as timm's ``create_model(name, act_layer=...)``, whose models call
        ``act_layer(inplace=True)``. The output is always a new tensor.

    Examples
    --------
    >>> import torch
    >>> from optuna_aquasurf import ActivationFunction
    >>> act = ActivationFunction("max(relu(x), cosh(elu(x)))")
    >>> act
    ActivationFunction('max(relu(x),cosh(elu(x)))')
    >>> act(torch.zeros(2)).tolist()
    [1.0, 1.0]

    In place of ``nn.ReLU``, e.g. ``timm.create_model("resnet18", act_layer=tanh)``:

    >>> from functools import partial
    >>> tanh = partial(ActivationFunction, "tanh(x)")
    >>> tanh(inplace=True)
    ActivationFunction('tanh(x)')
    """

    def __init__(
        self,
        expression: str,
        normalize: bool = False,
        cost: float | None = None,
        *,
        inplace: bool = False,
    ):
        super().__init__()
        self.tree = parse(expression)
        self.expression = str(self.tree)
        self.normalize = normalize
        self._cost = cost
        self.shift, self.scale = _normalization(self) if normalize else (0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = evaluate(self.tree, x)
        if self.normalize:
            y = (y - self.shift) / self.scale
        return y

    @property
    def cost(self) -> float:
        """Its forward and backward time over relu's on the CPU (float32), measured on first
        use in the process (see :mod:`optuna_aquasurf._cost`) unless given."""
        from optuna_aquasurf._cost import measured_cost

        return self._cost if self._cost is not None else measured_cost(self.expression)

    def extra_repr(self) -> str:
        return repr(self.expression) + (", normalize=True" if self.normalize else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __reduce__(self):
        return type(self), (self.expression, self.normalize, self._cost)


def _normalization(act: ActivationFunction) -> tuple[float, float]:
    """Mean and standard deviation of ``act(x)`` for ``x ~ N(0, 1)``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
    weights = weights / math.sqrt(2 * math.pi)
    with torch.no_grad():
        y = evaluate(act.tree, torch.from_numpy(nodes)).numpy()
    mean = float(np.dot(weights, y))
    std = math.sqrt(max(float(np.dot(weights, (y - mean) ** 2)), 0.0))
    if not (math.isfinite(mean) and math.isfinite(std)) or std == 0.0:
        raise ValueError(
            f"cannot normalize {act.expression!r}: its output under N(0, 1) has "
            f"mean {mean} and standard deviation {std}"
        )
    return mean, std
