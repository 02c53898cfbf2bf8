"""Registries of activation classes, gate containers and functional activations.

Classes from optional libraries (timm, torchvision) are named as ``"module:Class"`` strings and
resolved only from modules that are already imported: a model built with timm means timm is in
``sys.modules``, so nothing here ever imports timm or torchvision itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

# Elementwise nonlinearities whose module instances are activation sites.
ACTIVATION_CLASSES: tuple[type[nn.Module] | str, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    "timm.layers.activations:Swish",
    "timm.layers.activations:Mish",
    "timm.layers.activations:Sigmoid",
    "timm.layers.activations:Tanh",
    "timm.layers.activations:HardSwish",
    "timm.layers.activations:HardSigmoid",
    "timm.layers.activations:HardMish",
    "timm.layers.activations:GELU",
    "timm.layers.activations:GELUTanh",
    "timm.layers.activations:QuickGELU",
    "timm.layers.activations_me:SwishMe",
    "timm.layers.activations_me:MishMe",
    "timm.layers.activations_me:HardSwishMe",
    "timm.layers.activations_me:HardSigmoidMe",
    "timm.layers.activations_me:HardMishMe",
    "timm.models.metaformer:SquaredReLU",
    "timm.models.metaformer:StarReLU",
    "timm.models.nfnet:GammaAct",
)

# Sigmoid-shaped activations: in vision backbones they are (almost) always gates.
SIGMOID_CLASSES: tuple[type[nn.Module] | str, ...] = (
    nn.Sigmoid,
    nn.Hardsigmoid,
    "timm.layers.activations:Sigmoid",
    "timm.layers.activations:HardSigmoid",
    "timm.layers.activations_me:HardSigmoidMe",
)

# Squeeze-excitation and attention modules: every activation inside them belongs to the gate.
GATE_CONTAINERS: tuple[str, ...] = (
    "torchvision.ops.misc:SqueezeExcitation",
    "timm.models._efficientnet_blocks:SqueezeExcite",
    "timm.layers.squeeze_excite:SEModule",
    "timm.layers.squeeze_excite:EffectiveSEModule",
    "timm.layers.squeeze_excite:SqueezeExciteCl",
    "timm.layers.eca:EcaModule",
    "timm.layers.eca:CecaModule",
    "timm.layers.cbam:ChannelAttn",
    "timm.layers.cbam:SpatialAttn",
    "timm.layers.cbam:LightSpatialAttn",
    "timm.layers.gather_excite:GatherExcite",
    "timm.layers.global_context:GlobalContext",
    "timm.layers.coord_attn:CoordAttn",
    "timm.layers.coord_attn:SimpleCoordAttn",
    "timm.layers.coord_attn:EfficientLocalAttn",
    "timm.layers.coord_attn:StripAttn",
    "timm.layers.selective_kernel:SelectiveKernelAttn",
    "timm.models.senet:SEModule",
)

# GLU-family blocks, whose activation multiplies another branch (``SwapPolicy.glu_gates``).
GLU_CONTAINERS: tuple[str, ...] = (
    "timm.layers.mlp:GluMlp",
    "timm.layers.mlp:SwiGLU",
    "timm.models.vitamin:GeGluMlp",
    "timm.models.gemma4_vit:Gemma4GatedMlp",
)

# Attribute names under which models keep gate activations.
GATE_ATTRIBUTES = frozenset({"gate", "gate_fn", "gate_act", "scale_activation"})

# Functional activations rewritten by torch.fx, keyed by the callable a TorchFunctionMode sees.
FUNCTIONAL_ACTIVATIONS: dict[object, str] = {
    F.relu: "F.relu",
    torch.relu: "torch.relu",
    torch.relu_: "torch.relu_",
    torch.Tensor.relu: "Tensor.relu",
    torch.Tensor.relu_: "Tensor.relu_",
    F.relu6: "F.relu6",
    F.gelu: "F.gelu",
    F.silu: "F.silu",
    F.hardswish: "F.hardswish",
    F.mish: "F.mish",
    F.elu: "F.elu",
    F.elu_: "F.elu_",
    F.selu: "F.selu",
    torch.selu: "torch.selu",
    torch.selu_: "torch.selu_",
    F.celu: "F.celu",
    F.leaky_relu: "F.leaky_relu",
    F.leaky_relu_: "F.leaky_relu_",
}

# The same activations as torch.fx ``call_method`` targets (``x.relu()``).
FUNCTIONAL_METHODS: dict[str, str] = {"relu": "Tensor.relu", "relu_": "Tensor.relu_"}


def resolve(entries: Iterable[type | str]) -> tuple[type, ...]:
    """Return the classes of ``entries`` that are loaded, without importing anything."""
    classes = []
    for entry in entries:
        if isinstance(entry, type):
            classes.append(entry)
            continue
        module_name, _, class_name = entry.partition(":")
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def timm_notrace() -> tuple[tuple[type, ...], tuple[object, ...]]:
    """Modules and functions timm marks as not traceable by torch.fx (empty without timm)."""
    fx_registry = sys.modules.get("timm.layers._fx")
    if fx_registry is None:
        return (), ()
    functions = tuple(f for f in fx_registry.get_notrace_functions() if callable(f))
    return tuple(fx_registry.get_notrace_modules()), functions
