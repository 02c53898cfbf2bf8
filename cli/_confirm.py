"""``aquasurf confirm``: train the best functions of a search and its best baseline again, with
the search's own objective, and tell which differences the noise between seeds cannot explain.

The runs are trials of the same study (user attribute ``repeat_of``), trained as ``aquasurf
optimize`` trains: the model file on the device, trial n seeded with the study's seed + n, but
never pruned, each run giving one more full score. :func:`optuna_aquasurf.confirm` counts what
the study has, so that a rerun trains only what is missing.

With ``--workers N``, this process chooses the functions and enqueues their runs, and N worker
processes (``aquasurf confirm FILE --worker I/N``, started as ``aquasurf optimize --workers``
starts its own) train them, each taking the next waiting run until none is left; a race
(``--until-separated``) starts them again for each of its rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optuna_aquasurf import ConfirmReport
from optuna_aquasurf._confirm import confirm_with, run_queued
from optuna_aquasurf.cli._console import UserError, err_console
from optuna_aquasurf.cli._objective import Objective, resolve_device, stop_on_interrupt
from optuna_aquasurf.cli._optimize import SearchSettings, open_study
from optuna_aquasurf.cli._storage import load_study
from optuna_aquasurf.cli._study_sampler import StudySettings
from optuna_aquasurf.cli._verbosity import set_optuna_verbosity
from optuna_aquasurf.cli._views import CONFIRM_ATTR, interval
from optuna_aquasurf.cli._workers import (
    command_line,
    describe_devices,
    run_workers,
    worker_devices,
)

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
    workers: int = 1


def confirm_search(path: Path, settings: ConfirmSettings) -> ConfirmReport:
    """Confirm the best functions of the search of the model file ``path``: train each until it
    has ``repeats`` scores (or race them, ``until_separated``), here or by ``workers`` worker
    processes, and keep the reference with the study
    (:data:`~optuna_aquasurf.cli._views.CONFIRM_ATTR`), which ``aquasurf best`` compares the
    best function with.

    Raises
    ------
    UserError
        For bad options, problems with the file, the storage or the study, a study without a
        completed trial or a baseline with a score, and a worker that fails.
    KeyboardInterrupt
        After Ctrl-C, once the running trial is marked failed (reason ``"interrupted"``): it is
        trained again by the next run.
    """
    if settings.until_separated != (settings.max_trials is not None):
        raise UserError("--until-separated races until --max-trials M: give both or neither.")
    study, objective = _open(path, settings)
    train_queued = None
    if settings.workers > 1:
        devices = worker_devices(settings.workers, settings.device)
        command = command_line("confirm", path, {"study": study.study_name})

        def train_queued(n_runs: int) -> None:
            err_console.print(
                f"Training {n_runs} runs on {settings.workers} workers "
                f"({describe_devices(devices)})."
            )
            run_workers(command, devices, settings.storage_url)

    try:
        with stop_on_interrupt(objective, study):
            report = confirm_with(
                study,
                objective,
                settings.top,
                settings.repeats,
                against=settings.against,
                until_separated=settings.until_separated,
                max_trials=settings.max_trials,
                train_queued=train_queued,
            )
    except ValueError as error:
        raise UserError(f"Cannot confirm study {study.study_name!r}: {error}") from None
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


def confirm_worker(path: Path, settings: ConfirmSettings, worker: str) -> None:
    """Train the waiting runs of the study, one after another, until none is left: worker
    ``worker`` (``I/N``) of ``aquasurf confirm --workers N``, whose first process enqueued them.

    Raises
    ------
    UserError
        For problems with the file, the storage or the study.
    KeyboardInterrupt
        After Ctrl-C, once the running trial is marked failed (reason ``"interrupted"``).
    """
    study, objective = _open(path, settings, worker)
    try:
        with stop_on_interrupt(objective, study):
            run_queued(study, objective)
    except KeyboardInterrupt:
        objective.interrupted = True
    if objective.interrupted:
        raise KeyboardInterrupt


def _open(
    path: Path, settings: ConfirmSettings, worker: str | None = None
) -> tuple[optuna.Study, Objective]:
    """The study of the model file ``path``, loaded with the settings its search kept, and the
    objective that trains its runs as ``aquasurf optimize`` does, but never pruned.

    Raises
    ------
    UserError
        For problems with the file, the storage or the study.
    """
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
    prefix = "" if worker is None else f"Worker {worker}: "

    def print_start(number: int, expression: str) -> None:
        err_console.print(f"{prefix}Trial {number}: training {escape(expression)}")

    objective = Objective(
        user,
        resolve_device(settings.device),
        search.seed,
        on_choose=lambda number: None,
        on_start=print_start,
        with_cost=search.with_cost,
    )
    return study, objective


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
