"""Trials left running by a process of this host that died (``kill -9``, a crash): failed at
once and run again once, instead of holding their function until a heartbeat goes stale (or
forever, in a storage without heartbeats).

Each trial records the process that runs it in its user attribute ``worker`` (``host:pid``):
:func:`~optuna_aquasurf.suggest_activation` records it for trials run by ``study.optimize``
(not for ask-and-tell ones, which another process may resume, as Ray Tune does), and the
CLI's storage as the trial starts. Trials of other hosts, and of processes that still exist,
are left to Optuna's heartbeats.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from optuna_aquasurf._fail_reasons import PROCESS_DIED
from optuna_aquasurf._private import storage_of, trial_id


def worker_label() -> str:
    """This process as a trial's user attribute ``worker`` names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_trials_of_dead_workers(
    study: optuna.Study,
    run_again: Callable[[optuna.Study, FrozenTrial], None],
    name: str = "activation",
) -> list[tuple[FrozenTrial, bool]]:
    """Fail each running trial of ``study`` whose worker process on this host is gone.

    A failed trial records ``fail_reason="process died"``, which gives its claim on a function
    back; ``run_again(study, trial)`` queues it again when it had an activation (user attribute
    ``name``) and was not such a rerun already (``rerun_of``: a function whose process gets
    killed, by the system's out-of-memory killer say, is not tried forever). Of several
    processes looking at once, only the one whose storage moves a trial to FAIL queues it.

    Returns
    -------
    list
        The trials failed here, each with whether it was queued again.
    """
    storage = storage_of(study)
    failed_here = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or not _died(worker):
            continue
        try:
            storage.set_trial_user_attr(trial_id(trial), "fail_reason", PROCESS_DIED)
            storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
        except UpdateFinishedTrialError:  # failed by another process meanwhile, which queues it
            continue
        failed = storage.get_trial(trial_id(trial))
        again = name in failed.user_attrs and "rerun_of" not in failed.user_attrs
        if again:
            run_again(study, failed)
        failed_here.append((failed, again))
    return failed_here


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
