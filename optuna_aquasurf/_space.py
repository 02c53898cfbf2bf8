"""Search spaces: candidate activation functions, grouped by what they compute."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from optuna_aquasurf._expression import (
    Expression,
    ExpressionError,
    arity_problem,
    check_operator_call,
    parse,
    unknown_name_message,
)
from optuna_aquasurf._operators import NARY, get_operator, operator_names
from optuna_aquasurf._probe_points import EVALUATION_WIDTH, N_PROBE_POINTS, reference_arithmetic
from optuna_aquasurf._slots import CallSlot, InputSlot, ListSlot, Slot

#: Near twins (:meth:`SearchSpace.near_twins`): outputs within ``atol + rtol * |b|`` at every
#: probe point, a few float32 roundings apart (swish(x) and mul(sigmoid(x),x) differ by at most
#: 2.4e-7).
TWIN_RTOL = 1e-5
TWIN_ATOL = 1e-6
#: Probe points on which candidate pairs of near twins are looked for, before all are checked.
TWIN_SAMPLE_POINTS = 16
#: Placeholder words of schemas and the arity of the operators they stand for.
SCHEMA_WORDS = {"unary": 1, "binary": 2, "n-ary": NARY}


@dataclass(frozen=True)
class Candidate:
    """One function of a search space.

    Attributes
    ----------
    index
        Position in the space.
    expression
        The representative name: the first member in enumeration order.
    equivalents
        Every member name of the group, the representative first.
    finite
        Whether the function is finite at all probe points.
    """

    index: int
    expression: str
    equivalents: tuple[str, ...]
    finite: bool


class SearchSpace:
    """Candidate activation functions, with functionally equivalent names grouped into one.

    Build one with :meth:`from_schemas` or :meth:`from_expressions`. Names whose float32 outputs
    at the 1,000 probe points are bitwise identical form one function (so, as in the published
    figures, ``-0.0`` differs from ``0.0``);
    functions are ordered by their first name in enumeration order, the same in every process.

    Examples
    --------
    >>> from optuna_aquasurf import PAPER_UNARY, SearchSpace
    >>> space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
    >>> len(space), space.n_names
    (2918, 5103)
    >>> space["add(relu(x),tanh(x))"].equivalents
    ('add(tanh(x),relu(x))', 'add(relu(x),tanh(x))')
    """

    def __init__(self, slots: Sequence[Slot], description: str, batch_size: int = 8192):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._slots = tuple(slots)
        self._offsets = np.cumsum([0] + [s.size for s in self._slots])
        self.description = description
        self.n_names = int(self._offsets[-1])
        if self.n_names == 0:
            raise ValueError("the search space is empty")
        self._batch_size = batch_size
        self._group_of_name = np.empty(self.n_names, dtype=np.int64)
        self._digests: dict[bytes, int] = {}
        representatives: list[int] = []
        finite: list[bool] = []
        for start in range(0, self.n_names, batch_size):
            names = np.arange(start, min(start + batch_size, self.n_names))
            outputs = self._name_outputs(names).contiguous()
            ok = torch.isfinite(outputs).all(dim=1).tolist()
            for name, digest, is_finite in zip(names.tolist(), _row_digests(outputs), ok):
                group = self._digests.setdefault(digest, len(representatives))
                if group == len(representatives):
                    representatives.append(name)
                    finite.append(is_finite)
                self._group_of_name[name] = group
        self._representatives = np.array(representatives, dtype=np.int64)
        self.finite = np.array(finite, dtype=bool)

    @classmethod
    def from_schemas(
        cls,
        schemas: Sequence[str],
        unary: Sequence[str] | None = None,
        binary: Sequence[str] | None = None,
        nary: Sequence[str] | None = None,
        batch_size: int = 8192,
    ) -> SearchSpace:
        """All expressions that fit the schemas, such as ``"binary(unary(x),unary(x))"``.

        Parameters
        ----------
        schemas
            Expressions whose placeholders ``unary``, ``binary`` and ``n-ary`` stand for every
            operator of that kind; concrete operators may appear too (``"add(unary(x),x)"``).
        unary, binary, nary
            The operators each placeholder ranges over; all registered ones by default.
        batch_size
            Names evaluated at once while grouping.
        """
        if isinstance(schemas, str):
            schemas = [schemas]
        choices = {
            "unary": _operator_subset("unary", unary, 1),
            "binary": _operator_subset("binary", binary, 2),
            "n-ary": _operator_subset("nary", nary, NARY),
        }
        trees = [parse(s, _check_schema_call) for s in schemas]
        if not trees:
            raise ValueError("give at least one schema")
        shared: dict[Expression, Slot] = {}
        with reference_arithmetic():
            slots = [_slot_of(tree, choices, shared) for tree in trees]
        # Only the lists of the placeholders used: registering an operator elsewhere must not
        # change the identity of this space.
        used = {node.op for node in shared}
        lists = "".join(f"; {k}={','.join(v)}" for k, v in choices.items() if k in used)
        description = f"schemas={'|'.join(str(t) for t in trees)}{lists}"
        return cls(slots, description, batch_size)

    @classmethod
    def from_expressions(cls, expressions: Sequence[str], batch_size: int = 8192) -> SearchSpace:
        """A space of the given expressions, such as ``["relu(x)", "mul(x,sigmoid(x))"]``."""
        if isinstance(expressions, str):
            expressions = [expressions]
        trees = list(dict.fromkeys(parse(e) for e in expressions))
        if not trees:
            raise ValueError("give at least one expression")
        description = "expressions=" + "|".join(str(t) for t in trees)
        return cls([ListSlot(trees)], description, batch_size)

    def __len__(self) -> int:
        return len(self._representatives)

    def __iter__(self) -> Iterator[Candidate]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key: int | str) -> Candidate:
        """The function at a position, or the group of a member expression."""
        index = self.index(key) if isinstance(key, str) else int(key)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {key} is out of range for a space of {len(self)} functions")
        index %= len(self)
        members = self._members[self._member_bounds[index] : self._member_bounds[index + 1]]
        names = tuple(self._name(int(m)) for m in members)
        return Candidate(index, names[0], names, bool(self.finite[index]))

    def __contains__(self, expression: object) -> bool:
        if not isinstance(expression, str):
            return False
        try:
            return self._locate(parse(expression)) is not None
        except ExpressionError:
            return False

    def __repr__(self) -> str:
        return f"SearchSpace({len(self)} functions, {self.n_names} names)"

    def index(self, expression: str) -> int:
        """Position of the function that the member ``expression`` belongs to.

        Raises
        ------
        ExpressionError
            If the expression is malformed.
        KeyError
            If it is not a member name of this space (see :meth:`find_equivalent`).
        """
        name = self._locate(parse(expression))
        if name is None:
            raise KeyError(f"{expression!r} is not a member of this search space")
        return int(self._group_of_name[name])

    def find_equivalent(self, expression: str) -> int | None:
        """Position of the function that computes the same outputs as ``expression``, if any."""
        with reference_arithmetic():
            outputs = ListSlot([parse(expression)]).outputs(np.array([0]))[:, :N_PROBE_POINTS]
        return self._digests.get(next(iter(_row_digests(outputs))))

    @property
    def expressions(self) -> list[str]:
        """The representative expression of every function, in order."""
        return [self._name(int(n)) for n in self._representatives]

    def outputs(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Float32 outputs of functions (all by default) at the probe points, one row each."""
        chosen = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        names = self._representatives[chosen]
        out = torch.empty(len(names), N_PROBE_POINTS)  # filled in batches: held once
        for i in range(0, len(names), self._batch_size):
            out[i : i + self._batch_size] = self._name_outputs(names[i : i + self._batch_size])
        return out

    def near_twins(self, rtol: float = TWIN_RTOL, atol: float = TWIN_ATOL) -> list[list[int]]:
        """The groups of functions whose outputs differ only by float rounding: at every probe
        point ``|a - b| <= atol + rtol * |b|`` between two members (finite functions only; the
        exact grouping stays as it is). Each group is sorted, groups by their first member.

        A member is joined to a group through any member within the tolerance, so a group may
        hold a chain of near-equal functions.

        Examples
        --------
        >>> from optuna_aquasurf import SearchSpace
        >>> space = SearchSpace.from_expressions(["swish(x)", "mul(sigmoid(x),x)", "tanh(x)"])
        >>> space.near_twins()
        [[0, 1]]
        """
        from scipy.cluster.hierarchy import DisjointSet
        from scipy.spatial import cKDTree

        finite = np.flatnonzero(self.finite)
        sample = np.linspace(0, N_PROBE_POINTS - 1, TWIN_SAMPLE_POINTS).astype(np.int64)
        # On the asinh scale a relative difference is an absolute one: near twins are within
        # atol + rtol of each other at every point, so a kd-tree finds all candidate pairs.
        coarse = np.arcsinh(self.outputs(finite)[:, sample].double().numpy())
        candidates = cKDTree(coarse).query_pairs(atol + rtol, p=np.inf, output_type="ndarray")
        twins = DisjointSet(range(len(finite)))
        for start in range(0, len(candidates), self._batch_size):
            pairs = candidates[start : start + self._batch_size]
            a = self.outputs(finite[pairs[:, 0]])
            b = self.outputs(finite[pairs[:, 1]])
            for i, j in pairs[are_near_twins(a, b, rtol, atol).numpy()]:
                twins.merge(int(i), int(j))
        groups = [sorted(int(finite[i]) for i in group) for group in twins.subsets()]
        return sorted(group for group in groups if len(group) > 1)

    @cached_property
    def fingerprint(self) -> str:
        """A hex digest that changes whenever the names, groups or their order change."""
        digest = hashlib.sha256(self.description.encode())
        digest.update(self._group_of_name.tobytes())
        return digest.hexdigest()

    @cached_property
    def _members(self) -> np.ndarray:
        return np.argsort(self._group_of_name, kind="stable")

    @cached_property
    def _member_bounds(self) -> np.ndarray:
        counts = np.bincount(self._group_of_name, minlength=len(self))
        return np.concatenate([[0], np.cumsum(counts)])

    def _slot_of_name(self, name: int) -> tuple[Slot, int]:
        k = int(np.searchsorted(self._offsets, name, side="right")) - 1
        return self._slots[k], name - int(self._offsets[k])

    def _name(self, name: int) -> str:
        slot, local = self._slot_of_name(name)
        return str(slot.expression(local))

    def _locate(self, tree: Expression) -> int | None:
        for slot, offset in zip(self._slots, self._offsets):
            local = slot.locate(tree)
            if local is not None:
                return int(offset) + local
        return None

    def _name_outputs(self, names: np.ndarray) -> torch.Tensor:
        """Outputs at the probe points of the names with these numbers."""
        slot_numbers = np.searchsorted(self._offsets, names, side="right") - 1
        out = torch.empty(len(names), EVALUATION_WIDTH)
        with reference_arithmetic():
            for k in np.unique(slot_numbers):
                rows = torch.from_numpy(slot_numbers == k)
                out[rows] = self._slots[k].outputs(names[rows.numpy()] - self._offsets[k])
        return out[:, :N_PROBE_POINTS]


