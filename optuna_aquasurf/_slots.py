"""Enumerators of expression families: the machinery under :class:`SearchSpace`.

A slot stands for a family of expressions, such as ``binary(unary(x),unary(x))``, that it numbers
0..size-1 and evaluates in batches on the probe points. Families that are small enough keep their
outputs, so each sub-expression (every ``unary(x)``, say) is computed once however often it is
reused by larger families.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from optuna_aquasurf._expression import Expression, X, evaluate
from optuna_aquasurf._operators import get_operator
from optuna_aquasurf._probe_points import (
    EVALUATION_WIDTH,
    N_PROBE_POINTS,
    evaluation_points,
    probe_points,
)

#: Families whose outputs fit in this many bytes keep them.
CACHE_BYTES = 64 * 2**20


class Slot(ABC):
    """A numbered family of expressions."""

    size: int

    @abstractmethod
    def expression(self, i: int) -> Expression:
        """Member ``i``."""

    @abstractmethod
    def locate(self, node: Expression) -> int | None:
        """The number of ``node`` in this family, or None if it is not a member."""

    @abstractmethod
    def outputs(self, index: np.ndarray) -> torch.Tensor:
        """Outputs of the members ``index``: rows of the width of :func:`evaluation_points`
        whose first 1,000 columns hold the float32 outputs at the probe points."""


class InputSlot(Slot):
    """The family holding ``x`` alone."""

    size = 1

    def expression(self, i: int) -> Expression:
        return X

    def locate(self, node: Expression) -> int | None:
        return 0 if node == X else None

    def outputs(self, index: np.ndarray) -> torch.Tensor:
        return evaluation_points().expand(len(index), -1)


class CallSlot(Slot):
    """``op(child_1, ..., child_k)`` for every op of ``ops`` and every member of each child."""

    def __init__(self, ops: Sequence[str], children: Sequence[Slot]):
        self.ops = tuple(ops)
        self.children = tuple(children)
        self._op_index = {op: k for k, op in enumerate(self.ops)}
        self._radices = [len(self.ops)] + [c.size for c in self.children]
        self.size = math.prod(self._radices)
        self._cache: torch.Tensor | None = None
        if self.size * EVALUATION_WIDTH * 4 <= CACHE_BYTES:
            self._cache = self.outputs(np.arange(self.size))

    def _digits(self, index: np.ndarray) -> list[np.ndarray]:
        """Mixed-radix digits of ``index``: the op number, then each child's member number."""
        digits = []
        rest = np.asarray(index, dtype=np.int64)
        for radix in reversed(self._radices):
            digits.append(rest % radix)
            rest = rest // radix
        return digits[::-1]

    def expression(self, i: int) -> Expression:
        op, *members = (int(d[0]) for d in self._digits(np.array([i])))
        return Expression(
            self.ops[op], tuple(c.expression(m) for c, m in zip(self.children, members))
        )

    def locate(self, node: Expression) -> int | None:
        op = self._op_index.get(node.op)
        if op is None or len(node.args) != len(self.children):
            return None
        number = op
        for child, arg in zip(self.children, node.args):
            member = child.locate(arg)
            if member is None:
                return None
            number = number * child.size + member
        return number

    def outputs(self, index: np.ndarray) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[torch.from_numpy(np.asarray(index, dtype=np.int64))]
        # Rows sorted by operator (consecutive names mostly share one), so that each operator
        # is applied to one slice of rows.
        order = np.argsort(self._digits(index)[0], kind="stable")
        op_numbers, *members = self._digits(np.asarray(index)[order])
        args = [child.outputs(m) for child, m in zip(self.children, members)]
        out = torch.empty(len(order), EVALUATION_WIDTH)
        starts = np.flatnonzero(np.diff(op_numbers, prepend=-1))
        for start, stop in zip(starts, [*starts[1:], len(order)]):
            function = get_operator(self.ops[op_numbers[start]]).function
            with torch.no_grad():
                out[start:stop, :N_PROBE_POINTS] = function(
                    *(a[start:stop, :N_PROBE_POINTS] for a in args)
                )
        unsorted = torch.empty_like(out)
        unsorted[torch.from_numpy(order)] = out
        return unsorted


class ListSlot(Slot):
    """An explicit list of expressions."""

    def __init__(self, trees: Sequence[Expression]):
        self.trees = tuple(trees)
        self.size = len(self.trees)
        self._numbers = {tree: i for i, tree in enumerate(self.trees)}

    def expression(self, i: int) -> Expression:
        return self.trees[i]

    def locate(self, node: Expression) -> int | None:
        return self._numbers.get(node)

    def outputs(self, index: np.ndarray) -> torch.Tensor:
        x = probe_points()
        memo: dict[Expression, torch.Tensor] = {}
        out = torch.empty(len(index), EVALUATION_WIDTH)
        with torch.no_grad():
            for row, i in enumerate(index):
                out[row, :N_PROBE_POINTS] = evaluate(self.trees[i], x, memo)
        return out
