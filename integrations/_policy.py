"""Which activation sites count as "main" nonlinearities: the swap policy."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from . import _registry
from ._report import KEPT_GATE, KEPT_POLICY, REPLACED

Pattern = str | type


@dataclass(frozen=True)
class SwapPolicy:
    """Decide which activation sites :func:`swap_activations` replaces.

    A site is an activation module (an instance of one of the built-in activation classes, e.g.
    ``nn.ReLU``, ``nn.GELU`` or timm's ``GELU``/``Swish``/``HardSwish``, or of ``extra_types``) or
    a functional call such as ``F.relu(x)`` made by a module's own ``forward``. Each site is
    decided by the first rule that matches:

    1. ``exclude`` matches: kept, ``"kept (policy)"``.
    2. ``include`` matches: replaced, even if it is a gate.
    3. It is a gate: kept, ``"kept (gate)"``. Gates are activations inside squeeze-excitation and
       attention modules (timm ``SqueezeExcite``, ``SEModule``, ``EcaModule``, CBAM, ...,
       torchvision ``ops.SqueezeExcitation``), modules stored under the attribute names ``gate``,
       ``gate_fn``, ``gate_act`` or ``scale_activation``, any sigmoid or hard-sigmoid, and, while
       ``glu_gates="keep"``, the activation of GLU-family blocks (timm ``GluMlp``, ``SwiGLU``),
       sigmoid or not.
    4. Otherwise: replaced.

    Parameters
    ----------
    include, exclude
        Patterns. A string is a glob matched against the site's module path (``fnmatch``, ``*``
        also crosses dots, e.g. ``"layer4.*"``); for a functional call the path is that of the
        module making the call. A class matches a site when the activation module, or any module
        containing the site, is an instance of it (``exclude=(MyBlock,)`` keeps everything in
        ``MyBlock``).
    glu_gates
        ``"keep"`` leaves the gating activation of GLU/SwiGLU blocks alone; ``"replace"`` swaps it
        like a main activation, even a sigmoid. In SwiGLU transformers it is the only
        nonlinearity.
    extra_types
        More activation classes to treat as sites, e.g. ``(nn.Softplus,)``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from optuna_aquasurf.integrations import SwapPolicy, swap_activations
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
    >>> policy = SwapPolicy(exclude=("3",))
    >>> x = torch.ones(2, 4)
    >>> new, report = swap_activations(net, nn.Tanh(), policy=policy, example_input=x)
    >>> new
    Sequential(
      (0): Linear(in_features=4, out_features=4, bias=True)
      (1): Tanh()
      (2): Linear(in_features=4, out_features=4, bias=True)
      (3): ReLU()
    )
    """

    include: Sequence[Pattern] = ()
    exclude: Sequence[Pattern] = ()
    glu_gates: Literal["keep", "replace"] = "keep"
    extra_types: Sequence[type[nn.Module]] = ()

    def __post_init__(self) -> None:
        if self.glu_gates not in ("keep", "replace"):
            raise ValueError(f"glu_gates must be 'keep' or 'replace', got {self.glu_gates!r}")
        for pattern in (*self.include, *self.exclude):
            if not isinstance(pattern, (str, type)):
                raise TypeError(
                    f"include/exclude patterns are path globs (str) or classes, got {pattern!r}"
                )
        for cls in self.extra_types:
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(f"extra_types must be nn.Module subclasses, got {cls!r}")

    def activation_types(self) -> tuple[type, ...]:
        """The classes whose instances are activation sites (loaded ones only)."""
        return _registry.resolve(_registry.ACTIVATION_CLASSES) + tuple(self.extra_types)

    def decide(self, path: str, chain: Sequence[nn.Module]) -> tuple[str, str]:
        """Return ``(action, reason)`` for the site at ``path``.

        ``chain`` lists the modules from the root down to the site: the activation module itself
        for a module site, the module making the call for a functional site.
        """
        if _matches(self.exclude, path, chain):
            return KEPT_POLICY, "excluded by policy"
        if _matches(self.include, path, chain):
            return REPLACED, "included by policy"
        gate = self._gate_reason(path, chain)
        if gate:
            return KEPT_GATE, gate
        return REPLACED, ""

    def _gate_reason(self, path: str, chain: Sequence[nn.Module]) -> str:
        containers = _registry.resolve(_registry.GATE_CONTAINERS)
        glu = _registry.resolve(_registry.GLU_CONTAINERS)
        for module in reversed(chain):
            if isinstance(module, containers):
                return f"inside {type(module).__name__}"
            if isinstance(module, glu):
                return f"GLU gate of {type(module).__name__}" if self.glu_gates == "keep" else ""
        attribute = path.rpartition(".")[2]
        if attribute in _registry.GATE_ATTRIBUTES:
            return f"attribute '{attribute}'"
        if chain and isinstance(chain[-1], _registry.resolve(_registry.SIGMOID_CLASSES)):
            return "sigmoid-shaped"
        return ""


def _matches(patterns: Sequence[Pattern], path: str, chain: Sequence[nn.Module]) -> bool:
    for pattern in patterns:
        if isinstance(pattern, str):
            if fnmatch.fnmatchcase(path, pattern):
                return True
        elif any(isinstance(module, pattern) for module in chain):
            return True
    return False
