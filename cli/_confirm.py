"""``aquasurf confirm``: train the best functions of a search and its best baseline again, with
the search's own objective, and tell which differences the noise between seeds cannot explain.

The runs are trials of the same study (user attribute ``repeat_of``), trained as ``aquasurf
optimize`` trains: the model file on the device, trial n seeded with the study's seed + n, but
never pruned, each run giving one more full score. :func:`optuna_aquasurf.confirm` counts what
the study has, so that a rerun trains only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optuna_aquasurf import ConfirmReport, confirm
from optuna_aquasurf.cli._console import UserError, err_console
from optuna_aquasurf.cli._objective import Objective, resolve_device, stop_on_interrupt
from optuna_aquasurf.cli._optimize import SearchSettings, open_study
from optuna_aquasurf.cli._storage import load_study
from optuna_aquasurf.cli._study_sampler import StudySettings
from optuna_aquasurf.cli._verbosity import set_optuna_verbosity
from optuna_aquasurf.cli._views import CONFIRM_ATTR, interval

#: Seconds between heartbeats of a running confirmation trial.
HEARTBEAT_INTERVAL = 60


@dataclass(frozen=True)
class ConfirmSettings:
    """The options of ``aquasurf confirm`` (see its help)."""

    top: int
    repeats: int
    against: str | None
    until_separated: bool
    max_trials: int | None
    device: str
    storage_url: str
    study_name: str | None


def confirm_search(path: Path, settings: ConfirmSettings) -> ConfirmReport:
    """Confirm the best functions of the search of the model file ``path``: train each until it
    has ``repeats`` scores (or race them, ``until_separated``), and keep the reference with the
    study (:data:`~optuna_aquasurf.cli._views.CONFIRM_ATTR`), which ``aquasurf best`` compares
    the best function with.

    Raises
    ------
    UserError
        For bad options, problems with the file, the storage or the study, and a study without
        a completed trial or a baseline with a score.
    KeyboardInterrupt
        After Ctrl-C, once the running trial is marked failed (reason ``"interrupted"``): it is
        trained again by the next run.
    """
    if settings.until_separated != (settings.max_trials is not None):
        raise UserError("--until-separated races until --max-trials M: give both or neither.")
    set_optuna_verbosity()
    name = settings.study_name or path.stem
    kept = StudySettings.of(load_study(settings.storage_url, name)) or StudySettings()
    search = SearchSettings(
        n_trials=0,
        timeout=None,
        device=settings.device,
        storage_url=settings.storage_url,
        study_name=name,
        seed=kept.seed,
        pruner="none",  # a pruned run is no score
        heartbeat_interval=HEARTBEAT_INTERVAL,
        grace_period=None,
        max_retry=0,  # confirm trains again what it must: a retry would count twice
        prior=tuple(kept.prior),
        max_cost=kept.max_cost,
        objectives=",".join(kept.objectives),
    )
    user, study = open_study(path, search)
    objective = Objective(
        user,
        resolve_device(settings.device),
        search.seed,
        on_choose=lambda number: None,
        on_start=_print_start,
        with_cost=search.with_cost,
    )
    try:
        with stop_on_interrupt(objective, study):
            report = confirm(
                study,
                objective,
                settings.top,
                settings.repeats,
                against=settings.against,
                until_separated=settings.until_separated,
                max_trials=settings.max_trials,
            )
    except ValueError as error:
        raise UserError(f"Cannot confirm study {name!r}: {error}") from None
    except KeyboardInterrupt:
        objective.interrupted = True
    if objective.interrupted:
        err_console.print(
            "[yellow]Interrupted.[/] Finished runs are kept: run the same command to train "
            "the missing ones."
        )
        raise KeyboardInterrupt
    study.set_user_attr(CONFIRM_ATTR, {"baseline": report.baseline})
    return report


def _print_start(number: int, expression: str) -> None:
    err_console.print(f"Trial {number}: training {escape(expression)}")


def print_report(console: Console, report: ConfirmReport) -> None:
    """The confirmed functions as a table, best mean first, and the verdict."""
    table = Table(title=f"Confirmed against {escape(report.baseline)}", title_justify="left")
    table.add_column("activation", overflow="fold")
    table.add_column("n", justify="right")
    table.add_column("mean", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("difference", justify="right")
    table.add_column("its 95% interval", justify="right")
    table.add_column("beats?")
    for record in report.records:
        is_baseline = record.activation == report.baseline
        table.add_row(
            escape(record.activation) + (" [dim](baseline)[/]" if is_baseline else ""),
            str(record.n),
            _number(record.mean),
            interval(record.ci95),
            "-" if is_baseline else _number(record.difference, sign="+"),
            interval(record.difference_ci95),
            "-" if is_baseline else ("[green]yes[/]" if record.beats_baseline else "no"),
        )
    console.print(table)
    console.print(escape(report.verdict()), soft_wrap=True)


def _number(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.4g}"
