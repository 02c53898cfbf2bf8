"""The typer app of the ``aquasurf`` command.

Only typer and rich are imported here: torch, optuna, umap and matplotlib are imported inside
the commands, so that ``aquasurf --help`` answers at once.
"""

from __future__ import annotations

import enum
import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from optuna_aquasurf.cli._console import UserError, console, err_console
from optuna_aquasurf.cli._storage import DEFAULT_STORAGE
from optuna_aquasurf.cli._userfile import CONTRACT
from optuna_aquasurf.cli._verbosity import VERBOSE_VARIABLE, set_verbose

app = typer.Typer(
    name="aquasurf",
    help=(
        "Find a better activation function for your own PyTorch model: the AQuaSurF surrogate "
        "search as an Optuna study.\n\n"
        "Start with `aquasurf optimize my_model.py`; the same command resumes. Studies live in "
        "the SQLite file aquasurf.db of the current folder unless --storage says otherwise."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold storage passwords
)


class Objectives(str, enum.Enum):
    score = "score"
    score_cost = "score,cost"


class Pruner(str, enum.Enum):
    median = "median"
    hyperband = "hyperband"
    none = "none"


Storage = Annotated[
    str,
    typer.Option(
        envvar="AQUASURF_STORAGE",
        help="Database URL: sqlite:///FILE, postgresql://... or mysql://... (passwords are "
        "never printed). Several machines can work on one study in PostgreSQL or MySQL; SQLite "
        "suits the processes of one machine.",
    ),
]
StudyName = Annotated[
    str | None,
    typer.Option("--study", help="Study name; default: the only study in the storage."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Device = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")]
FileStudyName = Annotated[
    str | None, typer.Option("--study", help="Study name; default: the file's name (stem).")
]


def _print_version(value: bool) -> None:
    """``--version``: print the version of optuna-aquasurf and exit."""
    if value:
        from optuna_aquasurf import __version__

        console.print(f"aquasurf {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            envvar=VERBOSE_VARIABLE,
            help="Show Optuna's log (INFO), not only its errors.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Options of every command."""
    set_verbose(verbose)


def _command(function):
    """Run a command: user errors print their message and exit 1, Ctrl-C exits 130."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as error:
            err_console.print(f"[red]Error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return run


@app.command(epilog=CONTRACT)
@_command
def optimize(
    file: Annotated[Path, typer.Argument(help="Your model file (see the contract below).")],
    n_trials: Annotated[
        int,
        typer.Option(
            min=1,
            help="Target number of finished trials of the study, all runs together: running "
            "the same command again continues up to it.",
        ),
    ] = 50,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Stop starting trials after this many seconds.")
    ] = None,
    device: Device = "auto",
    storage: Storage = DEFAULT_STORAGE,
    study: FileStudyName = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler; trial n seeds seed + n.")] = 0,
    pruner: Annotated[
        Pruner, typer.Option(help="Stops weak trials early from what training reports.")
    ] = Pruner.median,
    heartbeat_interval: Annotated[
        int, typer.Option(min=1, help="Seconds between heartbeats of the running trial.")
    ] = 60,
    grace_period: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="A running trial without heartbeat for this long (default: twice the interval) "
            "was killed: it is failed and retried with the same activation.",
        ),
    ] = None,
    max_retry: Annotated[int, typer.Option(min=0, help="Retries of a killed trial.")] = 3,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this machine: one GPU each when several are visible "
            "(CUDA_VISIBLE_DEVICES), the CPU cores split between them otherwise. Workers on "
            "other machines run the same command with the same --storage and --study.",
        ),
    ] = 1,
    prior: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SOURCE",
            help="Start from an earlier search: STUDY@STORAGE_URL (e.g. "
            "cnn@sqlite:///old.db) or a bundled table (act-bench-digits:cnn, vit, resnet, "
            "regression). Repeat for several. Read once, when the study starts.",
        ),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Only functions whose forward and backward pass costs at most this many relu "
            "passes (on the training device, one thread on a CPU; measured once per space and "
            "kind of device, kept with the study).",
        ),
    ] = None,
    objectives: Annotated[
        Objectives,
        typer.Option(
            help="score: the best function. score,cost: the front of score against cost "
            "(forward and backward time over relu's, on the training device), a study of two "
            "objectives whose front `aquasurf best` lists; no pruning.",
        ),
    ] = Objectives.score,
    worker: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Search activation functions for the model in FILE, or resume that search.

    Ctrl-C stops cleanly (exit code 130); the same command resumes.
    """
    from optuna_aquasurf.cli._optimize import SearchSettings
    from optuna_aquasurf.cli._optimize import optimize as run
    from optuna_aquasurf.cli._workers import optimize_with_workers

    settings = SearchSettings(
        n_trials=n_trials,
        timeout=timeout,
        device=device,
        storage_url=storage,
        study_name=study,
        seed=seed,
        pruner=pruner.value,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
        prior=tuple(prior or ()),
        max_cost=max_cost,
        objectives=objectives.value,
    )
    if workers == 1:
        run(file, settings, worker)
    else:
        optimize_with_workers(file, workers, settings)


@app.command()
@_command
def confirm(
    file: Annotated[Path, typer.Argument(help="The model file of the search.")],
    top: Annotated[int, typer.Option(min=1, help="How many of the best functions.")] = 5,
    repeats: Annotated[
        int,
        typer.Option(min=2, help="Scores of each function, its search trial included."),
    ] = 3,
    against: Annotated[
        str | None,
        typer.Option(
            metavar="EXPR",
            help="The reference, trained if missing; default: the best baseline.",
        ),
    ] = None,
    until_separated: Annotated[
        bool,
        typer.Option(
            "--until-separated",
            help="Then race: one more run of the leader and of each function not "
            "distinguishably worse, until the leader is separated or --max-trials.",
        ),
    ] = False,
    max_trials: Annotated[
        int | None,
        typer.Option(min=1, metavar="M", help="With --until-separated: the most runs."),
    ] = None,
    device: Device = "auto",
    storage: Storage = DEFAULT_STORAGE,
    study: FileStudyName = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this machine that share the runs, each taking the next "
            "one (as optimize's --workers: one GPU each, or a share of the CPU cores).",
        ),
    ] = 1,
    json: Json = False,
    worker: Annotated[str | None, typer.Option(hidden=True)] = None,
):
    """Train the best functions of a search and its best baseline again,
    and tell which beats the baseline beyond the noise between seeds.

    Each function is trained as `aquasurf optimize` trains it (a new seed
    each run, no pruning) until it has --repeats scores. The runs are
    trials of the study: Ctrl-C stops cleanly, and the same command trains
    only what is missing. Then `aquasurf best`, `top` and `status` rank the
    functions by their mean score (a study of score and cost: its front).
    """
    from optuna_aquasurf.cli._confirm import (
        ConfirmSettings,
        confirm_search,
        confirm_worker,
        print_report,
    )
    from optuna_aquasurf.cli._views import print_json

    settings = ConfirmSettings(
        top=top,
        repeats=repeats,
        against=against,
        until_separated=until_separated,
        max_trials=max_trials,
        device=device,
        storage_url=storage,
        study_name=study,
        workers=workers,
    )
    if worker is not None:  # one of the processes of --workers
        confirm_worker(file, settings, worker)
        return
    report = confirm_search(file, settings)
    print_json(report.to_json()) if json else print_report(console, report)


@app.command()
@_command
def status(storage: Storage = DEFAULT_STORAGE, study: StudyName = None, json: Json = False):
    """Trials by state, progress and the best function of a study (and the size of the Pareto
    front of a (score, cost) study)."""
    from optuna_aquasurf.cli import _views
    from optuna_aquasurf.cli._storage import load_study

    data = _views.status(load_study(storage, study), storage)
    _views.print_json(data) if json else _views.print_status(console, data)


@app.command()
@_command
def best(storage: Storage = DEFAULT_STORAGE, study: StudyName = None, json: Json = False):
    """The best activation function of a study, its score and cost; in a (score, cost) study
    the Pareto front: each function with a better score than every cheaper one."""
    from optuna_aquasurf.cli import _views
    from optuna_aquasurf.cli._storage import load_study

    loaded = load_study(storage, study)
    if _views.is_cost_study(loaded):
        record = _views.front_record(loaded)
        _views.print_json(record) if json else _views.print_front(console, record)
    else:
        record = _views.best_record(loaded)
        _views.print_json(record) if json else _views.print_best(console, record)


@app.command()
@_command
def studies(storage: Storage = DEFAULT_STORAGE, json: Json = False):
    """The studies of the storage: directions, trials by state and best value."""
    from optuna_aquasurf.cli._studies import print_studies, study_summaries
    from optuna_aquasurf.cli._views import print_json

    records = study_summaries(storage)
    print_json(records) if json else print_studies(console, records)


@app.command()
@_command
def delete(
    study: Annotated[str, typer.Option("--study", help="Name of the study to delete.")],
    storage: Storage = DEFAULT_STORAGE,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
):
    """Delete a study with its trials (what other studies may reuse, such as maps and costs,
    is kept)."""
    from optuna_aquasurf.cli._storage import open_storage
    from optuna_aquasurf.cli._studies import delete_study, trial_count

    opened = open_storage(storage, must_exist=True)
    n_trials = trial_count(opened, study, storage)
    if not yes:
        typer.confirm(f"Delete the study {study!r} and its {n_trials} trials?", abort=True)
    delete_study(opened, study)
    console.print(f"Deleted the study {escape(study)} and its {n_trials} trials.")


class TopOrder(str, enum.Enum):
    score = "score"
    cost = "cost"


@app.command()
@_command
def top(
    storage: Storage = DEFAULT_STORAGE,
    study: StudyName = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Number of functions.")] = 10,
    by: Annotated[
        TopOrder,
        typer.Option(help="Best score first, or cheapest first (equal costs by score)."),
    ] = TopOrder.score,
    json: Json = False,
):
    """The best functions of a study, with their scores, costs (in relu passes: forward and
    backward time over relu's, as the study measured them) and equivalent names."""
    from optuna_aquasurf.cli import _views
    from optuna_aquasurf.cli._storage import load_study

    loaded = load_study(storage, study)
    rows = _views.top(loaded, limit, by=by.value)
    if json:
        _views.print_json(rows)
    elif rows:
        which = "Best" if by == TopOrder.score else "Cheapest"
        _views.print_top(console, rows, f"{which} functions of {loaded.study_name}")
    else:
        err_console.print(f"Study {escape(loaded.study_name)} has no completed trial yet.")


@app.command()
@_command
def plot(
    file: Annotated[
        Path | None,
        typer.Argument(help="The model file of the search; needed only if its map is missing."),
    ] = None,
    storage: Storage = DEFAULT_STORAGE,
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="Study name; default: the file's name (stem), or the only study in the storage.",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder of the plots.")] = Path("aquasurf_plots"),
    device: Annotated[str, typer.Option(help="Where the map is computed if missing.")] = "auto",
):
    """Plot the map of the space, the best-so-far curve and score against cost (PNG and
    interactive HTML).

    The map shows every function of the space, coloured by its predicted score, and the
    trained ones, coloured by their measured score. Score against cost shows the trained
    functions and the Pareto front: the best score for its cost. After `aquasurf confirm`, the
    confirmed functions' means and 95% intervals beside the baseline's. The map stored with the
    study is used; FILE is needed only to compute a map that is not stored yet (it depends on
    your model).
    """
    from optuna_aquasurf.cli._objective import resolve_device
    from optuna_aquasurf.cli._plot import write_plots
    from optuna_aquasurf.cli._storage import load_study
    from optuna_aquasurf.cli._study_sampler import plot_sampler
    from optuna_aquasurf.cli._userfile import load_user_file
    from optuna_aquasurf.cli._verbosity import set_optuna_verbosity

    set_optuna_verbosity()
    loaded = load_study(storage, study or (file.stem if file else None))
    if file is None:
        sampler = plot_sampler(loaded)
    else:
        sampler = plot_sampler(loaded, load_user_file(file), resolve_device(device))
    with err_console.status("Map of the space (computed if missing) and plots..."):
        paths = write_plots(loaded, sampler, out)
    for path in paths:
        console.print(f"wrote {escape(str(path))}")


@app.command()
@_command
def export(
    storage: Storage = DEFAULT_STORAGE,
    study: StudyName = None,
    pick: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="In a study of score and cost: export member N of the Pareto front, as "
            "`aquasurf best` numbers it.",
        ),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="X",
            help="Export the study's best function that costs at most X relu passes.",
        ),
    ] = None,
    expression: Annotated[
        str | None,
        typer.Option(help="Export this expression instead of a function of the study."),
    ] = None,
    out: Annotated[Path, typer.Option(help="The .py file to write.")] = Path(
        "aquasurf_activation.py"
    ),
):
    """Write an activation as a module file that needs only torch: the study's best (in a study
    of score and cost, the best score on its Pareto front), --pick, --max-cost or --expression.
    """
    from optuna_aquasurf.cli._export import study_origin, write_module

    origin = cost = None
    if expression is None:
        from optuna_aquasurf.cli._storage import load_study
        from optuna_aquasurf.cli._views import export_record

        record = export_record(load_study(storage, study), pick, max_cost)
        expression, cost, origin = record["expression"], record["cost"], study_origin(record)
    elif pick is not None or max_cost is not None:
        raise UserError("--expression names the function to export: leave out --pick, --max-cost.")
    cost = write_module(out, expression, origin or "Exported by `aquasurf export`.", cost)
    console.print(f"wrote {escape(str(out))}: {escape(expression)}, cost {cost:.3g} relu passes")
    if origin:
        console.print(escape(origin), soft_wrap=True)
    console.print(
        f"Use it:  from {out.stem} import Activation   (needs only torch; put the file next "
        "to your code)\n"
        f"         nn.Sequential(..., Activation(), ...)  or, in an existing model,\n"
        f"         swap_activations(model, Activation())  (optuna_aquasurf.integrations)\n"
        "         Activation() is fused by torch.compile; Activation(fused=False) is not",
        soft_wrap=True,
    )
