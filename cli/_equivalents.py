"""The other names of each function of a study's space, kept in the study's store when a search
starts, so that ``aquasurf top`` lists them without building the space (which needs torch)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable

import numpy as np
import optuna

from optuna_aquasurf import __version__
from optuna_aquasurf._private import storage_of
from optuna_aquasurf._store import store_for
from optuna_aquasurf.cli._study_sampler import StudySettings, study_space

#: The store's table of names.
TABLE = "spaces"

#: ``equivalents(expression)``: the other names of the expression's function.
Equivalents = Callable[[str], list[str]]


def _key(settings: StudySettings) -> str:
    """The entry of the space that ``settings`` describe, as this version groups its names."""
    return hashlib.sha256(json.dumps([__version__, settings.space]).encode()).hexdigest()


def save_equivalents(study: optuna.Study, space, also: Iterable[str] = ()) -> None:
    """Keep the names of ``space`` (a :class:`~optuna_aquasurf.SearchSpace`) with their
    function's position, and the position of each expression of ``also`` (baselines spelled
    otherwise) that computes one of its functions."""
    groups = [space[function].equivalents for function in range(len(space))]
    names = [name for group in groups for name in group]
    others = [e for e in also if e not in space]
    found = [(e, space.find_equivalent(e)) for e in others]
    found = [(e, position) for e, position in found if position is not None]
    arrays = [
        np.array(names, dtype=str),
        np.repeat(np.arange(len(groups)), [len(group) for group in groups]),
        np.array([e for e, _ in found], dtype=str),
        np.array([position for _, position in found], dtype=np.int64),
    ]
    store_for(storage_of(study)).save(TABLE, _key(StudySettings.of(study)), arrays)


def equivalents_of(study: optuna.Study) -> Equivalents:
    """The other names in the study's space of an expression's function: from the store, else
    from the space rebuilt (torch); none when the space cannot be rebuilt (an old study, or
    operators of the model file)."""
    settings = StudySettings.of(study)
    stored = None if settings is None else store_for(storage_of(study)).load(TABLE, _key(settings))
    if stored is None:
        space = study_space(study)
        return (lambda expression: []) if space is None else space_equivalents(space)
    names, positions, others, other_positions = (array.tolist() for array in stored)
    members: dict[int, list[str]] = {}
    for name, position in zip(names, positions):
        members.setdefault(position, []).append(name)
    position_of = dict(zip(names + others, positions + other_positions))

    def equivalents(expression: str) -> list[str]:
        position = position_of.get(expression)
        return [] if position is None else [n for n in members[position] if n != expression]

    return equivalents


def space_equivalents(space) -> Equivalents:
    """The other names of a function in ``space`` (a :class:`~optuna_aquasurf.SearchSpace`)."""

    def equivalents(expression: str) -> list[str]:
        try:
            if expression in space:
                function = space.index(expression)
            else:
                function = space.find_equivalent(expression)
        except ValueError:  # an operator this process does not know
            return []
        if function is None:
            return []
        return [name for name in space[function].equivalents if name != expression]

    return equivalents
