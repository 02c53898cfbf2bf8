"""The storage of ``aquasurf optimize``: an RDBStorage that remembers the trial it started last
and records, in each trial it starts, the process that runs it."""

from __future__ import annotations

import copy

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from optuna_aquasurf._dead_workers import worker_label
from optuna_aquasurf._private import storage_of, trial_id, uncached


class TrackingStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` that remembers the last trial this process started
    and records the user attribute ``worker`` (see :func:`worker_label`) of each.

    A trial is started by creating it or by taking a waiting one. When the connection to the
    database is lost after that but before the objective runs (while Optuna reads the new trial
    back), the worker still knows which trial it left running. ``worker`` lets the next run on
    this host fail at once a trial whose process died (see
    :mod:`optuna_aquasurf._dead_workers`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_started: int | None = None

    # Optuna's _CachedStorage, which wraps every RDBStorage of a study, creates trials through
    # this private method (RDBStorage.create_new_trial calls it too).
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None):
        if template_trial is None:  # study.ask(): created running, with its worker, at once
            template_trial = create_trial(
                state=TrialState.RUNNING, user_attrs={"worker": worker_label()}
            )
        elif template_trial.state == TrialState.WAITING and "worker" in template_trial.user_attrs:
            # Optuna's retry of a stale trial copies its attributes. A waiting trial has no
            # worker: once running, it must not pass for a trial of the process that died.
            template_trial = copy.deepcopy(template_trial)
            del template_trial.user_attrs["worker"]
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:  # not one enqueued to wait
            self.last_started = trial_id(trial)
        return trial

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self.last_started = trial_id
            self.set_trial_user_attr(trial_id, "worker", worker_label())
        return changed


def last_started(study) -> int | None:
    """The trial that the study's storage started last, if it is a :class:`TrackingStorage`."""
    storage = uncached(storage_of(study))
    return storage.last_started if isinstance(storage, TrackingStorage) else None
