"""The storage of ``aquasurf optimize``: an RDBStorage that remembers the trial it started last."""

from __future__ import annotations

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState


class TrackingStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` that remembers the last trial this process started.

    A trial is started by creating it or by taking a waiting one. When the connection to the
    database is lost after that but before the objective runs (while Optuna reads the new trial
    back), the worker still knows which trial it left running.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_started: int | None = None

    # Optuna's _CachedStorage, which wraps every RDBStorage of a study, creates trials through
    # this private method (RDBStorage.create_new_trial calls it too).
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None):
        trial = super()._create_new_trial(study_id, template_trial)
        if trial.state == TrialState.RUNNING:  # not one enqueued to wait
            self.last_started = trial._trial_id
        return trial

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:
            self.last_started = trial_id
        return changed


def last_started(study) -> int | None:
    """The trial that the study's storage started last, if it is a :class:`TrackingStorage`."""
    storage = getattr(study._storage, "_backend", study._storage)  # inside Optuna's cache
    return storage.last_started if isinstance(storage, TrackingStorage) else None
