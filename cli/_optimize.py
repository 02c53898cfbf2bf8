"""``aquasurf optimize``: create or resume a study and search activations for the user's model."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from optuna_aquasurf import SpaceExhaustedError
from optuna_aquasurf._baselines import DEFAULT_BASELINES
from optuna_aquasurf._dead_workers import fail_trials_of_dead_workers
from optuna_aquasurf._prior import source_label
from optuna_aquasurf._private import storage_of
from optuna_aquasurf._store import lost_connection
from optuna_aquasurf.cli import _views
from optuna_aquasurf.cli._console import UserError, console, err_console
from optuna_aquasurf.cli._equivalents import save_equivalents, space_equivalents
from optuna_aquasurf.cli._map_process import BackgroundMap
from optuna_aquasurf.cli._objective import (
    Objective,
    resolve_device,
    stop_on_interrupt,
)
from optuna_aquasurf.cli._progress import SearchProgress
from optuna_aquasurf.cli._storage import masked, open_storage
from optuna_aquasurf.cli._study_sampler import StudySettings, study_sampler
from optuna_aquasurf.cli._tracking_storage import last_started
from optuna_aquasurf.cli._trials import LOST_CONNECTION, count_finished, pending_reruns
from optuna_aquasurf.cli._userfile import (
    SwappedModel,
    UserFile,
    errors_of_user_code,
    load_user_file,
)
from optuna_aquasurf.cli._verbosity import set_optuna_verbosity

#: Rows of the table shown at the end.
TOP_ROWS = 10
#: Seconds waited before each attempt to reach the database again after a lost connection.
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 32)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner of ``--pruner``: median, hyperband or none.

    The median pruner spares the first 8 trials (the sampler's baselines) and the first 2
    reported steps: activations that start slowly are not cut at once.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def find_sites(user: UserFile) -> None:
    """Find the activation sites of a ``model()`` file now, so that a problem shows at once.

    Raises
    ------
    UserError
        When ``model()`` or its forward pass on the example input fails.
    """
    if not isinstance(user.build, SwappedModel):
        return
    problem = (
        f"Finding the activations of model() in {user.path} with a forward pass of "
        f"{user.example_source} failed"
    )
    with errors_of_user_code(problem):
        report = user.build.sites().report
    counts = ", ".join(f"{n} {action}" for action, n in report.counts.items() if n)
    err_console.print(f"Activations of model(): {counts or 'none found'}.")


@dataclass(frozen=True)
class SearchSettings:
    """The options of ``aquasurf optimize`` that every worker of a search shares (see its help)."""

    n_trials: int
    timeout: float | None
    device: str
    storage_url: str
    study_name: str | None
    seed: int
    pruner: str
    heartbeat_interval: int
    grace_period: int | None
    max_retry: int
    prior: tuple[str, ...] = ()
    max_cost: float | None = None
    objectives: str = "score"

    @property
    def with_cost(self) -> bool:
        """Whether the study minimises the cost as its second objective
        (``--objectives score,cost``)."""
        return self.objectives == "score,cost"

    def directions(self, score_direction: str) -> list[str]:
        """The study's directions: the score's (the model file's ``DIRECTION``), then with
        ``--objectives score,cost`` the cost's."""
        return [score_direction] + (["minimize"] if self.with_cost else [])

    def metric_names(self, user: UserFile) -> list[str]:
        """The names of the study's objectives, for optuna-dashboard and plots: the model file's
        metric (:attr:`~optuna_aquasurf.cli._userfile.UserFile.metric`), then ``cost``."""
        return [user.metric] + (["cost"] if self.with_cost else [])

    def kept(self, user: UserFile, device) -> StudySettings:
        """What the search of the model file ``user`` on ``device`` keeps with its study, but
        its map key, which its sampler gives."""
        return StudySettings.of_model_file(
            user,
            seed=self.seed,
            prior=self.prior,
            max_cost=self.max_cost,
            objectives=tuple(self.objectives.split(",")),
            cost_device=str(device),
        )


def open_study(path: Path, settings: SearchSettings) -> tuple[UserFile, optuna.Study]:
    """The model file and its study, created or loaded, with the sampler of the settings that
    this search keeps with it (:meth:`SearchSettings.kept`).

    Raises
    ------
    UserError
        For problems with the file, the storage or the study.
    """
    set_optuna_verbosity()
    user = load_user_file(path)
    find_sites(user)
    torch_device = resolve_device(settings.device)
    storage = open_storage(
        settings.storage_url,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
        max_retry=settings.max_retry,
    )
    directions = settings.directions(user.direction)
    kept = settings.kept(user, torch_device)
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name or path.stem,
        directions=directions,
        sampler=study_sampler(kept, user, torch_device),
        pruner=make_pruner(settings.pruner),
        load_if_exists=True,
    )
    created = [d.name.lower() for d in study.directions]
    if created != directions:
        raise UserError(
            f"Study {study.study_name!r} in {masked(settings.storage_url)} was created with "
            f"the directions {created}, but {path} (DIRECTION = {user.direction!r}) with "
            f"--objectives {settings.objectives} asks for {directions}: choose another --study "
            "name."
        )
    if study.metric_names is None:  # a new study, or one created by an older version
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(settings.metric_names(user))
    dataclasses.replace(kept, map_key=_map_key(study)).save(study)
    save_equivalents(study, study.sampler.space, DEFAULT_BASELINES)
    _read_prior(study)
    return user, study


