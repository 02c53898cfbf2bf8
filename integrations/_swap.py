"""Put a new activation at every main activation site of a model."""

from __future__ import annotations

import copy
import functools
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._functional import TraceFailure, rewrite_functional
from ._policy import SwapPolicy
from ._probe import Probe, candidate_inputs, probe
from ._report import FUNCTIONAL_LEFT, FUNCTIONAL_REWRITTEN, REPLACED, Site, SwapReport

ActivationSpec = nn.Module | str | Callable[[], nn.Module]


class PerCallActivation(nn.Module):
    """One activation module per call of a module the model calls several times per forward.

    torchvision's ResNet blocks call their single ``relu`` twice. After a swap that site holds a
    ``PerCallActivation`` whose ``calls[i]`` serves the i-th call of each forward pass. The
    position wraps around after ``len(calls)`` calls, so it relies on every forward pass making
    the same calls as the probe pass did; a forward pass that raises midway leaves it shifted
    (:meth:`reset` puts it back). With a parameter-free activation every order gives the same
    outputs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from optuna_aquasurf.integrations import PerCallActivation
    >>> act = PerCallActivation([nn.Tanh(), nn.Softsign()])
    >>> x = torch.ones(1)
    >>> [round(act(x).item(), 3) for _ in range(3)]
    [0.762, 0.5, 0.762]
    """

    def __init__(self, calls: Sequence[nn.Module]) -> None:
        super().__init__()
        self.calls = nn.ModuleList(calls)
        self.position = 0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        module = self.calls[self.position]
        self.position = (self.position + 1) % len(self.calls)
        return module(input)

    def reset(self) -> None:
        """Make the next call the first of a forward pass."""
        self.position = 0


@dataclass
class _NewModule:
    """A new activation module at ``path``, before splitting it per call."""

    path: str
    module: nn.Module
    original: str
    action: str
    note: str


def swap_activations(
    model: nn.Module,
    activation: ActivationSpec,
    *,
    policy: SwapPolicy | None = None,
    example_input: torch.Tensor | tuple[Any, ...] | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, SwapReport]:
    """Replace the main activations of ``model`` by ``activation``.

    The same as ``find_activation_sites(model, policy=policy,
    example_input=example_input).apply(model, activation, inplace=inplace)``: the sites are
    found with a plain activation in place (see :func:`find_activation_sites`), so any
    ``activation`` works, even one that accepts only some batch sizes. To swap the activations
    of many instances of one architecture, find the sites once and :meth:`~ActivationSites.apply`
    them to each instance: no forward pass is needed then.

    With a parameter-free activation the swapped model's ``state_dict`` has the same keys, so
    checkpoints of the original load with ``strict=True``.

    Every module of the swapped model with an ``inplace`` flag (``nn.Dropout``, ``nn.ReLU``,
    timm's activations and gates...) gets ``inplace=False``, and so do the ``inplace=True``
    arguments of the functional calls in the modules rewritten by torch.fx (see
    :func:`find_activation_sites`): many activations (relu, sigmoid, tanh, exp...) save their
    output for the backward pass, which an in-place operation after them would overwrite.
    In-place tensor operations (``x += y``, ``x.mul_(2)``) are left as they are.

    Parameters
    ----------
    model
        Any ``nn.Module``, on any device, in any mode.
    activation
        An ``nn.Module`` (each site gets its own ``copy.deepcopy``), an expression string for
        ``optuna_aquasurf.ActivationFunction`` (e.g. ``"mul(swish(x),erf(x))"``), or a
        zero-argument callable returning a new module (e.g. ``nn.Tanh``).
    policy, example_input
        As for :func:`find_activation_sites`.
    inplace
        Modify and return ``model`` itself instead of a deep copy.

    Returns
    -------
    model : nn.Module
        The swapped model (a copy unless ``inplace``).
    report : SwapReport
        Every site with its action; ``print(report)`` shows a table.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from optuna_aquasurf.integrations import swap_activations
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.GELU())
    >>> new, report = swap_activations(net, nn.Tanh(), example_input=torch.randn(1, 3, 8, 8))
    >>> report.counts["replaced"]
    2
    >>> print(report)
    path  original  action    note
    ----  --------  --------  ----
    1     ReLU      replaced
    3     GELU      replaced
    2 sites: 2 replaced
    """
    _check_model(model, "swap_activations")
    sites = find_activation_sites(model, policy=policy, example_input=example_input)
    return sites.apply(model, activation, inplace=inplace)


