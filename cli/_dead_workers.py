"""Trials left running by a process of this host that died (``kill -9``, a crash): the next run
fails them at once, instead of waiting for their heartbeat to go stale.

Each trial records the process that runs it in its user attribute ``worker`` (``host:pid``, see
:class:`~optuna_aquasurf.cli._tracking_storage.TrackingStorage`). Trials of other hosts, and of
processes that still exist, are left to Optuna's heartbeats.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape

from optuna_aquasurf.cli._console import err_console
from optuna_aquasurf.cli._trials import PROCESS_DIED, to_run_again


def fail_trials_of_dead_workers(
    study: optuna.Study, run_again: Callable[[optuna.Study, FrozenTrial], None]
) -> None:
    """Fail each running trial of ``study`` whose worker process on this host is gone.

    A failed trial records ``fail_reason="process died"``; it gives its claim on a function
    back, and ``run_again(study, trial)`` queues it again when it had an activation (see
    :func:`~optuna_aquasurf.cli._trials.to_run_again`). Of several runs starting at once, only
    the one whose storage moves a trial to FAIL queues it.
    """
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or not _died(worker):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", PROCESS_DIED)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # failed by another run meanwhile, which queues it
            continue
        failed = storage.get_trial(trial._trial_id)
        message = f"Trial {trial.number} was left running by a process that died ({worker}): failed"
        if to_run_again(failed):
            run_again(study, failed)
            message += ", and it runs again"
        err_console.print(escape(message) + ".")


def _died(worker: str) -> bool:
    """Whether ``worker`` (``host:pid``) is a process of this host that no longer exists."""
    host, _, pid = worker.rpartition(":")
    # Only POSIX signal 0 merely checks a process (on Windows it is Ctrl-C).
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        pass
    return False
