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

#: Spaces of more names are not kept (their entry would weigh megabytes): ``top`` then rebuilds
#: the space.
MAX_KEPT_NAMES = 100_000

#: ``equivalents(expression)``: the other names of the expression's function.
Equivalents = Callable[[str], list[str]]


def _key(settings: StudySettings) -> str:
    """The entry of the space that ``settings`` describe, as this version groups its names."""
    return hashlib.sha256(json.dumps([__version__, settings.space]).encode()).hexdigest()


def save_equivalents(study: optuna.Study, space, also: Iterable[str] = ()) -> None:
    """Keep the names of ``space`` (a :class:`~optuna_aquasurf.SearchSpace`) with their
    function's position, and the position of each expression of ``also`` (baselines spelled
    otherwise) that computes one of its functions; once per space, and not for spaces of more
    than :data:`MAX_KEPT_NAMES` names."""
    store, key = store_for(storage_of(study)), _key(StudySettings.of(study))
    if space.n_names > MAX_KEPT_NAMES or store.load(TABLE, key) is not None:
        return
    groups = [space[function].equivalents for function in range(len(space))]
    names = [name for group in groups for name in group]
    others = [e for e in also if e not in space]
    found = [(e, space.find_equivalent(e)) for e in others]
    found = [(e, position) for e, position in found if position is not None]
    arrays = [
        _encoded(names),
        np.repeat(np.arange(len(groups)), [len(group) for group in groups]),
        _encoded([e for e, _ in found]),
        np.array([position for _, position in found], dtype=np.int64),
    ]
    store.save(TABLE, key, arrays)


def _encoded(names: list[str]) -> np.ndarray:
    """Names as an array of UTF-8 bytes (a byte a character, where numpy's strings take four)."""
    return np.array([name.encode() for name in names], dtype=bytes)


def equivalents_of(study: optuna.Study) -> Equivalents:
    """The other names in the study's space of an expression's function: from the store, else
    from the space rebuilt (torch); none when the space cannot be rebuilt (an old study, or
    operators of the model file)."""
    settings = StudySettings.of(study)
    stored = None if settings is None else store_for(storage_of(study)).load(TABLE, _key(settings))
    if stored is None:
        space = study_space(study)
        return (lambda expression: []) if space is None else space_equivalents(space)
    names, others = ([name.decode() for name in stored[i].tolist()] for i in (0, 2))
    positions, other_positions = stored[1].tolist(), stored[3].tolist()
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
