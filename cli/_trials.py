"""What a finished trial's record means for the search: does it count, does it run again.

Trials of ``aquasurf optimize`` record the user attributes ``activation``, ``device``,
``worker`` (host:process, recorded by the storage as the trial starts), ``seed``, ``seconds``
and, when they fail, ``fail_reason``:

- ``"interrupted"``: Ctrl-C; runs again when the study resumes.
- ``"lost connection"``: the connection to the database was lost during the trial; runs again
  once the worker has reconnected.
- ``"process died"``: the trial's process ended without a trace (``kill -9``, a crash); the next
  run on its host fails it at once. Runs again if it had an activation, unless it was a rerun
  already (a function whose process gets killed, by the system's out-of-memory killer say, is
  not tried forever); never counts toward ``--n-trials``.
- ``"error: <type>: <message>"``: the user's code raised; runs again once when the study resumes
  (after a fix), unless the trial was such a rerun already.
- ``"diverged: <what>"``: a loss, output or score that is not finite.
- ``"out of memory: <message>"``: CUDA ran out of memory.

A rerun records ``rerun_of``, the number of the trial it runs again. A trial killed without a
trace on another host (no ``fail_reason``) is failed by its missing heartbeat and retried by
Optuna.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

from optuna_aquasurf._fail_reasons import INTERRUPTED, LOST_CONNECTION, PROCESS_DIED


def counts_toward_target(trial: FrozenTrial) -> bool:
    """Whether a trial counts as finished for ``--n-trials``.

    Completed and pruned trials of the search do (not the runs of a confirmation); failed ones
    when the failure is the function's (diverged, out of memory) or a rerun failed again. Trials
    to run again, killed trials (their retry counts instead), interrupted ones, ones lost with
    the connection or with their process before they had an activation, running and waiting
    ones do not.
    """
    if "repeat_of" in trial.user_attrs:
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    reason = trial.user_attrs.get("fail_reason")
    failed = trial.state == TrialState.FAIL and reason is not None
    not_counted = (INTERRUPTED, LOST_CONNECTION, PROCESS_DIED)
    return failed and reason not in not_counted and not to_run_again(trial)


def count_finished(trials: list[FrozenTrial]) -> int:
    """How many of ``trials`` count toward ``--n-trials``."""
    return sum(counts_toward_target(t) for t in trials)


def to_run_again(trial: FrozenTrial) -> bool:
    """Whether a failed trial runs again when the study resumes (see the module notes)."""
    reason = trial.user_attrs.get("fail_reason", "")
    if trial.state != TrialState.FAIL or "activation" not in trial.user_attrs:
        return False
    if "repeat_of" in trial.user_attrs:  # aquasurf confirm trains what its lost runs miss
        return False
    once = reason.startswith("error:") or reason == PROCESS_DIED
    return reason in (INTERRUPTED, LOST_CONNECTION) or (once and "rerun_of" not in trial.user_attrs)


def pending_reruns(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials to run again that have no rerun yet."""
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    return [t for t in trials if to_run_again(t) and t.number not in rerun]