class _SiteMarker(nn.Module):
    """The plain activation (a ReLU) put at every site while the sites are being found."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.relu(input)


@dataclass(frozen=True)
class ActivationSites:
    """Where the activations of one architecture are, and what a swap does at each site.

    Made by :func:`find_activation_sites`; :meth:`apply` puts an activation at these sites in
    any model built the same way (same module paths and classes), without a forward pass.

    Attributes
    ----------
    report
        Every site with its action, as :func:`swap_activations` returns it.
    """

    report: SwapReport
    _structure: tuple[tuple[str, str], ...]
    _replaced: tuple[str, ...]
    _rewritten: tuple[tuple[str, tuple[str, ...]], ...]
    _calls: tuple[tuple[str, int], ...]

    def apply(
        self, model: nn.Module, activation: ActivationSpec, *, inplace: bool = False
    ) -> tuple[nn.Module, SwapReport]:
        """Put ``activation`` at the sites of ``model``, a model built like the one they were
        found in, and switch off in-place operations as :func:`swap_activations` does.

        Parameters
        ----------
        model
            A model with the same module paths and classes as the one given to
            :func:`find_activation_sites` (another instance of the architecture, any weights,
            device and mode).
        activation
            As for :func:`swap_activations`.
        inplace
            Modify and return ``model`` itself instead of a deep copy.

        Returns
        -------
        (model, report), as :func:`swap_activations`.

        Raises
        ------
        TypeError
            When ``model`` is not an ``nn.Module``.
        ValueError
            When ``model`` is not built like the model the sites were found in.
        """
        _check_model(model, "ActivationSites.apply")
        make = _activation_factory(activation)
        structure = _structure(model)
        if structure != self._structure:
            raise ValueError(_structure_difference(self._structure, structure))
        if not inplace:
            model = copy.deepcopy(model)
        named = dict(model.named_modules(remove_duplicate=False))
        for path in self._replaced:
            parent_path, _, name = path.rpartition(".")
            setattr(named[parent_path], name, _new_activation(make, named[parent_path]))
        classes: dict[tuple, type] = {}
        for path, children in self._rewritten:
            module = named[path]
            made = rewrite_functional(
                module, functools.partial(_new_activation, make, module), classes
            )
            if tuple(child for child, _ in made) != children:
                raise ValueError(
                    f"torch.fx rewrote {path or '(model)'} differently from the model the sites "
                    f"were found in: {[child for child, _ in made]} instead of {list(children)}"
                )
        for path, calls in self._calls:
            _split(model, path, calls, make)
        # An in-place module after a new activation would overwrite what it saved for backward.
        for module in model.modules():
            if getattr(module, "inplace", None) is True:
                module.inplace = False
        return model, self.report


def find_activation_sites(
    model: nn.Module,
    *,
    policy: SwapPolicy | None = None,
    example_input: torch.Tensor | tuple[Any, ...] | None = None,
) -> ActivationSites:
    """Find the main activation sites of ``model`` with a plain activation in place.

    ``model`` itself is left as it was: the search runs on a copy.

    1. Every activation module the policy selects (``nn.ReLU``, ``nn.GELU``, ``nn.SiLU``, timm's
       ``GELU``/``Swish``/``HardSwish``... see :class:`SwapPolicy`) is a site. Gates
       (squeeze-excitation, attention, sigmoids) are kept.
    2. With a ReLU at every site, one probe forward pass in eval mode and one in train mode (no
       gradients; BatchNorm statistics, modes and random state restored) count the calls of
       each site and the functional activations (``F.relu``, ``torch.relu_``, ``x.relu()``,
       ``F.gelu``, ``F.silu``, ``F.hardswish``...) made outside activation modules.
    3. A site called ``n > 1`` times per forward (torchvision ResNet's ``relu``) will hold a
       :class:`PerCallActivation` of ``n`` copies, one per call.
    4. A module whose own ``forward`` makes functional activation calls is traced with torch.fx
       (that module only; submodules stay leaves; timm's not-traceable modules and functions are
       honoured) and each call goes to a new child ``functional_act<i>``. Calls that cannot be
       rewritten are reported as ``"functional-left"`` with a warning. When calls were
       rewritten, the probe runs once more to check that none are left.

    Models without functional activations are never traced.

    Parameters
    ----------
    model
        Any ``nn.Module``, on any device, in any mode.
    policy
        Which sites to replace; ``SwapPolicy()`` by default.
    example_input
        Input for the probe forward passes: a tensor, or a tuple of positional arguments (moved
        to the model's device). A batch of 2 is enough. When omitted, an image batch of 2 is
        inferred for models with an ``nn.Conv2d``: channels from the first convolution; the
        first size that runs of a timm ViT's ``patch_embed.img_size``, 64x64, 128x128, timm's
        ``pretrained_cfg['input_size']``, 224x224 and 299x299.

    Returns
    -------
    ActivationSites

    Raises
    ------
    TypeError
        When ``model`` is not an ``nn.Module``.

    Notes
    -----
    A module rewritten for its functional calls is not turned into a ``torch.fx.GraphModule``:
    the generated ``forward`` is installed on a subclass of the module's own class, for that
    instance only, so the model keeps its classes, methods (``forward_features``...),
    attributes and ``state_dict`` keys. Python values the traced ``forward`` reads (flags,
    constants) are fixed at their values at swap time, except ``self.training``: both modes
    are traced. Such a module cannot be pickled whole (``torch.save(model)`` raises); save its
    ``state_dict``. ``copy.deepcopy`` works.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from optuna_aquasurf.integrations import find_activation_sites
    >>> def build():
    ...     return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> sites = find_activation_sites(build(), example_input=torch.randn(2, 4))
    >>> model, report = sites.apply(build(), nn.Tanh())  # another instance, no forward pass
    >>> model[1]
    Tanh()
    """
    _check_model(model, "find_activation_sites")
    policy = policy or SwapPolicy()
    structure = _structure(model)
    model = copy.deepcopy(model)
    named = dict(model.named_modules(remove_duplicate=False))
    order = {path: index for index, path in enumerate(named)}
    sites: list[Site] = []
    new, kept = _replace_modules(model, named, _SiteMarker, policy, sites)

    if example_input is None:
        inputs = candidate_inputs(model)
    else:
        example = example_input if isinstance(example_input, tuple) else (example_input,)
        inputs = [_on_device(example, model)]
    watched = [n.module for n in new]
    activations = _activations(model, new, kept)
    probes, example = probe(model, inputs, watched=watched, activations=activations)
    calls = _count_calls(new, probes, sites)

    rewritten, left = _rewrite_functional(model, named, probes, policy, sites)
    if rewritten:
        activations = _activations(model, new + rewritten, kept)
        probes, _ = probe(model, [example], [n.module for n in rewritten], activations)
        calls += _count_calls(rewritten, probes, sites)
        left += _missed_calls(named, rewritten, probes)

    sites += left
    sites.sort(key=lambda site: _order_key(site.path, order))
    report = SwapReport(sites)
    _warn(report)
    children: dict[str, list[str]] = {}
    for item in rewritten:
        parent, _, child = item.path.rpartition(".")
        children.setdefault(parent, []).append(child)
    return ActivationSites(
        report=report,
        _structure=structure,
        _replaced=tuple(item.path for item in new),
        _rewritten=tuple((path, tuple(names)) for path, names in children.items()),
        _calls=tuple(calls),
    )


def _check_model(model: object, caller: str) -> None:
    if isinstance(model, nn.Module):
        return
    hint = ""
    if isinstance(model, tuple) and model and isinstance(model[0], nn.Module):
        hint = " (did you pass the (model, report) pair of swap_activations?)"
    elif callable(model):
        hint = " (call it to build the model?)"
    raise TypeError(f"{caller} needs an nn.Module, got {type(model).__name__}{hint}")


def _activation_factory(activation: ActivationSpec) -> Callable[[], nn.Module]:
    if isinstance(activation, str):
        from optuna_aquasurf import ActivationFunction

        activation = ActivationFunction(activation)
    if isinstance(activation, nn.Module):
        template = activation
        return lambda: copy.deepcopy(template)
    if callable(activation):

        def make() -> nn.Module:
            module = activation()
            if not isinstance(module, nn.Module):
                raise TypeError(
                    f"the activation factory {activation!r} returned {type(module).__name__}, "
                    "not an nn.Module"
                )
            return module

        make()
        return make
    raise TypeError(
        "activation must be an nn.Module, an expression string or a zero-argument callable "
        f"returning an nn.Module, got {type(activation).__name__}"
    )


def _structure(model: nn.Module) -> tuple[tuple[str, str], ...]:
    """Path and class of every module: what two models built the same way share."""
    return tuple(
        (path, type(m).__qualname__) for path, m in model.named_modules(remove_duplicate=False)
    )


def _structure_difference(found: tuple, given: tuple) -> str:
    first = next(i for i, (a, b) in enumerate(itertools.zip_longest(found, given)) if a != b)
    expected = found[first] if first < len(found) else "nothing"
    got = given[first] if first < len(given) else "nothing"
    return (
        "the model is not built like the one whose activation sites were found: module "
        f"{first} is {got} instead of {expected}"
    )


def _device_of(module: nn.Module) -> torch.device | None:
    """The device of the module's first parameter or buffer (None without any)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return None if tensor is None else tensor.device


def _on_device(example: tuple, model: nn.Module) -> tuple:
    """The tensors of ``example`` on the model's device."""
    device = _device_of(model)
    if device is None:
        return example
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in example)


def _chain(named: dict[str, nn.Module], path: str) -> list[nn.Module]:
    parts = path.split(".") if path else []
    return [named[".".join(parts[:i])] for i in range(len(parts) + 1)]


def _activations(model, new: list[_NewModule], kept: list[nn.Module]) -> list[nn.Module]:
    """All activation modules: kept ones, and the new ones with their per-call copies."""
    return kept + [m for item in new for m in model.get_submodule(item.path).modules()]


def _new_activation(make: Callable[[], nn.Module], parent: nn.Module) -> nn.Module:
    """A new activation module on its parent's device and in its parent's mode."""
    module = make()
    device = _device_of(parent)
    if device is not None:
        module.to(device)
    return module.train(parent.training)


def _replace_modules(model, named, make, policy, sites) -> tuple[list[_NewModule], list[nn.Module]]:
    types = policy.activation_types()
    new, kept = [], []
    for path, module in named.items():
        if not path or not isinstance(module, types):
            continue
        parent_path, _, name = path.rpartition(".")
        parent = named[parent_path]
        if parent._modules.get(name) is not module:  # already replaced through a shared parent
            continue
        chain = _chain(named, path)
        if any(isinstance(ancestor, types) for ancestor in chain[1:-1]):  # part of another site
            continue
        action, note = policy.decide(path, chain)
        if action == REPLACED:
            dropped = [parameter for parameter, _ in module.named_parameters()]
            if dropped:
                note = "; ".join(filter(None, [note, f"drops parameters {', '.join(dropped)}"]))
            replacement = _new_activation(make, parent)
            setattr(parent, name, replacement)
            new.append(_NewModule(path, replacement, type(module).__name__, action, note))
        else:
            kept.append(module)
            sites.append(Site(path, type(module).__name__, action, note))
    return new, kept


def _calls_per_forward(probes: dict[str, Probe], module: nn.Module, path: str) -> int:
    counts = {mode: result.calls[id(module)] for mode, result in probes.items()}
    if len({n for n in counts.values() if n}) > 1:
        described = " and ".join(f"{n} times in {mode} mode" for mode, n in counts.items())
        warnings.warn(
            f"{path} is called {described}; the order of its per-call copies "
            "follows the mode with more calls",
            stacklevel=4,
        )
    return max(counts.values())


def _count_calls(new: list[_NewModule], probes: dict[str, Probe], sites: list[Site]):
    """Record the sites of the new modules; return (path, calls) of those called more than once."""
    reused = []
    for item in new:
        calls = _calls_per_forward(probes, item.module, item.path)
        if calls <= 1:
            note = item.note or ("" if calls else "not called by the probe forward pass")
            sites.append(Site(item.path, item.original, item.action, note))
            continue
        reused.append((item.path, calls))
        for index in range(calls):
            note = f"call {index + 1} of {calls} of a reused module"
            sites.append(Site(f"{item.path}.calls.{index}", item.original, item.action, note))
    return reused


def _split(model: nn.Module, path: str, calls: int, make: Callable[[], nn.Module]) -> None:
    """Give each call of the reused activation at ``path`` its own copy."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    copies = [getattr(parent, name)] + [_new_activation(make, parent) for _ in range(calls - 1)]
    setattr(parent, name, PerCallActivation(copies))


def _functional_calls(probes: dict[str, Probe]) -> dict[int, list[str]]:
    """Functional calls per calling module, from the mode that made more of them."""
    calls: dict[int, list[str]] = {}
    for result in probes.values():
        for module_id, names in result.functional.items():
            if len(names) > len(calls.get(module_id, ())):
                calls[module_id] = names
    return calls


def _rewrite_functional(model, named, probes, policy, sites):
    rewritten: list[_NewModule] = []
    left: list[Site] = []
    classes: dict[tuple, type] = {}
    path_of = {id(m): path for path, m in reversed(named.items())}
    for module_id, names in _functional_calls(probes).items():
        path = path_of[module_id]
        module = named[path]
        action, note = policy.decide(path, _chain(named, path))
        if action != REPLACED:
            sites += [Site(path, name, action, note) for name in names]
            continue
        try:
            children = rewrite_functional(
                module, functools.partial(_new_activation, _SiteMarker, module), classes
            )
        except TraceFailure as failure:
            left += [Site(path, name, FUNCTIONAL_LEFT, str(failure)) for name in names]
            continue
        where = f"in {type(module).__name__}.forward"
        for child, name in children:
            child_path = f"{path}.{child}" if path else child
            new = _NewModule(
                child_path, module.get_submodule(child), name, FUNCTIONAL_REWRITTEN, where
            )
            rewritten.append(new)
    return rewritten, left


def _missed_calls(named, rewritten: list[_NewModule], probes: dict[str, Probe]) -> list[Site]:
    """Functional calls still made by rewritten modules (hidden from torch.fx)."""
    rewritten_paths = {item.path.rpartition(".")[0] for item in rewritten}
    path_of = {id(m): path for path, m in reversed(named.items())}
    missed = []
    for module_id, names in _functional_calls(probes).items():
        path = path_of.get(module_id)
        if path in rewritten_paths:
            note = "missed by torch.fx (inside a function it does not trace?)"
            missed += [Site(path, name, FUNCTIONAL_LEFT, note) for name in names]
    return missed


def _order_key(path: str, order: dict[str, int]) -> int:
    """Position of the site's closest ancestor in the original module order."""
    while path not in order:
        path = path.rpartition(".")[0]
    return order[path]


def _warn(report: SwapReport) -> None:
    left = [site for site in report.sites if site.action == FUNCTIONAL_LEFT]
    if left:
        lines = "\n".join(f"  {s.path or '(model)'}: {s.original} ({s.note})" for s in left)
        warnings.warn(
            f"{len(left)} functional activation call(s) were left unchanged:\n{lines}",
            stacklevel=3,
        )
    if not report.counts[REPLACED] and not report.counts[FUNCTIONAL_REWRITTEN]:
        warnings.warn(
            "swap_activations replaced no activation; see the report for what was kept",
            stacklevel=3,
        )
