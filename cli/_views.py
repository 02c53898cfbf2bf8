"""Read-only views of a study: ``status``, ``best`` and ``top``, as rich tables or JSON.

A study has one objective, the score, or two, the score and the cost (``optimize --objectives
score,cost``): then each completed trial's values are ``[score, cost]``. A function's cost is
its forward and backward time over relu's (:mod:`optuna_aquasurf._cost`), measured once per
study: every view shows the figure the study recorded (see :func:`cost_of`).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optuna_aquasurf._front import on_front
from optuna_aquasurf._scores import has_cost_objective, maximizes_score
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._storage import masked
from optuna_aquasurf.cli._study_sampler import StudySettings
from optuna_aquasurf.cli._trials import count_finished, pending_reruns

#: Equivalent names shown in a table cell before "+N more".
SHOWN_EQUIVALENTS = 1
#: The objectives of a study, in the order of its directions.
OBJECTIVES = ("score", "cost")
#: Trial user attribute where ``suggest_activation`` records the study's cost of its function.
COST_ATTR = "activation_cost"


def score_is_maximized(study: optuna.Study) -> bool:
    """Whether ``study`` maximizes its score (its first objective).

    Raises
    ------
    UserError
        For a study of other objectives, which aquasurf did not create.
    """
    try:
        return maximizes_score(study)
    except ValueError as error:
        raise UserError(str(error)) from None


def is_cost_study(study: optuna.Study) -> bool:
    """Whether ``study`` has the two objectives (score, cost); False when it has the score alone.

    Raises
    ------
    UserError
        For a study of other objectives, which aquasurf did not create.
    """
    score_is_maximized(study)
    return has_cost_objective(study)


def score_of(trial: FrozenTrial) -> float:
    """A completed trial's score: its first value."""
    return trial.values[0]


def cost_of(trial: FrozenTrial) -> float | None:
    """A completed trial's cost in relu passes, as its study recorded it: its second value in a
    (score, cost) study, else its :data:`COST_ATTR` attribute.

    A trial without that attribute (from a study older than it, or added outside the sampler)
    has its function measured now, once per process, on the CPU; None for an operator this
    process does not know (one the model file registers).
    """
    if len(trial.values) == len(OBJECTIVES):
        return trial.values[1]
    if COST_ATTR in trial.user_attrs:
        return trial.user_attrs[COST_ATTR]
    from optuna_aquasurf._cost import measured_cost  # torch, only for such trials

    try:
        return measured_cost(trial.user_attrs["activation"])
    except (KeyError, ValueError):
        return None


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's completed trials, in trial order."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial of the best score, or None; in a (score, cost) study the cheapest of
    them: the last member of its :func:`cost_front`."""
    if is_cost_study(study):
        front = cost_front(study)
        return front[-1] if front else None
    return min(completed_trials(study), key=_score_order(study), default=None)


def cost_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front of score and cost: the completed trials with a better score than every
    trial as cheap or cheaper, cheapest first (see :func:`optuna_aquasurf._front.on_front`; of
    trials with the same score and cost, the first). Trials of unknown cost (see
    :func:`cost_of`) are left out."""
    order = _score_order(study)
    known = [t for t in completed_trials(study) if cost_of(t) is not None]
    higher_better = [-order(t) for t in known]
    front = on_front(np.array(higher_better), np.array([cost_of(t) for t in known]))
    return sorted(itertools.compress(known, front), key=lambda t: (cost_of(t), order(t)))


def _score_order(study: optuna.Study) -> Callable[[FrozenTrial], float]:
    """A sort key of completed trials that puts the best score first (by the first direction)."""
    sign = -1.0 if score_is_maximized(study) else 1.0
    return lambda trial: sign * score_of(trial)


def _cost_or_inf(trial: FrozenTrial) -> float:
    """The trial's cost, infinite when unknown (a sort key: unknown costs last)."""
    cost = cost_of(trial)
    return math.inf if cost is None else cost


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """A completed trial for JSON: number, expression, score, cost, params, seconds."""
    return {
        "trial": trial.number,
        "expression": trial.user_attrs.get("activation"),
        "score": score_of(trial),
        "params": trial.params,
        "seconds": trial.user_attrs.get("seconds"),
        "cost": cost_of(trial),
    }


def _directions(study: optuna.Study) -> list[str]:
    return [direction.name.lower() for direction in study.directions]


