"""Read-only views of a study: ``status``, ``best`` and ``top``, as rich tables or JSON.

A study has one objective, the score, or two, the score and the cost (``optimize --objectives
score,cost``): then each completed trial's values are ``[score, cost]``. A function's cost is
its forward and backward time over relu's (:mod:`optuna_aquasurf._cost`), measured once per
study: every view shows the figure the study recorded (see :func:`cost_of`).

A function trained several times (by ``aquasurf confirm``, trials marked ``repeat_of``) is one
:class:`Function` of several scores: views rank functions by their mean score (:func:`functions`),
and once a function has 2 scores, the best is the best mean of those confirmed. In a study of
score and cost, the Pareto front is that of the functions at their mean scores
(:func:`cost_front`): a function whose best trial would be on the front, but whose mean another
function beats for no more cost, is not.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optuna_aquasurf._front import on_front
from optuna_aquasurf._intervals import difference_interval, is_better, mean_interval
from optuna_aquasurf._scores import has_cost_objective, maximizes_score
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._equivalents import Equivalents, equivalents_of
from optuna_aquasurf.cli._storage import masked
from optuna_aquasurf.cli._study_sampler import StudySettings
from optuna_aquasurf.cli._trials import count_finished, pending_reruns

#: Equivalent names shown in a table cell before "+N more".
SHOWN_EQUIVALENTS = 1
#: The objectives of a study, in the order of its directions.
OBJECTIVES = ("score", "cost")
#: Trial user attribute where ``suggest_activation`` records the study's cost of its function.
COST_ATTR = "activation_cost"
#: Study user attribute where ``aquasurf confirm`` keeps the reference of its last run.
CONFIRM_ATTR = "aquasurf_confirm"


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


@dataclass(frozen=True)
class Function:
    """The completed trials of one function (one ``activation``), best score first."""

    trials: list[FrozenTrial]

    @property
    def best(self) -> FrozenTrial:
        return self.trials[0]

    @property
    def expression(self) -> str:
        return self.best.user_attrs.get("activation", "?")

    @property
    def scores(self) -> list[float]:
        return [score_of(t) for t in self.trials]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def cost(self) -> float | None:
        """Its cost in relu passes, as its best trial recorded it (:func:`cost_of`)."""
        return cost_of(self.best)


def functions(study: optuna.Study) -> list[Function]:
    """The functions of the study's completed trials, best mean score first (equal means: the
    better best score first)."""
    order = _score_order(study)
    trials_of: dict[str, list[FrozenTrial]] = {}
    for trial in sorted(completed_trials(study), key=order):
        trials_of.setdefault(trial.user_attrs.get("activation", "?"), []).append(trial)
    sign = _score_sign(study)
    return sorted(
        (Function(trials) for trials in trials_of.values()),
        key=lambda f: (sign * f.mean, order(f.best)),
    )


def best_function(study: optuna.Study) -> Function | None:
    """The function of the best mean score, of those with 2 scores or more if any (confirmed
    functions), or None when no trial has completed."""
    ranked = functions(study)
    confirmed = [f for f in ranked if len(f.trials) >= 2]
    return (confirmed or ranked or [None])[0]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best trial of the :func:`best_function`, or None; in a (score, cost) study that of
    the :func:`best_of_front`."""
    function = best_of_front(study) if is_cost_study(study) else best_function(study)
    return None if function is None else function.best


def best_of_front(study: optuna.Study) -> Function | None:
    """The function of the best mean score on the :func:`cost_front` (of equal means, the
    cheaper): its last member; None when it is empty."""
    front = cost_front(study)
    return front[-1] if front else None


