"""What an activation function costs: its forward and backward time, relative to relu's.

A function found by the search has to run in the user's network afterwards. Its cost is the time
of one forward and one backward pass of the activation alone on a tensor of
:data:`COST_ELEMENTS` elements, over relu's on the same device and dtype (on the CPU, one
thread: two threads wait for each other whenever another process holds a core), measured
(:func:`measure_costs`) or, for spaces too large to time, estimated from its operators
(:func:`estimated_cost`).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from optuna_aquasurf._expression import Expression, evaluate, parse
from optuna_aquasurf._probe_points import reference_arithmetic

if TYPE_CHECKING:
    from optuna_aquasurf._store import Store

#: Elements of the tensor a cost is measured on.
COST_ELEMENTS = 2**16
#: Timings of each function; the fastest counts (5 rather than 3: measurements beside another
#: busy process agree better).
COST_REPEATS = 5
#: Functions timed between two timings of relu (the reference follows the machine's load).
RELU_EVERY = 64
#: Timings of relu per timing of a function: the reference must not be a slow one.
RELU_REPEATS = 4
#: Forward and backward time of each built-in operator applied to ``x``, over relu's: measured
#: on the CPU with ``python benchmarks/bench_cost.py --operators``.
OPERATOR_COSTS: dict[str, float] = {
    "zero": 0.13,
    "one": 0.13,
    "identity": 0.52,
    "negative": 0.90,
    "abs": 1.23,
    "reciprocal": 1.61,
    "square": 1.70,
    "exp": 1.06,
    "erf": 2.78,
    "erfc": 2.69,
    "sinh": 28.89,
    "cosh": 29.27,
    "tanh": 1.19,
    "expm1": 2.59,
    "sigmoid": 1.34,
    "log_sigmoid": 2.70,
    "arcsinh": 26.44,
    "arctan": 1.92,
    "bessel_i0e": 27.09,
    "bessel_i1e": 31.50,
    "relu": 1.08,
    "elu": 2.75,
    "selu": 2.67,
    "swish": 1.70,
    "softplus": 3.00,
    "softsign": 4.12,
    "hard_sigmoid": 4.62,
    "elish": 22.07,
    "leakyrelu": 1.11,
    "mish": 10.70,
    "gelu": 2.45,
    "add": 1.04,
    "sub": 1.26,
    "mul": 1.29,
    "div": 2.62,
    "pow": 26.24,
    "max": 8.77,
    "min": 8.94,
    "sum_n": 1.37,
    "prod_n": 2.81,
    "max_n": 18.52,
    "min_n": 15.93,
}
#: The cost counted for an operator not in :data:`OPERATOR_COSTS` (a registered one).
UNKNOWN_OPERATOR_COST = 4.0


def estimated_cost(expression: str | Expression) -> float:
    """The cost of a function estimated without timing it: the sum of the costs of its
    operators (:data:`OPERATOR_COSTS`), each counted as often as it appears."""
    node = parse(expression) if isinstance(expression, str) else expression
    if not node.args:
        return 0.0
    own = OPERATOR_COSTS.get(node.op, UNKNOWN_OPERATOR_COST)
    return own + sum(estimated_cost(arg) for arg in node.args)


def stored_costs(
    store: Store,
    expressions: Sequence[str],
    device: str | torch.device = "cpu",
    measure: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> np.ndarray:
    """The costs of ``expressions`` on ``device`` (float32), measured once by
    :func:`measure_costs` (or ``measure``) and kept in ``store`` per kind of device, so that
    every worker and resumed run of a study on that kind uses the same."""
    identity = "\n".join([f"{device_kind(device)}|float32|{COST_ELEMENTS}", *expressions])
    key = hashlib.sha256(identity.encode()).hexdigest()
    measure = measure or functools.partial(measure_costs, device=device)
    return store.compute_once("costs", key, lambda: [measure(expressions)])[0]


def device_kind(device: str | torch.device) -> str:
    """What a cost measured on ``device`` holds for: ``"cpu1"`` (one thread of any CPU), or the
    name of the accelerator (``torch.cuda.get_device_name``)."""
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu1"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


@functools.lru_cache(maxsize=4096)
def measured_cost(expression: str, device: str = "cpu") -> float:
    """The measured cost of one function on ``device`` (float32), measured once per process."""
    return float(measure_costs([expression], device)[0])


def measure_costs(
    expressions: Sequence[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    elements: int = COST_ELEMENTS,
    repeats: int = COST_REPEATS,
) -> np.ndarray:
    """The measured cost of each expression: its fastest of ``repeats`` forward and backward
    passes on ``elements`` standard normal inputs, over relu's measured just before (every
    :data:`RELU_EVERY` functions)."""
    generator = torch.Generator(device=device).manual_seed(0)  # the global RNG is the user's
    x = torch.randn(elements, device=device, dtype=dtype, generator=generator).requires_grad_()
    relu = parse("relu(x)")
    costs = np.empty(len(expressions))
    reference = 1.0
    _settle_vector_math(x)
    with reference_arithmetic():  # one thread
        for i, expression in enumerate(expressions):
            if i % RELU_EVERY == 0:
                reference = _fastest_pass(relu, x, RELU_REPEATS * repeats)
            costs[i] = _fastest_pass(parse(expression), x, repeats) / reference
    return costs


def _settle_vector_math(x: torch.Tensor) -> None:
    """Bring the process's vectorised math to the state it keeps once ``pow`` has run on a full
    vector: on some CPUs ``expm1``, ``elu`` and kin then run 4 times faster for the rest of the
    process (seen on an AMD EPYC with torch 2.14). Every measurement then starts from that state,
    whatever the process computed before (building a space with ``pow`` does the same)."""
    with torch.no_grad():
        torch.pow(x[:1024], x[:1024])


def _fastest_pass(node: Expression, x: torch.Tensor, repeats: int) -> float:
    """The fastest of ``repeats`` forward and backward passes of ``node`` on ``x``, seconds (the
    first, which warms caches up, not counted)."""
    fastest = float("inf")
    for attempt in range(repeats + 1):
        _synchronize(x.device)
        start = time.perf_counter()
        y = evaluate(node, x)
        if y.requires_grad:  # not for constants such as zero(x)
            y.backward(torch.ones_like(y))
        _synchronize(x.device)
        if attempt > 0:
            fastest = min(fastest, time.perf_counter() - start)
        x.grad = None
    return fastest


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
