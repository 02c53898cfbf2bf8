"""confirm(): the winners of a search trained again as trials of the same study, and compared."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from scipy import stats

from optuna_aquasurf import AquaSurfSampler, confirm, suggest_activation
from optuna_aquasurf._confirm import run_queued
from optuna_aquasurf._dead_workers import worker_label

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Each function's expected score; the objectives add a training seed's noise.
TRUE_SCORES = {
    "relu(x)": 0.80,
    "tanh(x)": 0.70,
    "abs(x)": 0.90,
    "swish(x)": 0.85,
    "sigmoid(x)": 0.60,
    "softplus(x)": 0.90,
}
BASELINES = ["relu(x)", "tanh(x)"]


def noisy(scale: float):
    """An objective: the function's expected score plus noise seeded by the trial number."""

    def objective(trial: optuna.Trial) -> float:
        noise = np.random.default_rng(trial.number).normal(scale=scale)
        return TRUE_SCORES[suggest_activation(trial).expression] + noise

    return objective


def searched(n_trials: int, direction: str = "maximize", scale: float = 0.01) -> optuna.Study:
    sampler = AquaSurfSampler(list(TRUE_SCORES), baselines=BASELINES, seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.optimize(noisy(scale), n_trials=n_trials)
    return study


def trials_of(study: optuna.Study, expression: str, state=TrialState.COMPLETE) -> list:
    return [
        t for t in study.get_trials(states=(state,)) if t.user_attrs["activation"] == expression
    ]


def with_scores(scores: dict[str, list[float]], direction: str = "maximize") -> optuna.Study:
    """A study whose trials scored each function as given."""
    sampler = AquaSurfSampler(list(TRUE_SCORES), baselines=BASELINES, seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.add_trials(
        create_trial(value=value, user_attrs={"activation": expression})
        for expression, values in scores.items()
        for value in values
    )
    return study


def never_called(trial: optuna.Trial) -> float:
    raise AssertionError("nothing to train")


def test_each_function_ends_with_its_repeats_as_repeats_of_its_first_trial():
    study = searched(5)
    activations = {t.user_attrs["activation"] for t in study.trials}
    report = confirm(study, noisy(0.01), top=2, repeats=2)

    assert len(report.records) == 3  # the top 2 and the best baseline
    for record in report.records:
        first, *repeats = trials_of(study, record.activation)
        assert record.n == 2 and len(repeats) == 1
        assert repeats[0].user_attrs["repeat_of"] == first.number
        assert repeats[0].params == first.params
    assert report.baseline == "relu(x)"
    assert report.best in ("abs(x)", "softplus(x)")  # the two best, tied
    assert {t.user_attrs["activation"] for t in study.trials} == activations

    n_trials = len(study.trials)
    assert confirm(study, noisy(0.01), top=2, repeats=2) == report  # nothing left to train
    assert len(study.trials) == n_trials
    # The sampler counts the repeats as scores of functions it tried: it goes on with a new one.
    study.optimize(noisy(0.01), n_trials=1)
    assert study.trials[-1].user_attrs["activation"] not in activations


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_intervals_are_welch_intervals_of_the_difference_in_the_study_direction(direction):
    scores = {
        "relu(x)": [0.50, 0.52, 0.51],
        "abs(x)": [0.60, 0.62, 0.61, 0.66],
        "sigmoid(x)": [0.40, 0.43, 0.39],
        "swish(x)": [0.46, 0.56, 0.51],
    }
    report = confirm(with_scores(scores, direction), never_called, top=4, repeats=3)

    assert report.baseline == "relu(x)"
    reference = scores["relu(x)"]
    for record in report.records:
        mine = scores[record.activation]
        assert record.n == len(mine) and record.n_failed == 0
        assert record.mean == pytest.approx(np.mean(mine))
        assert record.std == pytest.approx(np.std(mine, ddof=1))
        expected = stats.t.interval(0.95, len(mine) - 1, np.mean(mine), stats.sem(mine))
        assert record.ci95 == pytest.approx(expected)
        assert record.difference == pytest.approx(np.mean(mine) - np.mean(reference))
        if record.activation == "relu(x)":
            assert record.difference_ci95 is None
            continue
        welch = stats.ttest_ind(mine, reference, equal_var=False).confidence_interval(0.95)
        assert record.difference_ci95 == pytest.approx((welch.low, welch.high))

    winner = "abs(x)" if direction == "maximize" else "sigmoid(x)"
    assert [r.activation for r in report.records if r.beats_baseline] == [winner]
    assert report.best == winner
    record = report.records[0]
    gain = abs(record.difference)
    low, high = sorted(abs(bound) for bound in record.difference_ci95)
    assert report.verdict() == (
        f"{winner} beats relu(x) by {gain:.3g} (95% interval {low:.3g} to {high:.3g})"
    )
    assert report.to_json()["functions"][0]["activation"] == winner


def test_verdict_when_no_function_is_better_and_the_study_has_score_and_cost():
    sampler = AquaSurfSampler(list(TRUE_SCORES), baselines=BASELINES, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial):
        act = suggest_activation(trial)
        return TRUE_SCORES[act.expression] + np.random.default_rng(trial.number).normal(0, 0.2), 1.0

    study.optimize(objective, n_trials=3)
    report = confirm(study, objective, top=1, repeats=2)
    assert {r.n for r in report.records} == {2}
    for record in report.records:
        values = [t.values[0] for t in trials_of(study, record.activation)]
        assert record.mean == pytest.approx(np.mean(values))
    assert report.verdict() == (
        f"no function is distinguishably better than {report.baseline} with 2 scores each"
    )


def test_race_stops_at_max_trials_or_when_the_leader_is_separated():
    tied = searched(6, scale=0.0)  # abs(x) and softplus(x) score the same: never separated
    n_trials = len(tied.trials)
    confirm(tied, noisy(0.0), top=2, repeats=2, until_separated=True, max_trials=7)
    assert len(tied.trials) == n_trials + 7

    separated = searched(6, scale=0.001)
    n_trials = len(separated.trials)
    report = confirm(separated, noisy(0.001), top=1, repeats=2, until_separated=True, max_trials=9)
    assert len(separated.trials) == n_trials + 2  # one more score each, and separated
    assert report.records[0].beats_baseline


def test_an_interrupted_confirmation_resumes_with_exactly_repeats_scores():
    study = searched(4)
    objective = noisy(0.01)

    def interrupted(trial):
        if trial.number == 5:  # the second repeat
            raise KeyboardInterrupt
        return objective(trial)

    with pytest.raises(KeyboardInterrupt):
        confirm(study, interrupted, top=2, repeats=3)
    assert study.trials[5].user_attrs["fail_reason"] == "interrupted"
    assert study.get_trials(states=(TrialState.WAITING,))

    report = confirm(study, objective, top=2, repeats=3)
    assert [(r.n, r.n_failed) for r in report.records] == [(3, 0)] * 3
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_a_repeat_left_running_counts_while_its_process_lives():
    study = searched(4)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    for expression, worker in (
        ("abs(x)", f"{socket.gethostname()}:{ended.pid}"),
        ("relu(x)", worker_label()),
    ):
        first = trials_of(study, expression)[0]
        study.enqueue_trial(
            {"activation": expression}, {"activation": expression, "repeat_of": first.number}
        )
        study.ask().set_user_attr("worker", worker)  # left running

    report = confirm(study, noisy(0.01), top=1, repeats=3)

    records = {r.activation: r for r in report.records}
    assert (records["abs(x)"].n, records["abs(x)"].n_failed) == (3, 0)
    assert trials_of(study, "abs(x)", TrialState.FAIL)[0].user_attrs["fail_reason"] == (
        "process died"
    )
    assert records["relu(x)"].n == 2  # its third run is under way in a live process
    assert len(trials_of(study, "relu(x)", TrialState.RUNNING)) == 1


def test_failed_repeats_are_failures_of_their_function():
    study = searched(4)
    objective = noisy(0.01)

    def diverges_on_abs(trial):
        score = objective(trial)
        return float("nan") if trial.user_attrs["activation"] == "abs(x)" else score

    report = confirm(study, diverges_on_abs, top=1, repeats=3)
    records = {r.activation: r for r in report.records}
    assert (records["abs(x)"].n, records["abs(x)"].n_failed) == (1, 2)
    n_trials = len(study.trials)
    assert confirm(study, objective, top=1, repeats=3) == report
    assert len(study.trials) == n_trials


def test_a_reference_the_study_lacks_is_trained_with_the_leaders_parameters():
    sampler = AquaSurfSampler(list(TRUE_SCORES), baselines=BASELINES, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        act = suggest_activation(trial)
        lr = trial.suggest_float("lr", 0.01, 0.1)
        return TRUE_SCORES.get(act.expression, 0.5) + lr

    study.optimize(objective, n_trials=3)
    report = confirm(study, objective, top=1, repeats=2, against="gelu( x )")

    assert report.baseline == "gelu(x)"
    gelu = trials_of(study, "gelu(x)")
    assert len(gelu) == 2 and all("repeat_of" not in t.user_attrs for t in gelu)
    leader = trials_of(study, report.records[0].activation)[0]
    assert all(t.params == leader.params for t in gelu)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"top": 0}, "top must be at least 1"),
        ({"repeats": 1}, "repeats must be at least 2"),
        ({"until_separated": True}, "needs max_trials"),
        ({"max_trials": 5}, "give both"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    study = with_scores({"relu(x)": [0.5]})
    with pytest.raises(ValueError, match=message):
        confirm(study, never_called, **options)


def test_studies_that_cannot_be_confirmed_are_clear_errors():
    with pytest.raises(ValueError, match="no completed trial"):
        confirm(with_scores({}), never_called)
    with pytest.raises(ValueError, match="no baseline of the sampler"):
        confirm(with_scores({"abs(x)": [0.5]}), never_called)
    with pytest.raises(TypeError, match="AquaSurfSampler"):
        confirm(optuna.create_study(), never_called)


def confirm_twice_at_once(url: str) -> None:
    """Two confirmations of one study at once, each with its own storage of ``url``, as two
    processes would have: each function ends with exactly its repeats, every run is a repeat
    (no trial of the search started), and none is left waiting or running."""
    sampler = AquaSurfSampler(list(TRUE_SCORES), baselines=BASELINES, seed=0)
    study = optuna.create_study(
        storage=url, study_name="shared", direction="maximize", sampler=sampler
    )
    study.optimize(noisy(0.01), n_trials=4)
    searched_trials = len(study.trials)
    both_ready = threading.Barrier(2)

    def slow(trial: optuna.Trial) -> float:
        time.sleep(0.02)  # the other confirmation takes its turns meanwhile
        return noisy(0.01)(trial)

    def confirm_here(_) -> list[str]:
        own = optuna.load_study(
            study_name="shared",
            storage=url,
            sampler=AquaSurfSampler(list(TRUE_SCORES), baselines=BASELINES, seed=0),
        )
        both_ready.wait()
        return [r.activation for r in confirm(own, slow, top=2, repeats=3).records]

    with ThreadPoolExecutor(2) as pool:
        confirmed = list(pool.map(confirm_here, range(2)))

    assert sorted(confirmed[0]) == sorted(confirmed[1]) and len(confirmed[0]) == 3
    for expression in confirmed[0]:
        assert len(trials_of(study, expression)) == 3, expression
    runs = study.trials[searched_trials:]
    assert len(runs) == 3 * 2  # 2 repeats of each of the 3
    assert all(t.state == TrialState.COMPLETE and "repeat_of" in t.user_attrs for t in runs)
    assert run_queued(study, never_called) == 0  # nothing left waiting


def test_two_confirmations_at_once_share_the_runs_on_sqlite(tmp_path):
    confirm_twice_at_once(f"sqlite:///{tmp_path / 'shared.db'}")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_confirmations_at_once_share_the_runs_on_postgresql(database_url):
    confirm_twice_at_once(database_url)