def cost_front(study: optuna.Study) -> list[Function]:
    """The Pareto front of score and cost: the :func:`functions` whose mean score is better than
    that of every function as cheap or cheaper, cheapest first (see
    :func:`optuna_aquasurf._front.on_front`; of functions of the same mean and cost, the first
    that :func:`functions` ranks). A function of one score enters with that score; one of
    unknown cost (see :func:`cost_of`) is left out."""
    sign = _score_sign(study)
    known = [f for f in functions(study) if f.cost is not None]
    higher_better = np.array([-sign * f.mean for f in known])
    front = on_front(higher_better, np.array([f.cost for f in known]))
    return sorted(itertools.compress(known, front), key=lambda f: (f.cost, sign * f.mean))


def _score_order(study: optuna.Study) -> Callable[[FrozenTrial], float]:
    """A sort key of completed trials that puts the best score first (by the first direction)."""
    sign = _score_sign(study)
    return lambda trial: sign * score_of(trial)


def _score_sign(study: optuna.Study) -> float:
    """-1 when the study maximizes its score, else 1: times a score, a sort key best first."""
    return -1.0 if score_is_maximized(study) else 1.0


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


def function_record(function: Function) -> dict[str, Any]:
    """A function for JSON: its best trial (:func:`trial_record`), its number of scores ``n``,
    their ``mean`` and the 95% interval of that mean, ``ci95`` (None below 2 scores)."""
    n = len(function.trials)
    return {
        **trial_record(function.best),
        "n": n,
        "mean": function.mean,
        "ci95": mean_interval(function.scores) if n >= 2 else None,
    }


def _directions(study: optuna.Study) -> list[str]:
    return [direction.name.lower() for direction in study.directions]


def status(study: optuna.Study, url: str) -> dict[str, Any]:
    """Counts of trials by state, progress, the best trial of ``study`` and, in a (score, cost)
    study, the size of the Pareto front."""
    trials = study.get_trials(deepcopy=False)
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
        "best": _best_of_status(study),
        "front_size": len(cost_front(study)) if is_cost_study(study) else None,
    }


def _best_of_status(study: optuna.Study) -> dict[str, Any] | None:
    """The best function (:func:`best_function`; in a (score, cost) study
    :func:`best_of_front`) for JSON (:func:`function_record`); None when no trial has
    completed."""
    function = best_of_front(study) if is_cost_study(study) else best_function(study)
    return None if function is None else function_record(function)


def top(
    study: optuna.Study, limit: int, equivalents: Equivalents | None = None, by: str = "score"
) -> list[dict[str, Any]]:
    """The ``limit`` best functions by mean score (:func:`function_record`), with their
    equivalent names; with ``by="cost"`` the ``limit`` cheapest, those of equal cost by mean.

    ``equivalents`` gives the other names of an expression's function; by default the study's
    (:func:`~optuna_aquasurf.cli._equivalents.equivalents_of`).
    """
    rows = functions(study)
    if by == "cost":
        rows.sort(key=lambda f: _cost_or_inf(f.best))  # stable: equal costs stay by mean
    rows = rows[:limit]
    if equivalents is None and rows:
        equivalents = equivalents_of(study)
    return [
        {
            "rank": rank,
            **function_record(f),
            "equivalents": equivalents(f.best.user_attrs.get("activation", "")),
        }
        for rank, f in enumerate(rows, 1)
    ]


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
        n = best["n"]
        score = f"mean {best['mean']:.6g} of {n} scores" if n > 1 else f"{best['score']:.6g}"
        table.add_row(
            "best",
            f"{score}  {escape(str(best['expression']))}  (cost {times_relu(best['cost'])})",
        )
        table.add_row("best trial", str(best["trial"]))
    if data["front_size"] is not None:
        table.add_row(
            "Pareto front",
            f"{data['front_size']} functions, the best score for their cost: `aquasurf best`",
        )
    console.print(table)


def best_record(study: optuna.Study) -> dict[str, Any]:
    """The :func:`best_function` of a study of the score alone for JSON: its best trial, its
    scores (:func:`function_record`) and how it compares with the baseline
    (:func:`_comparison`).

    Raises
    ------
    UserError
        When no trial has completed.
    """
    function = best_function(study)
    if function is None:
        raise _no_completed_trial(study)
    return {
        "study": study.study_name,
        "direction": _directions(study)[0],
        **function_record(function),
        **_comparison(study, function),
    }


