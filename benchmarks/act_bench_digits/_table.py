"""The loader of Act-Bench-Digits: result tables as numpy columns, looked up by any member name."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np

from benchmarks.act_bench_digits._files import (
    ARCHITECTURES,
    BOOL_COLUMNS,
    DATA_DIR,
    GROUPS_FILE,
    INT_COLUMNS,
    MAIN_SEED,
    SPACE_SCHEMAS,
    build_command,
    columns_of,
    metric_of,
    read_rows,
    result_paths,
)


class IncompleteBenchmarkError(RuntimeError):
    """A result file lacks some of the functions it should hold (its build is not finished)."""


@dataclass(frozen=True, eq=False)
class ActBenchTable:
    """One Act-Bench-Digits result table: one row per function, in space order.

    Columns (numpy arrays, read-only) by ``table["val_acc"]`` or ``table.val_acc``; one row as a
    dict by ``table[i]`` (row position) or ``table.lookup(expression)`` (any member name of the
    function's equivalence group, or any expression computing the same function).
    """

    arch: str
    seed: int
    data: Mapping[str, np.ndarray] = field(repr=False)
    groups: tuple[tuple[str, ...], ...] = field(repr=False)
    meta: Mapping = field(repr=False)
    complete: bool = True
    _space_index_of_name: Mapping[str, int] = field(repr=False, default_factory=dict)
    _position_of_space_index: Mapping[int, int] = field(repr=False, default_factory=dict)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.data)

    @property
    def expressions(self) -> tuple[str, ...]:
        """The representative expression of every row's function."""
        return tuple(str(e) for e in self.data["expression"])

    @property
    def score_column(self) -> str:
        """``val_acc`` (validation accuracy) or, for ``regression``, ``val_score``."""
        return f"val_{metric_of(self.arch)}"

    @property
    def score(self) -> np.ndarray:
        """The main score, after the last epoch: the column ``score_column``."""
        return self.data[self.score_column]

    def __len__(self) -> int:
        return len(self.data["index"])

    def __getitem__(self, key: str | int) -> np.ndarray | dict:
        if isinstance(key, str):
            try:
                return self.data[key]
            except KeyError:
                raise KeyError(
                    f"no column {key!r}; the columns are {', '.join(self.data)}"
                ) from None
        return {name: _scalar(values[key]) for name, values in self.data.items()}

    def __getattr__(self, name: str) -> np.ndarray:
        data = self.__dict__.get("data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __contains__(self, expression: object) -> bool:
        if not isinstance(expression, str):
            return False
        try:
            self.position(expression)
        except (KeyError, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        state = "" if self.complete else ", incomplete"
        return f"ActBenchTable({self.arch!r}, seed={self.seed}, {len(self)} functions{state})"

    def position(self, expression: str) -> int:
        """Row position of the function of ``expression`` (any member, or an equivalent).

        Raises KeyError if it computes no function of the space, or one this table lacks.
        """
        index = self.space_index(expression)
        if index not in self._position_of_space_index:
            raise KeyError(
                f"{expression!r} is function {index} of the space ({self.groups_of(index)[0]}), "
                f"which this table ({self!r}) does not hold"
            )
        return self._position_of_space_index[index]

    def lookup(self, expression: str) -> dict:
        """The row (a dict of column values) of the function that ``expression`` computes."""
        return self[self.position(expression)]

    def value(self, expression: str, column: str | None = None) -> float:
        """One value of the function of ``expression``, the main score by default."""
        return self.lookup(expression)[column or self.score_column]

    def members(self, expression: str) -> tuple[str, ...]:
        """All member names of the equivalence group of ``expression``."""
        return self.groups_of(self.space_index(expression))

    def groups_of(self, space_index: int) -> tuple[str, ...]:
        return self.groups[space_index]

    def space_index(self, expression: str) -> int:
        """Index in the 2,918-function space of the function ``expression`` computes."""
        name = "".join(expression.split())
        if name in self._space_index_of_name:
            return self._space_index_of_name[name]
        from optuna_aquasurf import canonical

        name = canonical(expression)
        if name in self._space_index_of_name:
            return self._space_index_of_name[name]
        # Not a member name: find the function with the same outputs at the probe points.
        space = _paper_space()
        index = space.find_equivalent(expression)
        if index is not None:
            for member in space[index].equivalents:
                if member in self._space_index_of_name:
                    return self._space_index_of_name[member]
        raise KeyError(f"{expression!r} computes none of the {len(self.groups)} functions")


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


@lru_cache(maxsize=1)
def _paper_space():
    from optuna_aquasurf import PAPER_UNARY, SearchSpace

    return SearchSpace.from_schemas(SPACE_SCHEMAS, unary=PAPER_UNARY)


@lru_cache(maxsize=4)
def _read_groups(path: Path, mtime: float) -> tuple[str, tuple[tuple[str, ...], ...]]:
    with gzip.open(path, "rt") as f:
        header = f.readline()
        groups = []
        for number, line in enumerate(f):
            index, *members = line.rstrip("\n").split("\t")
            if int(index) != number:
                raise ValueError(f"{path}: line {number + 2} holds index {index}, not {number}")
            groups.append(tuple(members))
    return header, tuple(groups)


def load_act_bench_digits(
    arch: str = "cnn",
    seed: int = MAIN_SEED,
    *,
    data_dir: str | Path | None = None,
    allow_incomplete: bool = False,
) -> ActBenchTable:
    """Load the Act-Bench-Digits table of one architecture (``"cnn"``, ``"vit"``, ``"resnet"``,
    ``"regression"``).

    ``seed=1`` is the main table (all 2,918 functions); another seed loads the noise re-runs of
    that seed (100 functions). Raises FileNotFoundError if the table was never built and
    IncompleteBenchmarkError if its build is not finished (unless ``allow_incomplete``), each
    with the command that builds it.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    csv_path, meta_path = result_paths(arch, seed, data_dir)
    command = build_command(arch, seed, data_dir)
    if not csv_path.exists() or not meta_path.exists():
        missing = csv_path if not csv_path.exists() else meta_path
        raise FileNotFoundError(
            f"Act-Bench-Digits has no {missing.name} in {data_dir} ({arch}, seed {seed}); "
            f"build it from the repository root with: {command}"
        )
    meta = json.loads(meta_path.read_text())
    groups_path = data_dir / GROUPS_FILE
    if not groups_path.exists():
        raise FileNotFoundError(f"{groups_path} is missing; the builder writes it: {command}")
    header, groups = _read_groups(groups_path, groups_path.stat().st_mtime)
    if meta["fingerprint"] not in header:
        raise IncompleteBenchmarkError(
            f"{groups_path.name} holds another version of the space than {csv_path.name} was "
            f"built on (the space was regrouped); remap its rows and train what is missing "
            f"with: {command}"
        )

    columns = columns_of(arch)
    rows = sorted(read_rows(csv_path, columns=columns), key=lambda row: int(row["index"]))
    expected = meta["indices"] if meta["indices"] is not None else range(meta["n_functions"])
    present = {int(row["index"]) for row in rows}
    missing_indices = [i for i in expected if i not in present]
    if missing_indices and not allow_incomplete:
        raise IncompleteBenchmarkError(
            f"{csv_path} holds {len(rows)} of the {len(expected)} functions it should "
            f"({len(missing_indices)} missing, e.g. index {missing_indices[0]}); build the rest "
            f"from the repository root with: {command}  (it resumes where the last run stopped; "
            "unless a build is running now: then wait for it. Or pass allow_incomplete=True to "
            "load what exists)"
        )

    data = {}
    for name in columns:
        values = [row[name] for row in rows]
        if name == "expression":
            array = np.array(values, dtype=str)
        elif name in INT_COLUMNS:
            array = np.array(values, dtype=np.int64)
        elif name in BOOL_COLUMNS:
            array = np.array([v == "1" for v in values], dtype=bool)
        else:
            array = np.array(values, dtype=np.float64)
        array.setflags(write=False)
        data[name] = array
    names = {member: index for index, group in enumerate(groups) for member in group}
    return ActBenchTable(
        arch=arch,
        seed=seed,
        data=MappingProxyType(data),
        groups=groups,
        meta=MappingProxyType(meta),
        complete=not missing_indices,
        _space_index_of_name=MappingProxyType(names),
        _position_of_space_index=MappingProxyType(
            {int(index): position for position, index in enumerate(data["index"])}
        ),
    )
