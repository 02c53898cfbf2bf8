"""In a script (no CLI), a trial whose process was killed is failed by the next pick on its host
and its function trained again, instead of being held by a trial that stays RUNNING."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation

REPO = Path(__file__).resolve().parent.parent
SPACE = ["relu(x)", "tanh(x)", "abs(x)", "sigmoid(x)", "erf(x)", "swish(x)"]
HANGING_TRIAL = textwrap.dedent(
    """
    import pathlib, sys, time, optuna
    from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
    from tests.test_dead_workers import SPACE

    def objective(trial):
        act = suggest_activation(trial)
        pathlib.Path(sys.argv[2]).write_text(act.expression)
        time.sleep(600)

    sampler = AquaSurfSampler(SearchSpace.from_expressions(SPACE), baselines=["relu(x)"], seed=0)
    study = optuna.load_study(study_name="s", storage=sys.argv[1], sampler=sampler)
    study.optimize(objective, n_trials=1)
    """
)


def objective(trial):
    act = suggest_activation(trial)
    return float(act(torch.linspace(-2, 2, 9)).mean())


def test_a_killed_trial_is_failed_and_its_function_trained_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_TRIAL, storage, str(marker)], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    killed_function = marker.read_text()

    sampler = AquaSurfSampler(SearchSpace.from_expressions(SPACE), baselines=["relu(x)"], seed=0)
    study = optuna.load_study(study_name="s", storage=storage, sampler=sampler)
    with pytest.warns(UserWarning, match="left running by a process that died"):
        study.optimize(objective, n_trials=3)

    killed = study.trials[0]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["fail_reason"] == "process died"
    rerun = [t for t in study.trials if t.user_attrs.get("rerun_of") == killed.number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].user_attrs["activation"] == killed_function
    completed = [t.user_attrs["activation"] for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 3 and len(set(completed)) == 3
