"""A run of ``aquasurf optimize`` killed without a trace (``kill -9``) is cleaned up by the next
run on its host, at once: its trial is failed ("process died") and runs again, and a function it
had claimed is trained by another trial.

The end-to-end checks run the real CLI on a copy of the ``searched`` study of
:mod:`tests.test_cli` (3 baselines done); they stop at 6 trials, which are all baselines, so
that no surrogate pick waits for the map.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from optuna_aquasurf import AquaSurfSampler
from optuna_aquasurf._dead_workers import fail_trials_of_dead_workers
from optuna_aquasurf._sampler import DEFAULT_BASELINES
from optuna_aquasurf._store import store_for
from optuna_aquasurf.cli._storage import open_storage
from optuna_aquasurf.cli._study_sampler import study_space
from tests import test_cli
from tests.test_cli import aquasurf, start, trials, wait_for

# The fixtures of tests.test_cli: a private copy of its searched study.
copy, searched = test_cli.copy, test_cli.searched

DIED = "was left running by a process that died"


def dead_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def this_host(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def load(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'aquasurf.db'}")


def tiny_sampler(folder: Path) -> AquaSurfSampler:
    """A sampler of the search space of the study in ``folder``, as the CLI builds it."""
    return AquaSurfSampler(space=study_space(load(folder)))


def test_a_killed_run_is_cleaned_up_by_the_next_one(copy):
    command = ("optimize", "tiny.py", "--n-trials", "6")
    process = start(*command, cwd=copy, env={"SLOW_TRIAL": "3"})
    wait_for(copy / "started", process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()

    result = aquasurf(*command, cwd=copy)
    assert result.returncode == 0, result.stderr
    assert f"Trial 3 {DIED} ({this_host(process.pid)}): failed, and it runs again." in result.stderr
    done = trials(copy)
    assert not [t.number for t in done if t.state == TrialState.RUNNING]
    killed = done[3]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["fail_reason"] == "process died"
    assert killed.user_attrs["worker"] == this_host(process.pid)
    rerun = next(t for t in done if t.user_attrs.get("rerun_of") == 3)
    assert rerun.state == TrialState.COMPLETE
    assert rerun.user_attrs["activation"] == killed.user_attrs["activation"]
    assert rerun.user_attrs["seed"] == 3
    sampler = tiny_sampler(copy)
    baselines = {function for function, exact in map(sampler.locate, DEFAULT_BASELINES) if exact}
    completed = [t.user_attrs["activation"] for t in done if t.state == TrialState.COMPLETE]
    assert baselines <= {sampler.locate(expression)[0] for expression in completed}


def test_a_trial_killed_before_its_activation_gives_its_claim_back(copy):
    study = load(copy)
    trial = study.ask()
    worker = this_host(dead_pid())
    trial.set_user_attr("worker", worker)
    swish, _ = tiny_sampler(copy).locate("swish(x)")
    claims = store_for(study._storage)
    assert claims.claim(study._study_id, swish, trial._trial_id, is_stale=lambda holder: False)

    result = aquasurf("optimize", "tiny.py", "--n-trials", "6", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert f"Trial {trial.number} {DIED} ({worker}): failed." in result.stderr
    done = trials(copy)
    dead = done[trial.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "process died"
    assert "activation" not in dead.user_attrs
    assert not any("rerun_of" in t.user_attrs for t in done)
    trained = [t for t in done if t.user_attrs.get("activation") == "swish(x)"]
    assert [t.state for t in trained] == [TrialState.COMPLETE]


def test_trials_of_other_hosts_and_live_processes_are_left_running(copy):
    study = load(copy)
    for worker in (f"otherhost:{dead_pid()}", this_host(os.getpid())):
        study.ask().set_user_attr("worker", worker)

    result = aquasurf("optimize", "tiny.py", "--n-trials", "4", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert DIED not in result.stderr
    assert [t.state for t in trials(copy)[3:]] == [
        TrialState.RUNNING,
        TrialState.RUNNING,
        TrialState.COMPLETE,
    ]


def test_each_trial_records_its_worker_as_it_starts(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'aquasurf.db'}")
    study = optuna.create_study(storage=storage)
    created = study.ask()
    assert created.user_attrs["worker"] == this_host(os.getpid())
    # A waiting trial (such as Optuna's retry of a stale trial) names no worker until it runs.
    study.enqueue_trial({}, user_attrs={"worker": this_host(dead_pid())})
    assert "worker" not in study.get_trials(states=(TrialState.WAITING,))[0].user_attrs
    assert study.ask().user_attrs["worker"] == this_host(os.getpid())


def test_only_the_run_that_fails_a_dead_trial_queues_it(tmp_path, monkeypatch):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'aquasurf.db'}"))
    trial = study.ask()
    trial.set_user_attr("worker", this_host(dead_pid()))
    trial.set_user_attr("activation", "relu(x)")
    seen_running = study.get_trials(states=(TrialState.RUNNING,))
    queued = []
    fail_trials_of_dead_workers(study, lambda study, trial: queued.append(trial.number))
    # A second run that saw the trial running, before the first failed it.
    monkeypatch.setattr(study, "get_trials", lambda **kwargs: seen_running)
    fail_trials_of_dead_workers(study, lambda study, trial: queued.append(trial.number))
    assert queued == [trial.number]
    failed = study._storage.get_trial(trial._trial_id)
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == "process died"