def status(study: optuna.Study, url: str) -> dict[str, Any]:
    """Counts of trials by state, progress, the best trial of ``study`` and, in a (score, cost)
    study, the size of the Pareto front."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    directions = _directions(study)
    settings = StudySettings.of(study)
    return {
        "study": study.study_name,
        "storage": masked(url),
        "direction": directions[0],
        "directions": directions,
        "model_file": settings.file if settings else None,
        "trials": {
            state.name.lower(): sum(t.state == state for t in trials) for state in TrialState
        },
        "finished": count_finished(trials),
        "to_run_again": len(pending_reruns(trials)),
        "seconds": round(sum(t.user_attrs.get("seconds", 0.0) for t in trials), 3),
        "best": None if best is None else trial_record(best),
        "front_size": len(cost_front(study)) if is_cost_study(study) else None,
    }


def top(study: optuna.Study, limit: int, space=None, by: str = "score") -> list[dict[str, Any]]:
    """The ``limit`` best functions (best trial of each), with their equivalent names; with
    ``by="cost"`` the ``limit`` cheapest, those of equal cost by score.

    ``space`` (a :class:`~optuna_aquasurf.SearchSpace`) gives the equivalents; by default it is
    rebuilt from the study's settings, and without it the equivalents are empty.
    """
    is_cost_study(study)
    order = _score_order(study)
    best_of: dict[str, FrozenTrial] = {}
    for trial in sorted(completed_trials(study), key=order):
        best_of.setdefault(trial.user_attrs.get("activation", "?"), trial)
    rows = list(best_of.values())
    if by == "cost":
        rows.sort(key=lambda t: (_cost_or_inf(t), order(t)))
    rows = rows[:limit]
    if space is None and rows:
        space = study_space(study)
    return [
        {"rank": rank, **trial_record(t), "equivalents": _equivalents(space, t)}
        for rank, t in enumerate(rows, 1)
    ]


def study_space(study: optuna.Study):
    """The search space of the study's last ``optimize`` run, or None if it cannot be rebuilt
    (an old study, or operators registered by the model file)."""
    settings = StudySettings.of(study)
    if settings is None:
        return None
    try:
        return settings.search_space()
    except ValueError:
        return None


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (no colours, no wrapping)."""
    print(json.dumps(data, indent=2))


