"""Claims through Optuna's storage API, for the storages that have no tables of the project's:
journals (a file, Redis) and the gRPC proxy.

A claim is a system attribute of the trial, ``aquasurf:claim:<function>``, whose value says
where the claim stands: ``"wanted"``, ``"kept"`` or ``"given up"``. A trial claims a function
in three steps:

1. it writes ``"wanted"``;
2. it reads the study's trials, and finds its rivals: the trials not failed whose attribute of
   the same function is ``"wanted"`` or ``"kept"``;
3. with no rival, it writes ``"kept"``: the function is its own. It gives up (writes
   ``"given up"`` and picks another function) if a rival has kept the function, or if a rival
   of a smaller trial number wants it; while its only rivals are trials of larger numbers that
   want it, it reads again until each of them has kept the function or given up (those that
   read after its ``"wanted"`` give up for it; one that read before may have kept it).

Two trials can never both keep one function. Each keeps it only after a read, made after its
own ``"wanted"``, that showed no rival. Of two trials, the one whose ``"wanted"`` was written
second reads after both were written, and sees the other's ``"wanted"`` or ``"kept"``: it could
keep the function only after the other gave up. This holds for any storage that shows every
read what was written before it began, in every process: Optuna's journal (one log, in one
order for all), the gRPC proxy (one server) and the RDB behind it. The trial of the smallest
number never gives up for a rival that merely wants the function, and never waits for one, so
of trials that claim one function together, one keeps it. A rival that does not settle within
:data:`CLAIM_WAIT` seconds (its process died between two steps) makes the claim give up: the
claimer picks another function.

A failed trial's claim is stale: its function is free again (a retry of the trial claims it
anew).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from optuna.storages import BaseStorage
from optuna.trial import TrialState

from optuna_aquasurf import _private as private
from optuna_aquasurf._store import Entries, Store

WANTED, KEPT, GIVEN_UP = "wanted", "kept", "given up"
#: Seconds a claim waits for rivals of larger trial numbers to keep the function or give it up.
CLAIM_WAIT = 10.0
#: Seconds between two reads while waiting.
CLAIM_POLL = 0.01


def claim_attr(function: int) -> str:
    """The trial system attribute of a claim on ``function``."""
    return f"aquasurf:claim:{function}"


class TrialAttrStore(Store):
    """A store whose claims are trial system attributes, written and read through the storage's
    own API, and whose entries and leases are kept in ``entries``.

    Parameters
    ----------
    storage
        The storage of the studies (held weakly: the store is kept per storage).
    entries
        Where embeddings, Fisher features, priors and costs live (see
        :mod:`optuna_aquasurf._journal_entries`).
    """

    def __init__(self, storage: BaseStorage, entries: Entries):
        self._storage = weakref.ref(storage)
        self.entries = entries
        self.transient_errors = entries.transient_errors

    def load(self, table, key, chunk=0):
        return self.entries.load(table, key, chunk)

    def save(self, table, key, arrays, chunk=0):
        self.entries.save(table, key, arrays, chunk)

    def acquire(self, entry, chunk, holder):
        return self.entries.acquire(entry, chunk, holder)

    def renew(self, entry, chunk, holder):
        self.entries.renew(entry, chunk, holder)

    def release(self, entry, chunk, holder):
        self.entries.release(entry, chunk, holder)

    def claim(
        self, study_id: int, function: int, trial_id: int, is_stale: Callable[[int], bool]
    ) -> bool:
        """Claim ``function`` for ``trial_id`` in the three steps of this module's rule.

        ``is_stale`` is not called: the rivals are read with their states, and only the
        study's own trials are read.
        """
        storage = self._storage()
        attr = claim_attr(function)
        storage.set_trial_system_attr(trial_id, attr, WANTED)
        deadline = time.monotonic() + CLAIM_WAIT
        while True:
            trials = storage.get_all_trials(study_id, deepcopy=False)
            number = next(t.number for t in trials if private.trial_id(t) == trial_id)
            rivals = [
                (t.number, t.system_attrs[attr])
                for t in trials
                if private.trial_id(t) != trial_id
                and t.state != TrialState.FAIL
                and t.system_attrs.get(attr) in (WANTED, KEPT)
            ]
            if not rivals:
                storage.set_trial_system_attr(trial_id, attr, KEPT)
                return True
            lost = any(state == KEPT or rival < number for rival, state in rivals)
            if lost or time.monotonic() > deadline:
                storage.set_trial_system_attr(trial_id, attr, GIVEN_UP)
                return False
            time.sleep(CLAIM_POLL)
