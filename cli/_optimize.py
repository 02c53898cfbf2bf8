"""``aquasurf optimize``: create or resume a study and search activations for the user's model."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from optuna_aquasurf import AquaSurfSampler, SpaceExhaustedError
from optuna_aquasurf.cli import _views
from optuna_aquasurf.cli._console import UserError, console, err_console
from optuna_aquasurf.cli._objective import (
    Objective,
    resolve_device,
    stop_on_interrupt,
)
from optuna_aquasurf.cli._progress import SearchProgress
from optuna_aquasurf.cli._storage import masked, open_storage
from optuna_aquasurf.cli._trials import counts_toward_target, pending_reruns
from optuna_aquasurf.cli._userfile import UserFile, load_user_file, user_traceback

#: Rows of the table shown at the end.
TOP_ROWS = 10


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


def build_sampler(user: UserFile, seed: int, device) -> AquaSurfSampler:
    """The sampler of the model file: its SPACE, a Fisher probe with ``fisher_batch()``."""
    return AquaSurfSampler(space=user.search_space(), probe=user.probe(seed, device), seed=seed)


def optimize(
    path: Path,
    *,
    n_trials: int,
    timeout: float | None,
    device: str,
    storage_url: str,
    study_name: str | None,
    seed: int,
    pruner: str,
    heartbeat_interval: int,
    grace_period: int | None,
    max_retry: int,
) -> None:
    """Run the search until the study has ``n_trials`` finished trials (see the CLI help).

    Raises
    ------
    UserError
        For problems with the file, the storage or the study, and when the first trials all
        fail with the same error.
    KeyboardInterrupt
        After Ctrl-C, once the running trial is marked failed (reason ``"interrupted"``).
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    user = load_user_file(path)
    torch_device = resolve_device(device)
    storage = open_storage(
        storage_url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    sampler = build_sampler(user, seed, torch_device)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name or path.stem,
        direction=user.direction,
        sampler=sampler,
        pruner=make_pruner(pruner),
        load_if_exists=True,
    )
    if study.direction.name.lower() != user.direction:
        raise UserError(
            f"Study {study.study_name!r} in {masked(storage_url)} was created to "
            f"{study.direction.name.lower()}, but {path} says DIRECTION = {user.direction!r}: "
            "choose another --study name."
        )
    study.set_user_attr(
        _views.SETTINGS_ATTR, {"file": str(path), "space": user.space, "seed": seed}
    )
    trials = study.get_trials(deepcopy=False)
    done = sum(counts_toward_target(t) for t in trials)
    err_console.print(
        f"Study [bold]{study.study_name}[/] in {masked(storage_url)}: {done} of {n_trials} "
        f"trials done ({user.direction}). Model {path} on {torch_device}; "
        f"{len(sampler.space):,} functions"
        + (", Fisher features of the model" if user.fisher_batch else "")
        + "."
    )
    if done >= n_trials:
        err_console.print(f"Nothing to do: raise --n-trials above {done} to continue.")
    else:
        _run_again(study, trials)
        _prepare_map(study, sampler, fisher=user.fisher_batch is not None)
        _search(study, user, torch_device, seed, n_trials, done, timeout)
    rows = _views.top(study, TOP_ROWS, sampler.space)
    if rows:
        _views.print_top(console, rows, f"Best functions of {study.study_name}")
        err_console.print(
            f"Plots: aquasurf plot {path}    PyTorch module: aquasurf export --study "
            f"{study.study_name}"
        )


def _run_again(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """Queue once each interrupted trial and each trial failed by an error in the user's code."""
    queued = pending_reruns(trials)
    for trial in queued:
        kept = {
            key: trial.user_attrs[key] for key in ("activation", "seed") if key in trial.user_attrs
        }
        study.enqueue_trial(trial.params, user_attrs={**kept, "rerun_of": trial.number})
    if queued:
        numbers = ", ".join(str(t.number) for t in queued)
        err_console.print(f"Running again the interrupted or failed trials {numbers}.")


def _prepare_map(study: optuna.Study, sampler: AquaSurfSampler, fisher: bool) -> None:
    """Compute (or load) the map of the space before the trials, with its own status line."""
    started = time.perf_counter()
    what = "Fisher features of your model, then UMAP" if fisher else "UMAP"
    status = f"Map of the {len(sampler.space):,} functions ({what}; computed once, then stored)..."
    with err_console.status(status), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP's and scikit-learn's notes on the layout
        try:
            sampler.embedding(study)
        except Exception as error:  # most likely in the model file's build_model or model
            raise UserError(f"Computing the map failed:\n{user_traceback(error)}") from None
    err_console.print(f"Map of the space ready ({time.perf_counter() - started:.1f} s).")


def _search(study, user, device, seed, n_trials, done, timeout) -> None:
    with SearchProgress(err_console, n_trials, done) as progress:
        objective = Objective(user, device, seed, on_start=progress.started)

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            finished = sum(counts_toward_target(t) for t in study.get_trials(deepcopy=False))
            progress.finished(trial, finished, _views.best_trial(study))
            if finished >= n_trials:
                study.stop()

        try:
            with stop_on_interrupt(objective, study):
                study.optimize(objective, timeout=timeout, callbacks=[after_trial], catch=())
        except SpaceExhaustedError as error:
            err_console.print(f"Search finished: {error}")
        except KeyboardInterrupt:
            objective.interrupted = True
    if objective.interrupted:
        number = objective.interrupted_trial
        message = "[yellow]Interrupted.[/]"
        if number is not None:
            message += f" Trial {number} is marked failed ('interrupted') and runs again on resume."
        err_console.print(f"{message} Finished trials are kept: run the same command to resume.")
        raise KeyboardInterrupt
