"""Rewrite functional activations (``F.relu(x)``, ``x.relu()``...) in a module's own forward.

Only the innermost module whose ``forward`` makes the call is traced, with every submodule kept
as an opaque ``call_module`` leaf. Each activation call becomes a call of a new child module
(``functional_act0``, ``functional_act1``...), and every other call with ``inplace=True``
(``F.dropout``, ``F.hardtanh``...) gets ``inplace=False``: it could overwrite what a new activation
saved for its backward pass. The generated ``forward`` is installed on a subclass
of the module's own class, assigned to that one instance: the model keeps its classes, methods
(``forward_features``...), attributes and ``state_dict`` keys, unlike a ``torch.fx.GraphModule``.

Tracing fixes Python values read by ``forward`` (flags, constants) at their values
at the time of the swap, except ``self.training``: the module is traced in both modes and the
generated forward picks the graph for the current mode. A rewritten instance cannot be pickled
as a whole (``torch.save(model)``); its ``state_dict`` can.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch.fx as fx
from torch import nn

from . import _registry

CHILD_PREFIX = "functional_act"


class TraceFailure(Exception):
    """A module's forward could not be rewritten; the message says why."""


class _OwnForwardTracer(fx.Tracer):
    """Trace only the root's own forward: every submodule stays a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def rewrite_functional(
    module: nn.Module,
    make_activation: Callable[[], nn.Module],
    classes: dict[tuple, type],
) -> list[tuple[str, str]]:
    """Replace every functional activation in ``module.forward`` by a new child module, and
    switch off the ``inplace=True`` arguments of the other calls.

    Parameters
    ----------
    module
        Rewritten in place.
    make_activation
        Returns a fresh activation module for each call site.
    classes
        Cache of generated subclasses, shared by the modules of one swap so that identical
        rewrites of one class share one subclass.

    Returns
    -------
    list of (child name, function name)
        One entry per call site, in graph order.

    Raises
    ------
    TraceFailure
        timm marks the class as not traceable, or torch.fx cannot trace it.
    """
    cls = type(module)
    notrace_modules, notrace_functions = _registry.timm_notrace()
    if isinstance(module, notrace_modules):
        raise TraceFailure(f"timm marks {cls.__name__} as not traceable")
    graphs = _trace_both_modes(module, notrace_functions)
    activation_nodes = {
        mode: [n for n in g.nodes if _function_name(n)] for mode, g in graphs.items()
    }
    count = max(len(nodes) for nodes in activation_nodes.values())
    if not count:
        raise TraceFailure(f"torch.fx sees no activation call in {cls.__name__}.forward")
    names = _free_names(module, count)
    sites: dict[str, str] = {}
    for mode, graph in graphs.items():
        for name, node in zip(names, activation_nodes[mode]):
            sites.setdefault(name, _function_name(node))
            _replace_with_module(graph, node, name)
        _switch_off_inplace(graph)
        graph.lint()
        _check_attributes(module, graph, set(names))
    for name in sites:
        module.add_module(name, make_activation())
    modules = {mode: fx.GraphModule(module, graph, cls.__name__) for mode, graph in graphs.items()}
    key = (cls, modules[True].code, modules[False].code)
    if key not in classes:
        forwards = type(modules[True]).forward, type(modules[False]).forward
        classes[key] = _subclass(cls, *forwards, same=key[1] == key[2])
    module.__class__ = classes[key]
    return list(sites.items())


def _trace_both_modes(module: nn.Module, autowrap: tuple) -> dict[bool, fx.Graph]:
    modes = {m: m.training for m in module.modules()}
    try:
        graphs = {}
        for training in (True, False):
            module.train(training)
            graphs[training] = _OwnForwardTracer(autowrap_functions=autowrap).trace(module)
        return graphs
    except Exception as error:  # fx raises many types; all mean "cannot trace"
        raise TraceFailure(
            f"torch.fx cannot trace {type(module).__name__}.forward "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    finally:
        for m, training in modes.items():
            m.training = training


def _function_name(node: fx.Node) -> str | None:
    if node.op == "call_function":
        return _registry.FUNCTIONAL_ACTIVATIONS.get(node.target)
    if node.op == "call_method":
        return _registry.FUNCTIONAL_METHODS.get(node.target)
    return None


def _free_names(module: nn.Module, count: int) -> list[str]:
    names, index = [], 0
    while len(names) < count:
        name = f"{CHILD_PREFIX}{index}"
        if not hasattr(module, name):
            names.append(name)
        index += 1
    return names


def _replace_with_module(graph: fx.Graph, node: fx.Node, target: str) -> None:
    source = node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))
    with graph.inserting_before(node):
        new = graph.call_module(target, (source,))
    node.replace_all_uses_with(new)
    if _is_inplace(node) and isinstance(source, fx.Node):
        _read_result_after(graph, node, source, new)
    graph.erase_node(node)


def _switch_off_inplace(graph: fx.Graph) -> None:
    """Give ``inplace=False`` to every call with ``inplace=True``."""
    for node in list(graph.nodes):
        bound = _bind(node)
        if bound is None or bound.arguments.get("inplace") is not True:
            continue
        bound.arguments["inplace"] = False
        node.args, node.kwargs = bound.args, bound.kwargs
        source = next(iter(bound.arguments.values()))
        if isinstance(source, fx.Node):
            _read_result_after(graph, node, source, node)


def _read_result_after(graph: fx.Graph, node: fx.Node, source: fx.Node, result: fx.Node) -> None:
    """Make the nodes after ``node`` read ``result`` instead of ``source``.

    Code after an in-place call reads its result through its input ``source``; once the call is
    out of place, that result is ``result``.
    """
    order = {n: i for i, n in enumerate(graph.nodes)}
    for user in list(source.users):
        if user is not result and order[user] > order[node]:
            user.replace_input_with(source, result)


def _bind(node: fx.Node) -> inspect.BoundArguments | None:
    """The arguments of a ``call_function`` node by name; None without a Python signature."""
    if node.op != "call_function":
        return None
    try:
        return inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):  # builtins without a signature
        return None


def _is_inplace(node: fx.Node) -> bool:
    if _function_name(node).endswith("_"):
        return True
    bound = _bind(node)
    return bool((node.kwargs if bound is None else bound.arguments).get("inplace", False))


def _check_attributes(module: nn.Module, graph: fx.Graph, new: set[str]) -> None:
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module") and node.target not in new:
            owner = module
            for part in node.target.split("."):
                if not hasattr(owner, part):
                    raise TraceFailure(
                        f"the traced {type(module).__name__}.forward uses {node.target!r}, "
                        "which the module does not have"
                    )
                owner = getattr(owner, part)


def _subclass(cls: type, train_forward: Callable, eval_forward: Callable, same: bool) -> type:
    if same:
        forward = train_forward
    else:

        def forward(self, *args, **kwargs):
            return (train_forward if self.training else eval_forward)(self, *args, **kwargs)

    return type(
        cls.__name__,
        (cls,),
        {"forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
    )