def are_near_twins(
    a: torch.Tensor, b: torch.Tensor, rtol: float = TWIN_RTOL, atol: float = TWIN_ATOL
) -> torch.Tensor:
    """Whether each row of outputs ``a`` is a near twin of the same row of ``b`` (see
    :meth:`SearchSpace.near_twins`)."""
    return ((a - b).abs() <= atol + rtol * b.abs()).all(dim=1)


def _row_digests(outputs: torch.Tensor) -> Iterator[bytes]:
    """A 128-bit digest of each row's bytes."""
    data = memoryview(outputs.contiguous().numpy()).cast("B")
    width = outputs.shape[1] * 4
    return (
        hashlib.blake2b(data[i : i + width], digest_size=16).digest()
        for i in range(0, len(data), width)
    )


def _operator_subset(keyword: str, names: Sequence[str] | None, arity) -> tuple[str, ...]:
    available = operator_names(arity)
    if names is None:
        return available
    if isinstance(names, str):
        names = [names]
    names = tuple(dict.fromkeys(names))
    if not names:
        raise ValueError(f"{keyword}= is empty: give at least one operator")
    for name in names:
        operator = get_operator(name)
        if operator is None:
            raise ValueError(f"{keyword}=: {unknown_name_message(name, available)}")
        if operator.arity != arity:
            raise ValueError(f"{keyword}=: '{name}' takes {operator.arity} arguments, not {arity}")
    return names


def _check_schema_call(name: str, n_args: int) -> str | None:
    if name in SCHEMA_WORDS:
        return arity_problem(name, SCHEMA_WORDS[name], n_args)
    if get_operator(name) is None:
        known = tuple(SCHEMA_WORDS) + operator_names()
        return unknown_name_message(name, known).replace("operator", "schema word or operator")
    return check_operator_call(name, n_args)


def _slot_of(
    tree: Expression, choices: dict[str, tuple[str, ...]], shared: dict[Expression, Slot]
) -> Slot:
    if tree not in shared:
        if not tree.args:
            shared[tree] = InputSlot()
        else:
            ops = choices.get(tree.op, (tree.op,))
            shared[tree] = CallSlot(ops, [_slot_of(a, choices, shared) for a in tree.args])
    return shared[tree]