def print_status(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"Study {escape(data['study'])}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("storage", escape(data["storage"]))
    table.add_row("model file", escape(str(data["model_file"] or "-")))
    objectives = zip(data["directions"], OBJECTIVES)
    table.add_row("direction", ", ".join(f"{way} {name}" for way, name in objectives))
    counts = ", ".join(f"{n} {state}" for state, n in data["trials"].items() if n)
    table.add_row("trials", counts or "none")
    table.add_row("finished", f"{data['finished']} (counted by --n-trials)")
    if data["to_run_again"]:
        table.add_row("to run again", f"{data['to_run_again']} (interrupted or failed by an error)")
    table.add_row("training time", f"{data['seconds'] / 60:.1f} min")
    best = data["best"]
    if best is not None:
        table.add_row(
            "best",
            f"{best['score']:.6g}  {escape(str(best['expression']))}  "
            f"(cost {times_relu(best['cost'])})",
        )
        table.add_row("best trial", str(best["trial"]))
    if data["front_size"] is not None:
        table.add_row(
            "Pareto front",
            f"{data['front_size']} trials, the best score for their cost: `aquasurf best`",
        )
    console.print(table)


def best_record(study: optuna.Study) -> dict[str, Any]:
    """The study's trial of the best score (:func:`best_trial`) for JSON.

    Raises
    ------
    UserError
        When no trial has completed.
    """
    return _study_record(study, best_trial(study))


def front_record(study: optuna.Study) -> dict[str, Any]:
    """The Pareto front of a (score, cost) study for JSON: its trials, cheapest first, each with
    its number on the front (``member``, from 1).

    Raises
    ------
    UserError
        When no trial has completed.
    """
    front = cost_front(study)
    if not front:
        raise _no_completed_trial(study)
    return {
        "study": study.study_name,
        "directions": _directions(study),
        "front": [{"member": n, **trial_record(t)} for n, t in enumerate(front, 1)],
    }


def export_record(
    study: optuna.Study, pick: int | None = None, max_cost: float | None = None
) -> dict[str, Any]:
    """The trial that ``aquasurf export`` writes, as :func:`best_record`: the best
    (:func:`best_trial`), the best score of those costing at most ``max_cost`` (ties: the
    cheaper) or the ``pick``-th member of the front (from 1, cheapest first). In a (score, cost)
    study, whose choice is always a member of its :func:`cost_front`, the record adds its number
    there, ``front_member``, and the size of the front, ``front_size``.

    Raises
    ------
    UserError
        When no trial has completed, no trial costs at most ``max_cost``, or for a ``pick``
        beyond the front or in a study of the score alone.
    """
    if not is_cost_study(study):
        if pick is not None:
            raise UserError(
                f"--pick chooses a member of the Pareto front of a study of score and cost; "
                f"study {study.study_name!r} has the score alone: export its best (no option), "
                "the best costing at most X relu passes (--max-cost X) or any function "
                "(--expression)."
            )
        if max_cost is None:
            return best_record(study)
        return _study_record(study, _best_costing_at_most(study, completed_trials(study), max_cost))
    front = cost_front(study)
    if not front:
        raise _no_completed_trial(study)
    if pick is not None and not 1 <= pick <= len(front):
        raise UserError(
            f"--pick {pick}: give a number from 1 to {len(front)}, the members of the Pareto "
            f"front of study {study.study_name!r} as `aquasurf best` numbers them."
        )
    if pick is not None:
        member = pick
    elif max_cost is not None:
        member = front.index(_best_costing_at_most(study, front, max_cost)) + 1
    else:
        member = len(front)  # the best score, the front being cheapest first
    record = _study_record(study, front[member - 1])
    record.update(front_member=member, front_size=len(front))
    return record


def _best_costing_at_most(
    study: optuna.Study, trials: list[FrozenTrial], max_cost: float
) -> FrozenTrial:
    """The trial of the best score of ``trials`` (completed ones of ``study``) that cost at most
    ``max_cost``; of equal scores, the cheaper.

    Raises
    ------
    UserError
        When none costs at most ``max_cost`` (or there is none).
    """
    within = [t for t in trials if _cost_or_inf(t) <= max_cost]
    if within:
        order = _score_order(study)
        return min(within, key=lambda trial: (order(trial), cost_of(trial)))
    if not trials:
        raise _no_completed_trial(study)
    cheapest = min(trials, key=_cost_or_inf)
    if cost_of(cheapest) is None:
        known = ""
    else:
        expression = cheapest.user_attrs.get("activation")
        known = f": its cheapest, {expression}, costs {cost_of(cheapest):.3g} relu passes"
    raise UserError(
        f"--max-cost {max_cost:g}: no function of study {study.study_name!r} costs so little"
        f"{known}."
    )


def _study_record(study: optuna.Study, trial: FrozenTrial | None) -> dict[str, Any]:
    """``trial`` (a completed trial of ``study``, None when there is none yet) for JSON, with
    the study's name and score direction.

    Raises
    ------
    UserError
        When ``trial`` is None.
    """
    if trial is None:
        raise _no_completed_trial(study)
    return {"study": study.study_name, "direction": _directions(study)[0], **trial_record(trial)}


def _no_completed_trial(study: optuna.Study) -> UserError:
    return UserError(f"Study {study.study_name!r} has no completed trial yet.")


def print_best(console: Console, record: dict[str, Any]) -> None:
    """The best expression, its score and cost, then the trial and its parameters."""
    console.print(f"[bold]{escape(str(record['expression']))}[/]")
    console.print(
        f"score {record['score']:.6g} ({record['direction']}), cost "
        f"{times_relu(record['cost'])}, trial {record['trial']}"
    )
    for name, value in record["params"].items():
        console.print(f"  {escape(name)} = {value!r}")


def print_front(console: Console, record: dict[str, Any]) -> None:
    """The Pareto front as a table: member number, cost, score, expression, trial."""
    score_direction = record["directions"][0]
    table = Table(
        title=f"Pareto front of {escape(record['study'])}: the best score for its cost",
        title_justify="left",
        caption="`aquasurf export --pick #` writes one as a module file",
        caption_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("cost", justify="right")
    table.add_column(f"score ({score_direction})", justify="right")
    table.add_column("activation", overflow="fold")
    table.add_column("trial", justify="right")
    for row in record["front"]:
        table.add_row(
            str(row["member"]),
            times_relu(row["cost"]),
            f"{row['score']:.6g}",
            escape(str(row["expression"])),
            str(row["trial"]),
        )
    console.print(table)


def print_top(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """A table of the best functions: rank, score, cost, expression, equivalents, trial,
    seconds."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("cost", justify="right")
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
            times_relu(row["cost"]),
            escape(str(row["expression"])),
            escape(shown),
            str(row["trial"]),
            "-" if seconds is None else f"{seconds:.1f}",
        )
    console.print(table)


def times_relu(cost: float | None) -> str:
    """A cost as shown: relu passes (relu costs ``"1.0x"``), such as ``"2.3x"``; ``"-"`` when
    unknown."""
    return "-" if cost is None else f"{cost:.1f}x"


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