def _comparison(study: optuna.Study, function: Function) -> dict[str, Any]:
    """How a confirmed ``function`` (2 scores or more) compares with the baseline
    (:func:`baseline_function`): ``difference`` of the means, its 95% Welch interval
    ``difference_ci95`` (None below 2 scores of the baseline) and whether that interval shows
    an improvement, ``beats_baseline``. None (False) for the baseline itself and a function of
    one score."""
    baseline = baseline_function(study) if len(function.trials) >= 2 else None
    compared = {"baseline": None if baseline is None else baseline.expression}
    if baseline is None or baseline.expression == function.expression:
        return {**compared, "difference": None, "difference_ci95": None, "beats_baseline": False}
    interval = difference_interval(function.scores, baseline.scores)
    return {
        **compared,
        "difference": function.mean - baseline.mean,
        "difference_ci95": interval,
        "beats_baseline": is_better(interval, score_is_maximized(study)),
    }


def baseline_function(study: optuna.Study) -> Function | None:
    """The reference of the last ``aquasurf confirm`` (:data:`CONFIRM_ATTR`), else the
    sampler's default baseline of the best mean; None when the study has neither."""
    from optuna_aquasurf._baselines import DEFAULT_BASELINES

    kept = study.user_attrs.get(CONFIRM_ATTR, {}).get("baseline")
    names = [kept] if kept else DEFAULT_BASELINES
    return next((f for f in functions(study) if f.expression in names), None)


def front_record(study: optuna.Study) -> dict[str, Any]:
    """The Pareto front of a (score, cost) study (:func:`cost_front`) for JSON: its functions
    (:func:`function_record`), cheapest first, each with its number on the front (``member``,
    from 1).

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
        "front": [{"member": n, **function_record(f)} for n, f in enumerate(front, 1)],
    }


def export_record(
    study: optuna.Study, pick: int | None = None, max_cost: float | None = None
) -> dict[str, Any]:
    """The function that ``aquasurf export`` writes, as :func:`best_record`: the best
    (:func:`best_function`), the best mean score of those costing at most ``max_cost`` (ties:
    the cheaper) or the ``pick``-th member of the front (from 1, cheapest first). In a (score,
    cost) study, whose choice is always a member of its :func:`cost_front`, the record adds its
    number there, ``front_member``, and the size of the front, ``front_size``.

    Raises
    ------
    UserError
        When no trial has completed, no function costs at most ``max_cost``, or for a ``pick``
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
        return _study_record(study, _best_costing_at_most(study, functions(study), max_cost))
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
        member = len(front)  # the best mean, the front being cheapest first
    record = _study_record(study, front[member - 1])
    record.update(front_member=member, front_size=len(front))
    return record


def _best_costing_at_most(study: optuna.Study, ranked: list[Function], max_cost: float) -> Function:
    """The function of the best mean score of ``ranked`` (functions of ``study``) that costs at
    most ``max_cost``; of equal means, the cheaper.

    Raises
    ------
    UserError
        When none costs at most ``max_cost`` (or there is none).
    """
    within = [f for f in ranked if _cost_or_inf(f.best) <= max_cost]
    if within:
        sign = _score_sign(study)
        return min(within, key=lambda function: (sign * function.mean, function.cost))
    if not ranked:
        raise _no_completed_trial(study)
    cheapest = min(ranked, key=lambda function: _cost_or_inf(function.best))
    if cheapest.cost is None:
        known = ""
    else:
        known = f": its cheapest, {cheapest.expression}, costs {cheapest.cost:.3g} relu passes"
    raise UserError(
        f"--max-cost {max_cost:g}: no function of study {study.study_name!r} costs so little"
        f"{known}."
    )


