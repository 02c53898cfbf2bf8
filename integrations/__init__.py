"""Put any activation into timm, torchvision and other PyTorch models.

>>> from torch import nn
>>> from optuna_aquasurf.integrations import swap_activations, torchvision_model
>>> model = torchvision_model("mobilenet_v3_small", nn.Tanh(), num_classes=10)

:func:`swap_activations` replaces the main activation modules, gives each call of a reused
module its own copy, rewrites functional activations (``F.relu``) with torch.fx, keeps gates, and
reports every site; :class:`SwapPolicy` decides which sites are main. Neither timm nor
torchvision is imported by this package until a builder asks for it.
"""

from ._builders import timm_model, torchvision_model
from ._policy import SwapPolicy
from ._report import Site, SwapReport
from ._swap import ActivationSites, PerCallActivation, find_activation_sites, swap_activations

__all__ = [
    "ActivationSites",
    "PerCallActivation",
    "Site",
    "SwapPolicy",
    "SwapReport",
    "find_activation_sites",
    "swap_activations",
    "timm_model",
    "torchvision_model",
]
