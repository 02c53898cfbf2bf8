"""Confirm the winners of a search: train the best functions and a baseline again, as trials of
the same study, and tell which differences the noise between training seeds cannot explain.

A search reports the luckiest of its good functions: scores move between training seeds, and the
best of many noisy scores is biased upwards (the winner's curse). :func:`confirm` gives the
leading functions and the best baseline ``repeats`` scores each, then compares their means.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optuna_aquasurf._dead_workers import fail_trials_of_dead_workers, worker_label
from optuna_aquasurf._expression import canonical
from optuna_aquasurf._fail_reasons import INTERRUPTED, LOST_RUNS
from optuna_aquasurf._intervals import difference_interval, is_better, mean_interval
from optuna_aquasurf._private import storage_of, study_id
from optuna_aquasurf._sampler import AquaSurfSampler
from optuna_aquasurf._store import store_for

__all__ = ["ConfirmRecord", "ConfirmReport", "confirm"]

#: Seconds between two tries to take a study's confirmation lease that another process holds.
LEASE_POLL = 0.02


@dataclass(frozen=True)
class ConfirmRecord:
    """What the trials of one function say, its scores being the study's first objective.

    Attributes
    ----------
    activation
        The expression, spelled as the study first did.
    n
        Its scores: completed trials with a finite score.
    mean, std
        Their mean and standard deviation (``std`` None below 2 scores).
    ci95
        The 95% t-interval of the mean (None below 2 scores).
    difference
        The mean minus the reference's.
    difference_ci95
        The 95% Welch interval of that difference (None for the reference itself, and below 2
        scores on either side).
    beats_baseline
        Whether that interval lies above zero (below zero in a minimised study).
    n_failed
        Its trials that failed, diverged or were pruned.
    """

    activation: str
    n: int
    mean: float | None
    std: float | None
    ci95: tuple[float, float] | None
    difference: float | None
    difference_ci95: tuple[float, float] | None
    beats_baseline: bool
    n_failed: int


@dataclass(frozen=True)
class ConfirmReport:
    """The confirmed functions, best mean first, against the reference ``baseline``."""

    baseline: str
    records: tuple[ConfirmRecord, ...]
    maximize: bool

    @property
    def best(self) -> str:
        """The expression with the best mean score."""
        return self.records[0].activation

    def verdict(self) -> str:
        """One line: the best function that beats the reference, by how much, or that none
        does."""
        winner = next((r for r in self.records if r.beats_baseline), None)
        if winner is None:
            counts = sorted({r.n for r in self.records})
            each = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            return (
                f"no function is distinguishably better than {self.baseline} with {each} "
                "scores each"
            )
        # How much better, positive in either direction.
        sign = 1.0 if self.maximize else -1.0
        gain = sign * winner.difference
        low, high = sorted(sign * bound for bound in winner.difference_ci95)
        return (
            f"{winner.activation} beats {self.baseline} by {gain:.3g} "
            f"(95% interval {low:.3g} to {high:.3g})"
        )

    def to_json(self) -> dict[str, Any]:
        """``{"baseline": EXPRESSION, "functions": [record, ...]}``, best mean first: a dict
        that :func:`json.dumps` writes."""
        return {"baseline": self.baseline, "functions": [asdict(r) for r in self.records]}


def confirm(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    top: int = 5,
    repeats: int = 3,
    *,
    against: str | None = None,
    until_separated: bool = False,
    max_trials: int | None = None,
    name: str = "activation",
) -> ConfirmReport:
    """Train the ``top`` functions of ``study`` and its best baseline again, and compare them.

    The ``top`` functions by mean score so far, and the reference (the sampler's baseline with
    the best mean, or ``against``, trained if the study lacks it), are each trained until they
    have ``repeats`` runs in all, the search's own included. Every run is a trial of the study:
    enqueued with the function's expression and the other parameters of the trial that first
    scored it, marked with the user attribute ``repeat_of`` (that trial's number), and run by
    ``study.optimize(objective)``, so the sampler counts it as one more score of the same
    function. The objective must draw a new training seed for each trial: seed from
    ``trial.number``, as ``aquasurf optimize`` does with ``seed + trial.number``.

    With ``until_separated=True``, confirmation goes on as a race: each round gives one more
    run to the leader (the best mean) and to every function whose difference to the leader has
    a 95% interval that includes zero, and the functions worse beyond doubt drop out. It stops
    when the leader is separated from all others, or once ``max_trials`` trials have run.

    Intervals are Welch t-intervals of the difference of two means, with Welch–Satterthwaite
    degrees of freedom (:func:`scipy.stats.ttest_ind` with ``equal_var=False`` gives the
    same): a function's scores may vary more than another's, and with 3 scores each a normal
    interval would be far too narrow. Each interval is for one comparison: with ``top=5``, a
    function no better than the reference passes for better in about one confirmation of eight
    (``1 - 0.975**5``), and more often as the search's own score, the lucky draw that made it a
    leader, counts among its scores.

    Confirmation can be interrupted and run again: a rerun counts the study's trials and trains
    only what is missing. A run counts when completed (its score, the first objective), failed,
    diverged or pruned (a failure of its function, in ``n_failed``); a run waiting in the queue
    or running is counted as under way and not doubled. A run that ends by Ctrl-C
    (``fail_reason="interrupted"``, recorded here), a lost database connection or a process
    that died is trained again: :func:`suggest_activation` records each trial's process in the
    user attribute ``worker`` (``host:pid``), and a run left running by a process of this host
    that no longer exists is failed (``fail_reason="process died"``) and trained again. Runs of
    other hosts are failed by Optuna's heartbeats, if the storage has them
    (``RDBStorage(url, heartbeat_interval=60)``), and count as failures; without heartbeats
    such a run stays under way until it is failed (``study.tell(number, state=TrialState.FAIL)``).

    Several processes can confirm one study at once, each with the same call, on a storage they
    share (SQLite or PostgreSQL, say): they share the runs, and no run is trained twice. A
    process counts the runs and enqueues the missing ones while it holds the study's
    confirmation lease (kept by the sampler's store, with its claims), so that what one enqueued
    is under way for the others; and each trains waiting runs until none is left, taking them in
    turn under that lease, so that none starts a trial of the search when another took the last
    one. In a race, a function with a run under way gets no other until that one ends.

    Parameters
    ----------
    study
        A study of an :class:`AquaSurfSampler`: one objective, or score and cost (the score
        counts).
    objective
        The study's objective, which calls :func:`suggest_activation`.
    top
        How many of the best functions to confirm.
    repeats
        Runs of each function, its earlier trials included (at least 2).
    against
        The reference expression; by default the best of the sampler's baselines in the study.
    until_separated
        Race the functions until the leader is separated (see above).
    max_trials
        With ``until_separated``: the most trials this call trains.
    name
        The user attribute that holds the activation (as in :func:`suggest_activation`).

    Returns
    -------
    ConfirmReport
        The records of the confirmed functions and the reference, best mean first.

    Raises
    ------
    TypeError
        If the study's sampler is not an :class:`AquaSurfSampler`.
    ValueError
        For ``top`` below 1, ``repeats`` below 2, ``max_trials`` without ``until_separated``
        (or missing with it), a study without a completed trial of an activation, or no
        baseline with a score and no ``against``.

    Examples
    --------
    >>> import numpy as np, optuna, torch
    >>> from optuna_aquasurf import AquaSurfSampler, confirm, suggest_activation
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> def objective(trial):
    ...     act = suggest_activation(trial)
    ...     seed_noise = np.random.default_rng(trial.number).normal(scale=0.1)
    ...     return float(act(torch.linspace(-1, 1, 5)).sum()) + seed_noise
    >>> space = ["relu(x)", "tanh(x)", "abs(x)", "swish(x)"]
    >>> sampler = AquaSurfSampler(space, baselines=["relu(x)"], seed=0)
    >>> study = optuna.create_study(direction="maximize", sampler=sampler)
    >>> study.optimize(objective, n_trials=4)
    >>> report = confirm(study, objective, top=2, repeats=3)
    >>> report.verdict()
    'abs(x) beats relu(x) by 1.48 (95% interval 1.13 to 1.83)'
    >>> [(r.activation, r.n) for r in report.records]
    [('abs(x)', 3), ('relu(x)', 3)]
    """
    return confirm_with(
        study,
        objective,
        top,
        repeats,
        against=against,
        until_separated=until_separated,
        max_trials=max_trials,
        name=name,
    )


def confirm_with(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    top: int = 5,
    repeats: int = 3,
    *,
    against: str | None = None,
    until_separated: bool = False,
    max_trials: int | None = None,
    name: str = "activation",
    train_queued: Callable[[int], None] | None = None,
) -> ConfirmReport:
    """:func:`confirm`, whose enqueued runs ``train_queued(n)`` trains, ``n`` being the number of
    waiting trials, instead of :func:`run_queued` in this process: ``aquasurf confirm
    --workers`` starts worker processes that each call :func:`run_queued`. ``objective`` is not
    called then."""
    sampler = study.sampler
    if not isinstance(sampler, AquaSurfSampler):
        raise TypeError(
            "confirm needs a study whose sampler is an AquaSurfSampler, not "
            f"{type(sampler).__name__}: load it with sampler=AquaSurfSampler(...)"
        )
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if repeats < 2:
        raise ValueError(f"repeats must be at least 2 (an interval needs 2 scores), got {repeats}")
    if until_separated and (max_trials is None or max_trials < 1):
        raise ValueError(f"until_separated=True needs max_trials >= 1, got {max_trials}")
    if max_trials is not None and not until_separated:
        raise ValueError("max_trials bounds the race of until_separated=True: give both")
    maximize = study.directions[0] == StudyDirection.MAXIMIZE

    fail_trials_of_dead_workers(study, run_again=lambda study, trial: None)  # trained again below
    functions = _functions(study, sampler, name)
    scored = [key for key, function in functions.items() if function.scores]
    if not scored:
        raise ValueError(f"study {study.study_name!r} has no completed trial with an {name}")
    ranked = sorted(scored, key=lambda key: _rank(functions[key].mean, maximize))
    reference_key, reference = _reference(functions, sampler, against, maximize)
    confirmed = {key: functions[key].expression for key in ranked[:top]}
    confirmed.setdefault(reference_key, reference.expression)

    def count() -> dict[int | str, _Function]:
        """The trials of the confirmed functions now."""
        now = _functions(study, sampler, name)
        return {key: now.get(key, _Function(spelling)) for key, spelling in confirmed.items()}

    def missing() -> list[_Function]:
        """A run for each score that a function lacks."""
        return [f for f in count().values() for _ in range(repeats - f.n_counted)]

    def race() -> list[_Function]:
        """One more run of each contender without a run under way; none once the leader is
        separated."""
        contenders = _contenders(list(count().values()), maximize)
        return [f for f in contenders if not f.n_under_way] if len(contenders) > 1 else []

    queue = _Queue(study, objective, name, functions[ranked[0]].params, train_queued)
    spent = queue.train(missing, max_trials)
    while until_separated and spent < max_trials:
        trained = queue.train(race, max_trials - spent)
        if not trained:  # separated, or the runs left are under way in other processes
            break
        spent += trained
    final = count()
    return _report(list(final.values()), final[reference_key], maximize)


@dataclass
class _Function:
    """The trials of one function: its scores, its failures and its runs under way."""

    expression: str
    first_scored: FrozenTrial | None = None
    scores: list[float] = field(default_factory=list)
    n_failed: int = 0
    n_under_way: int = 0

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores else None

    @property
    def n_counted(self) -> int:
        """Its runs that count toward ``repeats``: scored, failed and under way."""
        return len(self.scores) + self.n_failed + self.n_under_way

    @property
    def params(self) -> dict[str, Any]:
        """The other parameters of the trial that first scored it."""
        return self.first_scored.params if self.first_scored is not None else {}

    def add(self, trial: FrozenTrial) -> None:
        if trial.state in (TrialState.WAITING, TrialState.RUNNING):
            self.n_under_way += 1
        elif trial.state == TrialState.COMPLETE and math.isfinite(trial.values[0]):
            self.scores.append(float(trial.values[0]))
            self.first_scored = self.first_scored or trial
        elif trial.user_attrs.get("fail_reason") not in LOST_RUNS:
            self.n_failed += 1


def _functions(study: optuna.Study, sampler: AquaSurfSampler, name: str):
    """The trials of every function that the study has tried or is to try (its trials with
    the user attribute ``name``), by :func:`_key`, in trial order."""
    functions: dict[int | str, _Function] = {}
    for trial in study.get_trials(deepcopy=False):
        expression = trial.user_attrs.get(name)
        if expression is not None:
            function = functions.setdefault(_key(sampler, expression), _Function(expression))
            function.add(trial)
    return functions


def _key(sampler: AquaSurfSampler, expression: str) -> int | str:
    """What identifies the function of ``expression`` as the sampler counts it: its position in
    the space, whatever the spelling; outside the space, the expression itself."""
    function, exact = sampler.locate(expression)
    return function if exact else expression


def _reference(
    functions: dict[int | str, _Function],
    sampler: AquaSurfSampler,
    against: str | None,
    maximize: bool,
) -> tuple[int | str, _Function]:
    """The key and trials of the reference: ``against`` (no trials yet if the study lacks it),
    else the sampler's baseline with the best mean."""
    if against is not None:
        expression = canonical(against)
        key = _key(sampler, expression)
        return key, functions.get(key, _Function(expression))
    baselines = {_key(sampler, b) for b in sampler.options.baselines}
    scored = [key for key in baselines if key in functions and functions[key].scores]
    if not scored:
        raise ValueError(
            f"no baseline of the sampler ({', '.join(sampler.options.baselines) or 'none'}) has "
            'a score in the study: name the reference, against="relu(x)" say'
        )
    key = min(scored, key=lambda key: _rank(functions[key].mean, maximize))
    return key, functions[key]


def _rank(mean: float | None, maximize: bool) -> tuple[bool, float]:
    """The sort key of a mean: the best first, no mean last."""
    if mean is None:
        return True, 0.0
    return False, -mean if maximize else mean


def _contenders(functions: list[_Function], maximize: bool) -> list[_Function]:
    """The leader (the best mean) and the functions it does not beat beyond doubt."""
    scored = sorted((f for f in functions if f.scores), key=lambda f: _rank(f.mean, maximize))
    leader = scored[0]
    return [leader] + [
        f
        for f in scored[1:]
        if not is_better(difference_interval(leader.scores, f.scores), maximize)
    ]


def _report(functions: list[_Function], reference: _Function, maximize: bool) -> ConfirmReport:
    records = []
    for function in functions:
        scores = function.scores
        interval = None if function is reference else difference_interval(scores, reference.scores)
        records.append(
            ConfirmRecord(
                activation=function.expression,
                n=len(scores),
                mean=function.mean,
                std=float(np.std(scores, ddof=1)) if len(scores) >= 2 else None,
                ci95=mean_interval(scores),
                difference=function.mean - reference.mean if scores and reference.scores else None,
                difference_ci95=interval,
                beats_baseline=is_better(interval, maximize),
                n_failed=function.n_failed,
            )
        )
    records.sort(key=lambda r: _rank(r.mean, maximize))
    return ConfirmReport(reference.expression, tuple(records), maximize)


class _Queue:
    """Runs of functions, enqueued as trials of the study and trained by :func:`run_queued`
    with its objective (or by ``train_queued``, see :func:`confirm_with`).

    A function never scored (a reference the study lacks) is trained with ``fresh_params``.
    """

    def __init__(self, study, objective, name: str, fresh_params: dict[str, Any], train_queued):
        self.study = study
        self.objective = objective
        self.name = name
        self.fresh_params = fresh_params
        self.train_queued = train_queued
        self.lease = _Lease(study)

    def train(self, plan: Callable[[], list[_Function]], budget: int | None) -> int:
        """Enqueue a run of each function of ``plan()`` (within ``budget`` trials, those already
        waiting included), train every waiting trial, and say how many were waiting.

        ``plan()`` is counted and its runs enqueued under the study's confirmation lease: a
        process confirming the study at the same time counts them as under way.
        """
        with self.lease:
            runs = plan()
            if budget is not None:
                runs = runs[: max(budget - _n_waiting(self.study), 0)]
            for function in runs:
                user_attrs = {self.name: function.expression}  # names the function while it waits
                if function.first_scored is not None:
                    user_attrs["repeat_of"] = function.first_scored.number
                    params = function.params
                else:
                    params = self.fresh_params
                self.study.enqueue_trial({**params, self.name: function.expression}, user_attrs)
            n_trials = _n_waiting(self.study)
        if n_trials and self.train_queued is not None:
            self.train_queued(n_trials)
        elif n_trials:
            run_queued(self.study, self.objective, budget=n_trials, lease=self.lease)
        return n_trials


def run_queued(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    budget: int | None = None,
    lease: _Lease | None = None,
) -> int:
    """Train the waiting trials of ``study`` here with ``objective`` by ``study.optimize``, one at
    a time, until none is left (or ``budget`` trials ran); return how many ran.

    Processes confirming the study take its waiting trials in turn, each holding the study's
    confirmation lease from its look at the queue until its trial is taken: none starts a new
    trial of the search because another took the last waiting trial between its look and its
    take. (A search running on the same study at the same time takes waiting trials too, and
    trains them as the repeats they are; should it take the last one in that moment, this
    process trains one trial of the search.) A trial ended by Ctrl-C records
    ``fail_reason="interrupted"``: it is trained again.
    """
    lease = lease or _Lease(study)
    tracked = _tracked(objective)
    ran = 0

    def taken(trial: optuna.Trial) -> Any:
        lease.give_back()  # the trial is this process's: let the others take theirs
        return tracked(trial)

    def next_turn(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        if budget is None or ran < budget:
            lease.take()  # given back as the next trial starts, or once stopped
            if _n_waiting(study):
                return
        study.stop()

    lease.take()
    try:
        if budget != 0 and _n_waiting(study):
            study.optimize(taken, catch=(Exception,), callbacks=[next_turn])
    finally:
        lease.give_back()
    return ran


def _n_waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


class _Lease:
    """The confirmation lease of a study, which processes confirming it take in turn to count
    and enqueue runs and to take a waiting trial: a lease of the sampler's store
    (:func:`~optuna_aquasurf._store.store_for`), in the database's own table for an RDB storage.
    It is held for moments, never while training; one left by a process that died while holding
    it is taken over after the store's lease timeout (a minute).
    """

    def __init__(self, study: optuna.Study):
        self.store = store_for(storage_of(study))
        self.entry = f"confirm:{study_id(study)}"
        self.holder: str | None = None

    def take(self) -> None:
        """Wait for the lease and take it (nothing if this object holds it)."""
        if self.holder is not None:
            return
        holder = f"{worker_label()}:{uuid.uuid4().hex[:16]}"
        while not self.store.acquire(self.entry, 0, holder):
            time.sleep(LEASE_POLL)
        self.holder = holder

    def give_back(self) -> None:
        """Give the lease up, if held; should the database be away, it expires by itself."""
        holder, self.holder = self.holder, None
        if holder is not None:
            with contextlib.suppress(*self.store.transient_errors):
                self.store.release(self.entry, 0, holder)

    def __enter__(self) -> _Lease:
        self.take()
        return self

    def __exit__(self, *exc_info) -> None:
        self.give_back()


def _tracked(objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
    """``objective``, recording Ctrl-C in the trial's ``fail_reason``: an interrupted run is
    trained again, not counted as a failure of its function."""

    def run(trial: optuna.Trial) -> Any:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise

    return run
