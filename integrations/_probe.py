"""Forward passes that count activation calls: reused modules and functional activations."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._registry import FUNCTIONAL_ACTIVATIONS

MODES = ("eval", "train")


@dataclass
class Probe:
    """What one forward pass did.

    Attributes
    ----------
    calls
        Number of calls per watched module, keyed by ``id(module)``.
    functional
        Functional activations called outside activation modules, keyed by ``id`` of the
        innermost module whose ``forward`` was running, in call order.
    """

    calls: Counter[int] = field(default_factory=Counter)
    functional: defaultdict[int, list[str]] = field(default_factory=lambda: defaultdict(list))


class _FunctionalRecorder(TorchFunctionMode):
    def __init__(self, stack: list[nn.Module], probe: Probe) -> None:
        super().__init__()
        self.stack = stack
        self.probe = probe
        self.activation_depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = FUNCTIONAL_ACTIVATIONS.get(func)
        if name is not None and self.activation_depth == 0 and self.stack:
            self.probe.functional[id(self.stack[-1])].append(name)
        return func(*args, **(kwargs or {}))


def candidate_inputs(model: nn.Module) -> list[tuple[torch.Tensor]]:
    """Example inputs to try, smallest first, for an image model (batch of 2).

    Channels come from the first ``nn.Conv2d``; sizes are a timm ViT's fixed
    ``patch_embed.img_size``, 64x64, 128x128, timm's ``pretrained_cfg['input_size']``, 224x224
    and 299x299.
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(
            "cannot infer an example input for a model without nn.Conv2d; "
            "pass example_input= (a tensor or a tuple of forward arguments)"
        )
    sizes = []
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
        sizes.append(tuple(img_size))
    sizes += [(64, 64), (128, 128)]
    cfg_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if cfg_size:
        sizes.append(tuple(cfg_size[-2:]))
    sizes += [(224, 224), (299, 299)]
    tensor = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    dtype = tensor.dtype if tensor is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(2, conv.in_channels, h, w, generator=generator).to(device, dtype),)
        for h, w in dict.fromkeys(sizes)
    ]


def probe(
    model: nn.Module,
    inputs: Sequence[tuple],
    watched: Collection[nn.Module],
    activations: Collection[nn.Module],
) -> tuple[dict[str, Probe], tuple]:
    """Run the model in eval then train mode and record its activation calls.

    The first of ``inputs`` that runs in both modes is used and returned (failing that, the
    first that runs in eval mode, with a warning). Calls made inside ``activations`` are not
    functional sites. Module modes, buffers (BatchNorm statistics) and the random number
    generators are restored afterwards; gradients are off.
    """
    modes = {module: module.training for module in model.modules()}
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    devices = sorted({t.device.index or 0 for t in model.parameters() if t.is_cuda})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            return _first_that_runs(model, inputs, watched, activations)
    finally:
        for module, training in modes.items():
            module.training = training
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def _first_that_runs(model, inputs, watched, activations) -> tuple[dict[str, Probe], tuple]:
    fallback = None
    errors: dict[str, Exception] = {}
    for example in inputs:
        results = {}
        for mode in MODES:
            model.train(mode == "train")
            try:
                results[mode] = _run(model, example, watched, activations)
            except Exception as error:  # a failing candidate input: try the next one
                errors[mode] = error
                break
        if len(results) == len(MODES):
            return results, example
        if results and fallback is None:
            fallback = results, example
    if fallback is not None:
        error = errors["train"]
        warnings.warn(
            f"the train-mode probe forward failed ({type(error).__name__}: {error}); "
            "activations used only in training were not looked for",
            stacklevel=4,
        )
        return fallback
    shapes = ", ".join(str(tuple(getattr(x, "shape", ()))) for ex in inputs for x in ex[:1])
    raise RuntimeError(
        f"the probe forward pass failed in eval mode for every example input tried ({shapes}); "
        "pass example_input= that the model accepts"
    ) from errors["eval"]


def _run(model, example, watched, activations) -> Probe:
    result = Probe()
    stack: list[nn.Module] = []
    watched_ids = {id(m) for m in watched}
    activation_ids = {id(m) for m in activations}
    recorder = _FunctionalRecorder(stack, result)

    def enter(module, args):
        stack.append(module)
        if id(module) in watched_ids:
            result.calls[id(module)] += 1
        if id(module) in activation_ids:
            recorder.activation_depth += 1

    def leave(module, args, output):
        stack.pop()
        if id(module) in activation_ids:
            recorder.activation_depth -= 1

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        with recorder:
            model(*example)
    finally:
        for handle in handles:
            handle.remove()
    return result