def _study_record(study: optuna.Study, function: Function) -> dict[str, Any]:
    """``function`` (of ``study``) for JSON (:func:`function_record`), with the study's name and
    score direction."""
    return {
        "study": study.study_name,
        "direction": _directions(study)[0],
        **function_record(function),
    }


def _no_completed_trial(study: optuna.Study) -> UserError:
    return UserError(f"Study {study.study_name!r} has no completed trial yet.")


def print_best(console: Console, record: dict[str, Any]) -> None:
    """The best expression, its score (its mean and interval if confirmed, and how it compares
    with the baseline) and cost, then the trial and its parameters."""
    console.print(f"[bold]{escape(str(record['expression']))}[/]")
    if record["n"] >= 2:
        console.print(
            f"mean {record['mean']:.6g} of {record['n']} scores (95% interval "
            f"{interval(record['ci95'])}, {record['direction']}), best score "
            f"{record['score']:.6g}"
        )
        if record["baseline"] == record["expression"]:
            console.print("the baseline of the confirmation: no function beats it")
        elif record["difference_ci95"] is not None:
            verdict = "beats" if record["beats_baseline"] else "not distinguishably better than"
            console.print(
                f"{verdict} {escape(record['baseline'])}: difference {record['difference']:+.4g}"
                f" (95% interval {interval(record['difference_ci95'])})"
            )
        console.print(f"cost {times_relu(record['cost'])}, best trial {record['trial']}")
    else:
        console.print(
            f"score {record['score']:.6g} ({record['direction']}), cost "
            f"{times_relu(record['cost'])}, trial {record['trial']}"
        )
    for name, value in record["params"].items():
        console.print(f"  {escape(name)} = {value!r}")


def print_front(console: Console, record: dict[str, Any]) -> None:
    """The Pareto front as a table: member number, cost, score (the mean and the number of
    scores, once a function has several), expression, best trial."""
    score_direction = record["directions"][0]
    repeated = any(row["n"] > 1 for row in record["front"])
    table = Table(
        title=f"Pareto front of {escape(record['study'])}: the best score for its cost",
        title_justify="left",
        caption="`aquasurf export --pick #` writes one as a module file",
        caption_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("cost", justify="right")
    table.add_column(f"{'mean' if repeated else 'score'} ({score_direction})", justify="right")
    if repeated:
        table.add_column("n", justify="right")
    table.add_column("activation", overflow="fold")
    table.add_column("trial", justify="right")
    for row in record["front"]:
        table.add_row(
            str(row["member"]),
            times_relu(row["cost"]),
            f"{row['mean']:.6g}",
            *([str(row["n"])] if repeated else []),
            escape(str(row["expression"])),
            str(row["trial"]),
        )
    console.print(table)


def print_top(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """A table of the best functions: rank, score (mean and number of scores, once a function
    has several), cost, expression, equivalents, best trial, seconds."""
    repeated = any(row["n"] > 1 for row in rows)
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("mean" if repeated else "score", justify="right")
    if repeated:
        table.add_column("n", justify="right")
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
            f"{row['mean']:.4f}",
            *([str(row["n"])] if repeated else []),
            times_relu(row["cost"]),
            escape(str(row["expression"])),
            escape(shown),
            str(row["trial"]),
            "-" if seconds is None else f"{seconds:.1f}",
        )
    console.print(table)


def interval(bounds: tuple[float, float] | None) -> str:
    """An interval as shown: ``"0.812 to 0.845"``; ``"-"`` when there is none."""
    return "-" if bounds is None else f"{bounds[0]:.4g} to {bounds[1]:.4g}"


def times_relu(cost: float | None) -> str:
    """A cost as shown: relu passes (relu costs ``"1.0x"``), such as ``"2.3x"``; ``"-"`` when
    unknown."""
    return "-" if cost is None else f"{cost:.1f}x"
