"""The objective of ``aquasurf optimize``: train the activation a trial suggests, record the run.

What each trial records, and what its failures mean: see :mod:`optuna_aquasurf.cli._trials`.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
import warnings
from collections.abc import Callable

import numpy as np
import optuna
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from torch import nn

from optuna_aquasurf import SpaceExhaustedError, suggest_activation
from optuna_aquasurf._store import lost_connection
from optuna_aquasurf.cli._console import UserError, err_console
from optuna_aquasurf.cli._trainer import Diverged, fit
from optuna_aquasurf.cli._trials import INTERRUPTED, LOST_CONNECTION
from optuna_aquasurf.cli._userfile import UserFile, user_traceback

#: The search stops when this many first trials of a run all raise the same type of exception.
SAME_FAILURES = 3
#: Longest ``fail_reason`` kept, in characters.
REASON_LENGTH = 500


class RepeatedFailure(UserError):
    """The first trials of a run all failed the same way: the user's code is broken."""


class MapFailure(UserError):
    """The map of the space, needed to choose a function, could not be computed."""


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``: ``auto`` is CUDA when available, else the CPU.

    Raises
    ------
    UserError
        For a malformed or unavailable device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {name}: CUDA is not available here; use auto or cpu.")
        if device.index is not None and device.index >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device(s).")
    return device


class Objective:
    """Called by ``study.optimize`` for each trial.

    Parameters
    ----------
    user
        The model file.
    device
        Where models train.
    seed
        Each trial seeds ``random``, numpy and torch with ``seed + trial.number`` (a retried
        trial with the seed of the trial it retries), recorded in its user attribute ``seed``.
    on_choose
        Called with the trial number before its activation is chosen (which may wait for the
        map of the space).
    on_start
        Called with the trial number and its expression once the activation is chosen.
    with_cost
        Return the activation's cost (:attr:`ActivationFunction.cost`) as a second value, for
        a study of score and cost.

    Attributes
    ----------
    running
        Whether a trial is running now.
    interrupted
        Set by Ctrl-C (see :func:`stop_on_interrupt`).
    interrupted_trial
        The number of the trial that Ctrl-C interrupted, if any.
    """

    def __init__(
        self,
        user: UserFile,
        device: torch.device,
        seed: int,
        on_choose: Callable[[int], None],
        on_start: Callable[[int, str], None],
        with_cost: bool = False,
    ):
        self.user = user
        self.device = device
        self.seed = seed
        self.on_choose = on_choose
        self.on_start = on_start
        self.with_cost = with_cost
        self.running = False
        self.interrupted = False
        self.interrupted_trial: int | None = None
        self._first_reasons: list[str | None] = []
        self._shown: set[str] = set()
        self._started = 0.0  # when the running trial started, or got its activation

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.running = True
        self._started = time.perf_counter()
        try:
            if self.interrupted:
                raise KeyboardInterrupt
            return self._run(trial)
        except KeyboardInterrupt:
            self.interrupted_trial = trial.number
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        except Exception as error:
            if lost_connection(error) is not None:  # the database's fault, not the function's
                with contextlib.suppress(Exception):  # recorded if the connection is back
                    trial.set_user_attr("fail_reason", LOST_CONNECTION)
            raise
        finally:
            self.running = False
            trial.set_user_attr("seconds", round(time.perf_counter() - self._started, 3))

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr("device", str(self.device))
        seed = trial.user_attrs.get("seed", self.seed + trial.number)  # a retry keeps its seed
        trial.set_user_attr("seed", seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        activation = self._choose(trial)
        self._started = time.perf_counter()  # the trial's seconds leave out a wait for the map
        self.on_start(trial.number, activation.expression)
        for name, distribution in self.user.search.items():
            _suggest(trial, name, distribution)
        reason = None
        try:
            score = self._train(trial, activation)
        except optuna.TrialPruned:
            self._note_outcome(None)
            raise
        except Diverged as error:
            reason = f"diverged: {error}"
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            reason = f"out of memory: {str(error).splitlines()[0]}"
        except Exception as error:
            if lost_connection(error) is not None:  # from trial.report() in the user's train()
                raise
            reason = f"error: {type(error).__name__}: {error}"
            if reason not in self._shown:
                self._shown.add(reason)
                err_console.print(f"[red]Trial {trial.number} failed:[/]")
                err_console.print(user_traceback(error), markup=False)
        if reason is not None:
            trial.set_user_attr("fail_reason", reason[:REASON_LENGTH])
            self._note_outcome(reason)
            score = math.nan  # optuna records a NaN as FAIL
        else:
            self._note_outcome(None)
        return (score, activation.cost) if self.with_cost else score

    def _choose(self, trial: optuna.Trial):
        """The trial's activation; errors computing the map stop the search with their cause."""
        self.on_choose(trial.number)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # UMAP's and scikit-learn's notes on the layout
                return suggest_activation(trial)
        except SpaceExhaustedError:
            raise
        except Exception as error:
            if lost_connection(error) is not None:
                raise
            raise MapFailure(
                f"Computing the map of the space failed:\n{user_traceback(error)}"
            ) from None

    def _train(self, trial: optuna.Trial, activation: nn.Module) -> float:
        model = self.user.build(activation)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the model builder returned {type(model).__name__}, not an nn.Module")
        model = model.to(self.device)
        if self.user.train is not None:
            value = self.user.train(model, trial, self.device)
            try:
                score = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"train() must return the validation score, a number; got {value!r}"
                ) from None
            if not math.isfinite(score):
                raise Diverged(f"train() returned {score}")
            return score
        train_loader, val_loader = self.user.loaders
        settings = {key: trial.params.get(key, value) for key, value in self.user.trainer.items()}
        return fit(
            model,
            train_loader,
            val_loader,
            trial,
            self.device,
            epochs=int(settings["epochs"]),
            lr=settings["lr"],
            weight_decay=settings["weight_decay"],
        )

    def _note_outcome(self, reason: str | None) -> None:
        """Stop when the first trials of this run all raised the same type of exception."""
        if len(self._first_reasons) == SAME_FAILURES:
            return
        self._first_reasons.append(reason)
        kinds = {
            r.split(":")[1] if r and r.startswith("error:") else None for r in self._first_reasons
        }
        if len(self._first_reasons) == SAME_FAILURES and kinds != {None} and len(kinds) == 1:
            raise RepeatedFailure(
                f"The first {SAME_FAILURES} trials all failed with{kinds.pop()}, the last with:\n"
                f"  {reason}\nStopped the search. Fix {self.user.path} and run the same command "
                "again: these functions will be tried again."
            )


@contextlib.contextmanager
def stop_on_interrupt(objective: Objective, study: optuna.Study):
    """Make Ctrl-C interrupt the running trial, or stop the study between trials."""

    def handle(signum, frame):
        objective.interrupted = True
        if objective.running:
            raise KeyboardInterrupt
        with contextlib.suppress(RuntimeError):  # not inside study.optimize (yet)
            study.stop()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _suggest(trial: optuna.Trial, name: str, distribution):
    """Suggest a SEARCH parameter through the public API of its distribution's kind."""
    d = distribution
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_categorical(name, d.choices)