def _read_prior(study: optuna.Study) -> None:
    """Read the ``--prior`` sources now (once per study), so that a bad one stops the search
    before its first trial.

    Raises
    ------
    UserError
        For a source that cannot be read.
    """
    try:
        study.sampler.prior_observations(study)
    except ValueError as error:
        raise UserError(f"--prior: {error}") from None


def _map_key(study: optuna.Study) -> str:
    """The key of the study's map, which builds the model of the Fisher probe once.

    Raises
    ------
    UserError
        When building the model fails.
    """
    with errors_of_user_code("Computing the map failed"):
        return study.sampler.map_key


def describe(study: optuna.Study, user: UserFile, settings: SearchSettings, where: str) -> int:
    """Print what the search is about to do; return the number of trials done already."""
    done = count_finished(study.get_trials(deepcopy=False))
    err_console.print(
        f"Study [bold]{study.study_name}[/] in {masked(settings.storage_url)}: {done} of "
        f"{settings.n_trials} "
        f"trials done ({user.direction}"
        + (", cost minimised" if settings.with_cost else "")
        + f"). Model {user.path} on {where}; "
        f"{len(study.sampler.space):,} functions"
        + (", Fisher features of the model" if user.fisher_batch else "")
        + "."
    )
    for source, (functions, _) in zip(settings.prior, study.sampler.prior_observations(study)):
        label = escape(source_label(source))
        err_console.print(f"Prior {label}: {len(functions):,} functions of the space scored.")
    if study.sampler.knows_costs(study):
        with err_console.status("Measuring what each function costs (once per space)..."):
            costs = study.sampler.costs(study)
    if settings.max_cost is not None:
        affordable = int((costs <= settings.max_cost).sum())
        skipped = ", ".join(
            f"{escape(name)} ({cost:.1f})"
            for name, cost in study.sampler.baselines_over_cost(study).items()
        )
        err_console.print(
            f"--max-cost {settings.max_cost:g}: {affordable:,} of {len(costs):,} functions cost "
            "at most that many relu passes"
            + (f"; baselines above it, skipped: {skipped}." if skipped else ".")
        )
    if done >= settings.n_trials:
        err_console.print(f"Nothing to do: raise --n-trials above {done} to continue.")
    return done


def print_top(study: optuna.Study, path: Path) -> None:
    """The table of the best functions, and what to do next."""
    rows = _views.top(study, TOP_ROWS, space_equivalents(study.sampler.space))
    if rows:
        _views.print_top(console, rows, f"Best functions of {study.study_name}")
        err_console.print(
            f"Plots: aquasurf plot {path}    PyTorch module: aquasurf export --study "
            f"{study.study_name}"
        )


def optimize(path: Path, settings: SearchSettings, worker: str | None = None) -> None:
    """Run the search until the study has ``n_trials`` finished trials (see the CLI help).

    With ``worker`` (a label such as ``"2/4"``), this process is one of several workers started
    by ``--workers``: it prints one plain line per trial and no summary.

    Raises
    ------
    UserError
        For problems with the file, the storage or the study, when the first trials all fail
        with the same error, and when the database stays unreachable.
    KeyboardInterrupt
        After Ctrl-C, once the running trial is marked failed (reason ``"interrupted"``).
    """
    user, study = open_study(path, settings)
    torch_device = resolve_device(settings.device)
    if worker is None:
        done = describe(study, user, settings, str(torch_device))
    else:
        done = count_finished(study.get_trials(deepcopy=False))
    if done < settings.n_trials:
        _fail_trials_of_dead_workers(study)
        _run_again(study, study.get_trials(deepcopy=False))
        progress = SearchProgress(err_console, settings.n_trials, done, worker)
        if worker is None:
            with BackgroundMap(study, path, settings) as background:
                _search(study, user, torch_device, settings, progress, background)
        else:  # the process that started the workers computes the map
            _search(study, user, torch_device, settings, progress)
    if worker is None:
        print_top(study, path)


