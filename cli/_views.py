"""Read-only views of a study: ``status``, ``best`` and ``top``, as rich tables or JSON."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._storage import masked
from optuna_aquasurf.cli._trials import count_finished, pending_reruns

#: Equivalent names shown in a table cell before "+N more".
SHOWN_EQUIVALENTS = 1
#: Study user attribute where ``optimize`` keeps the model file, SPACE and seed.
SETTINGS_ATTR = "aquasurf"


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial, or None."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    pick = max if study.direction == StudyDirection.MAXIMIZE else min
    return pick(completed, key=lambda t: t.value)


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """A completed trial for JSON: number, expression, score, params, seconds."""
    return {
        "trial": trial.number,
        "expression": trial.user_attrs.get("activation"),
        "score": trial.value,
        "params": trial.params,
        "seconds": trial.user_attrs.get("seconds"),
    }


def status(study: optuna.Study, url: str) -> dict[str, Any]:
    """Counts of trials by state, progress and the best trial of ``study``."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    return {
        "study": study.study_name,
        "storage": masked(url),
        "direction": study.direction.name.lower(),
        "model_file": study.user_attrs.get(SETTINGS_ATTR, {}).get("file"),
        "trials": {
            state.name.lower(): sum(t.state == state for t in trials) for state in TrialState
        },
        "finished": count_finished(trials),
        "to_run_again": len(pending_reruns(trials)),
        "seconds": round(sum(t.user_attrs.get("seconds", 0.0) for t in trials), 3),
        "best": None if best is None else trial_record(best),
    }


def top(study: optuna.Study, limit: int, space=None) -> list[dict[str, Any]]:
    """The ``limit`` best functions (best trial of each), with their equivalent names.

    ``space`` (a :class:`~optuna_aquasurf.SearchSpace`) gives the equivalents; by default it is
    rebuilt from the study's settings, and without it the equivalents are empty.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    completed.sort(key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)
    best_of: dict[str, FrozenTrial] = {}
    for trial in completed:
        best_of.setdefault(trial.user_attrs.get("activation", "?"), trial)
    rows = list(best_of.values())[:limit]
    if space is None and rows:
        space = study_space(study)
    return [
        {"rank": rank, **trial_record(t), "equivalents": _equivalents(space, t)}
        for rank, t in enumerate(rows, 1)
    ]


def study_space(study: optuna.Study):
    """The search space of the study's last ``optimize`` run, or None if it cannot be rebuilt
    (an old study, or operators registered by the model file)."""
    from optuna_aquasurf import PAPER_UNARY, SearchSpace

    settings = study.user_attrs.get(SETTINGS_ATTR)
    if settings is None:
        return None
    try:
        if settings.get("space") is None:
            return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
        return SearchSpace.from_schemas(settings["space"])
    except ValueError:
        return None


def stored_map_sampler(study: optuna.Study):
    """An :class:`~optuna_aquasurf.AquaSurfSampler` of the study's space with the map stored
    with it: what ``aquasurf plot`` needs, without the model file.

    Raises
    ------
    UserError
        When the study records no map, its space cannot be rebuilt, or the map is not stored.
    """
    from optuna_aquasurf import AquaSurfSampler

    settings = study.user_attrs.get(SETTINGS_ATTR) or {}
    space = study_space(study)
    if "map" not in settings or space is None:
        raise UserError(
            f"Study {study.study_name!r} does not record its map (an older study, or operators "
            "of the model file): give the model file, `aquasurf plot FILE`."
        )
    # Without the model there are no Fisher features: the predictions come from the 2-D map.
    sampler = AquaSurfSampler(
        space, seed=settings.get("seed", 0), map_key=settings["map"], surrogate="map"
    )
    if not sampler.has_embedding(study):
        raise UserError(
            f"The map of study {study.study_name!r} is not stored yet: give the model file, "
            "`aquasurf plot FILE`, to compute it."
        )
    return sampler


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (no colours, no wrapping)."""
    print(json.dumps(data, indent=2))


def print_status(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"Study {escape(data['study'])}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("storage", escape(data["storage"]))
    table.add_row("model file", escape(str(data["model_file"] or "-")))
    table.add_row("direction", data["direction"])
    counts = ", ".join(f"{n} {state}" for state, n in data["trials"].items() if n)
    table.add_row("trials", counts or "none")
    table.add_row("finished", f"{data['finished']} (counted by --n-trials)")
    if data["to_run_again"]:
        table.add_row("to run again", f"{data['to_run_again']} (interrupted or failed by an error)")
    table.add_row("training time", f"{data['seconds'] / 60:.1f} min")
    best = data["best"]
    if best is not None:
        table.add_row("best", f"{best['score']:.6g}  {escape(str(best['expression']))}")
        table.add_row("best trial", str(best["trial"]))
    console.print(table)


def best_record(study: optuna.Study) -> dict[str, Any]:
    """The study's best trial for JSON.

    Raises
    ------
    UserError
        When no trial has completed.
    """
    best = best_trial(study)
    if best is None:
        raise UserError(f"Study {study.study_name!r} has no completed trial yet.")
    record = {"study": study.study_name, "direction": study.direction.name.lower()}
    record.update(trial_record(best))
    return record


def print_best(console: Console, record: dict[str, Any]) -> None:
    """The best expression and its score, then the trial and its parameters."""
    console.print(f"[bold]{escape(str(record['expression']))}[/]")
    console.print(f"score {record['score']:.6g} ({record['direction']}), trial {record['trial']}")
    for name, value in record["params"].items():
        console.print(f"  {escape(name)} = {value!r}")


def print_top(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """A table of the best functions: rank, score, expression, equivalents, trial, seconds."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("activation", overflow="fold")
    table.add_column("equivalent to", overflow="fold", style="dim")
    table.add_column("trial", justify="right")
    table.add_column("seconds", justify="right")
    for row in rows:
        others = row["equivalents"]
        shown = ", ".join(others[:SHOWN_EQUIVALENTS])
        if len(others) > SHOWN_EQUIVALENTS:
            shown += f" (+{len(others) - SHOWN_EQUIVALENTS} more)"
        seconds = row["seconds"]
        table.add_row(
            str(row["rank"]),
            f"{row['score']:.4f}",
            escape(str(row["expression"])),
            escape(shown),
            str(row["trial"]),
            "-" if seconds is None else f"{seconds:.1f}",
        )
    console.print(table)


def _equivalents(space, trial: FrozenTrial) -> list[str]:
    """Other names of the trial's function in ``space``."""
    expression = trial.user_attrs.get("activation")
    if space is None or expression is None:
        return []
    try:
        index = (
            space.index(expression) if expression in space else space.find_equivalent(expression)
        )
    except ValueError:  # an operator this process does not know
        return []
    if index is None:
        return []
    return [name for name in space[index].equivalents if name != expression]
