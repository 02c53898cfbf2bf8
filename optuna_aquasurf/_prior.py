"""Earlier searches as a prior: their scores read from an Optuna study or a bundled table, on one
scale.

A source is an :class:`optuna.Study` (any storage, either direction), ``"STUDY@STORAGE_URL"``, or
an Act-Bench-Digits table that ships with the package (``"act-bench-digits:cnn"``, ``vit``,
``resnet`` or ``regression``: each of the 2,918 functions of ``binary(unary(x),unary(x))``
trained on scikit-learn digits or a regression task). Sources differ in task, units and
direction, so each one's scores become quantiles, from near 0 (its worst, and every function
that failed or diverged there) to near 1 (its best).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from importlib import resources

import numpy as np
import optuna
from optuna.trial import TrialState

from optuna_aquasurf._expression import canonical
from optuna_aquasurf._private import storage_of, uncached
from optuna_aquasurf._scores import function_scores, maximizes_score, quantiles, trial_score
from optuna_aquasurf._store import masked

#: The prefix of the bundled tables' names, and the tables.
TABLE_PREFIX = "act-bench-digits:"
TABLES = ("cnn", "vit", "resnet", "regression")

Source = optuna.Study | str


def check_source(source: Source) -> None:
    """Raise ValueError (TypeError for other objects) for a source that names nothing readable,
    without reading it."""
    if isinstance(source, optuna.Study):
        return
    if not isinstance(source, str):
        raise TypeError(
            f"a prior is an optuna.Study, 'STUDY@STORAGE_URL' or '{TABLE_PREFIX}TABLE', "
            f"not {type(source).__name__}"
        )
    if source.startswith(TABLE_PREFIX):
        if source.removeprefix(TABLE_PREFIX) not in TABLES:
            raise ValueError(
                f"unknown prior table {source!r}; the bundled tables are "
                + ", ".join(TABLE_PREFIX + t for t in TABLES)
            )
        return
    study_name, _, storage = source.partition("@")
    if not study_name or not storage:
        raise ValueError(
            f"prior {source!r} is neither 'STUDY@STORAGE_URL' (e.g. resnet@sqlite:///old.db) "
            f"nor a bundled table ({TABLE_PREFIX}TABLE)"
        )


def source_label(source: Source) -> str:
    """A readable name that tells sources apart: the table's or ``STUDY@STORAGE_URL`` (its
    password, if any, hidden)."""
    if isinstance(source, str):
        if source.startswith(TABLE_PREFIX):
            return source
        study_name, _, storage = source.partition("@")
        return f"{study_name}@{masked(storage)}"
    backend = uncached(storage_of(source))
    where = getattr(backend, "url", None)
    where = masked(where) if where else f"{type(backend).__name__}:{id(backend):x}"
    return f"{source.study_name}@{where}"


def read_source(
    source: Source, find: Callable[[str], int | None], name: str = "activation"
) -> tuple[np.ndarray, np.ndarray]:
    """The functions of the current space that ``source`` scored, and their quantiles.

    Parameters
    ----------
    source
        See the module's documentation.
    find
        The position of the function an expression computes in the current space, or None
        (functions outside the space are left out).
    name
        The user attribute holding a trial's activation in a source study.

    Raises
    ------
    ValueError
        When the source cannot be read or holds no scored activation.
    """
    check_source(source)
    if isinstance(source, str) and source.startswith(TABLE_PREFIX):
        results, maximize = _table_results(source.removeprefix(TABLE_PREFIX))
    else:
        study = _load_study(source) if isinstance(source, str) else source
        results, maximize = _study_results(study, name)
    located = [(find(canonical(e)), score, failed) for e, score, failed in results]
    located = [(f, score, failed) for f, score, failed in located if f is not None]
    functions, scores = function_scores(located, maximize)
    scored = [f for f, score, _ in located if score is not None]
    failed_only = ~np.isin(functions, scored)
    scores[failed_only] = -np.inf if maximize else np.inf  # below every scored function
    if len(functions) == 0:
        raise ValueError(
            f"prior {source_label(source)} holds no scored activation of this search space "
            f"({len(results)} with a {name!r} attribute)"
        )
    return functions, quantiles(scores, maximize)


def _load_study(source: str) -> optuna.Study:
    study_name, _, storage = source.partition("@")
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        summaries = optuna.get_all_study_summaries(storage)
        names = ", ".join(s.study_name for s in summaries) or "none"
        raise ValueError(
            f"prior {source_label(source)}: no study {study_name!r} there (its studies: {names})"
        ) from None
    except Exception as error:  # a bad URL, a missing file, a database that refuses
        label = source_label(source)
        raise ValueError(f"prior {label}: cannot open its storage: {error}") from None


def _study_results(study: optuna.Study, name: str) -> tuple[list, bool]:
    """(expression, score, failed) of every trial of ``study`` with an activation."""
    maximize = maximizes_score(study)
    results = [
        (t.user_attrs[name], trial_score(t), t.state == TrialState.FAIL)
        for t in study.get_trials(deepcopy=False)
        if name in t.user_attrs
    ]
    return results, maximize


def _table_results(table: str) -> tuple[list, bool]:
    """(expression, score, diverged) of every function of a bundled table (scores: higher is
    better)."""
    data = resources.files("optuna_aquasurf").joinpath(f"_data/act_bench_digits/{table}.csv.gz")
    with gzip.open(io.BytesIO(data.read_bytes()), "rt") as f:
        rows = list(csv.DictReader(f))
    results = [
        (row["expression"], float(row["score"]) if row["score"] else None, not row["score"])
        for row in rows
    ]
    return results, True