def _fail_trials_of_dead_workers(study: optuna.Study) -> None:
    """Fail, and queue again, the trials left running by a process of this host that died."""
    for trial, again in fail_trials_of_dead_workers(study, _enqueue_rerun):
        worker = trial.user_attrs["worker"]
        message = f"Trial {trial.number} was left running by a process that died ({worker}): failed"
        err_console.print(escape(message + (", and it runs again." if again else ".")))


def _run_again(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """Queue once each interrupted trial and each trial failed by an error in the user's code."""
    queued = pending_reruns(trials)
    for trial in queued:
        _enqueue_rerun(study, trial)
    if queued:
        numbers = ", ".join(str(t.number) for t in queued)
        err_console.print(f"Running again the interrupted or failed trials {numbers}.")


def _enqueue_rerun(study: optuna.Study, trial: FrozenTrial) -> None:
    kept = {key: trial.user_attrs[key] for key in ("activation", "seed") if key in trial.user_attrs}
    study.enqueue_trial(trial.params, user_attrs={**kept, "rerun_of": trial.number})


def _search(study, user, device, settings: SearchSettings, progress, background=None) -> None:
    """Run trials until the study has ``n_trials`` finished ones, through lost connections,
    with the :class:`BackgroundMap` of the search, if any."""
    n_trials, timeout = settings.n_trials, settings.timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    with progress:

        def on_choose(number: int) -> None:
            if background is not None and background.must_wait():
                progress.choosing(number, "waiting for the features of the space")
                background.wait()
            progress.choosing(number)

        objective = Objective(
            user,
            device,
            settings.seed,
            on_choose=on_choose,
            on_start=progress.started,
            with_cost=settings.with_cost,
        )

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            if background is not None:
                background.poll()
            finished = count_finished(study.get_trials(deepcopy=False))
            progress.finished(trial, finished, _views.best_trial(study))
            if finished >= n_trials:
                study.stop()

        while not objective.interrupted:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                with stop_on_interrupt(objective, study):
                    study.optimize(objective, timeout=left, callbacks=[after_trial], catch=())
                break
            except SpaceExhaustedError as error:
                err_console.print(f"Search finished: {error}")
                break
            except KeyboardInterrupt:
                objective.interrupted = True
            except Exception as error:
                lost = lost_connection(error)
                if lost is None:
                    raise
                # the trial started last: the objective's, or one lost before reaching it
                _reconnect(study, last_started(study), lost, settings.storage_url)
                finished = count_finished(study.get_trials(deepcopy=False))
                if finished >= n_trials:
                    break
    exhausted = study.sampler.search(study).exhausted
    if exhausted is not None:
        err_console.print(f"Search finished: {exhausted}.")
    if objective.interrupted:
        number = objective.interrupted_trial
        message = "[yellow]Interrupted.[/]"
        if number is not None:
            message += f" Trial {number} is marked failed ('interrupted') and runs again on resume."
        err_console.print(f"{message} Finished trials are kept: run the same command to resume.")
        raise KeyboardInterrupt


def _reconnect(study: optuna.Study, trial_id: int | None, error: SQLAlchemyError, url: str) -> None:
    """Wait for the database to answer again (``RECONNECT_DELAYS``), then fail the trial that
    the lost connection ``error`` left running (``trial_id``, if so) and queue it to run again.

    Raises
    ------
    UserError
        When the database does not answer after the last delay.
    """
    for delay in RECONNECT_DELAYS:
        problem = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        err_console.print(
            f"[yellow]Lost the connection to the database[/] ({escape(problem)}); "
            f"trying again in {delay} s."
        )
        time.sleep(delay)
        try:
            if trial_id is not None:
                _fail_lost_trial(study, trial_id)
            _run_again(study, study.get_trials(deepcopy=False))
            err_console.print("Connection to the database restored.")
            return
        except Exception as again:
            error = lost_connection(again)
            if error is None:
                raise
    raise UserError(
        f"Lost the connection to the database {masked(url)} and could not reconnect in "
        f"{sum(RECONNECT_DELAYS):g} s: {problem}\nFinished trials are kept: run the same "
        "command to resume when the database is back."
    )


def _fail_lost_trial(study: optuna.Study, trial_id: int) -> None:
    """Mark the trial that was running when the connection was lost failed, to run again."""
    storage = storage_of(study)
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.RUNNING:
        storage.set_trial_user_attr(trial_id, "fail_reason", LOST_CONNECTION)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    elif trial.state == TrialState.FAIL and "fail_reason" not in trial.user_attrs:
        # Failed by optuna (too late to record the reason), or stale and retried elsewhere.
        trials = study.get_trials(deepcopy=False)
        if not any(t.system_attrs.get("failed_trial") == trial.number for t in trials):
            _enqueue_rerun(study, trial)
