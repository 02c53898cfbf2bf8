"""Ray Tune with the sampler in OptunaSearch: the searcher in this process, and the recipe of
examples/ray_tune.py run as written, interrupted and restored, on a local Ray of 2 CPUs."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation

pytest.importorskip("ray.tune")
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNARY = ["relu", "tanh", "abs", "swish"]
#: The recipe with small settings: 8 trials of 1 epoch, 2 at once, over 67 functions.
RECIPE = [
    str(ROOT / "examples" / "ray_tune.py"),
    *("--samples", "8", "--concurrent", "2", "--cpus", "2", "--epochs", "1"),
    *("--unary", ",".join(UNARY)),
]
#: Runs a script (argv[2:]) whose Fisher features are logged, one line per expression with the
#: process that computed it, to the file argv[1].
LOGGING_FISHER = """
import os, runpy, sys
from optuna_aquasurf.features import FisherProbe

log, sys.argv = sys.argv[1], sys.argv[2:]
compute = FisherProbe.features

def logged(self, expressions, **kwargs):
    with open(log, "a") as file:
        file.writelines(f"{os.getpid()} {e}\\n" for e in expressions)
    return compute(self, expressions, **kwargs)

FisherProbe.features = logged
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def space() -> SearchSpace:
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)


def define_by_run(trial: optuna.Trial) -> dict:
    act = suggest_activation(trial)
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return {"activation": act.expression}


def test_the_searcher_suggests_distinct_functions_and_goes_on_after_a_restore(tmp_path):
    """Trials suggested before any completes train distinct functions, the searcher pickles
    (as Ray's checkpoints do), and a restored one continues the same study."""
    searcher = OptunaSearch(
        space=define_by_run,
        sampler=AquaSurfSampler(space(), seed=0),
        metric="score",
        mode="max",
    )
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(4)}  # 4 trials running at once
    assert set(configs["t0"]) == {"activation", "lr"}
    searcher.on_trial_complete("t0", {"score": 1.0})
    searcher.save(str(tmp_path / "searcher.pkl"))

    restored = OptunaSearch(
        space=define_by_run, sampler=AquaSurfSampler(space(), seed=0), metric="score", mode="max"
    )
    restored.restore(str(tmp_path / "searcher.pkl"))
    for i in range(1, 4):
        restored.on_trial_complete(f"t{i}", {"score": 0.5})
    configs.update({f"t{i}": restored.suggest(f"t{i}") for i in range(4, 8)})

    study = restored._ot_study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4 + [TrialState.RUNNING] * 4
    locate = AquaSurfSampler(space()).search(optuna.create_study()).locate
    assert len({locate(c["activation"]) for c in configs.values()}) == 8
    assert pickle.loads(pickle.dumps(restored))._ot_study.trials == study.trials


def completed_trials(journal: Path) -> int:
    """The completed trials of the recipe's study so far (0 before it exists)."""
    if not journal.exists():
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental storage, no study yet
        try:
            study = optuna.load_study(
                study_name="aquasurf", storage=JournalStorage(JournalFileBackend(str(journal)))
            )
        except KeyError:
            return 0
    return len(study.get_trials(states=(TrialState.COMPLETE,)))


def run_recipe(start_process, log: Path, *args: str) -> subprocess.Popen:
    return start_process(
        [sys.executable, "-c", LOGGING_FISHER, str(log), *RECIPE, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # about 4 minutes on 2 busy cores: two Ray drivers and 8 trials
def test_the_recipe_interrupted_and_restored_never_trains_a_function_twice(tmp_path, start_process):
    folder = tmp_path / "ray"
    journal = folder / "aquasurf.journal"
    log = tmp_path / "fisher.log"
    first = run_recipe(start_process, log, "--folder", str(folder))
    deadline = time.monotonic() + 400
    while completed_trials(journal) < 3:
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline, "3 trials did not complete in time"
        time.sleep(1)
    os.kill(first.pid, signal.SIGINT)  # Ctrl+C: Ray saves the experiment and stops
    first.communicate(timeout=300)
    second = run_recipe(start_process, log, "--folder", str(folder), "--restore")
    _, stderr = second.communicate(timeout=500)
    assert second.returncode == 0, stderr

    study = optuna.load_study(
        study_name="aquasurf", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    trials = study.trials
    assert len(trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    locate = AquaSurfSampler(space()).search(optuna.create_study()).locate
    assert len({locate(t.user_attrs["activation"]) for t in trials}) == 8
    assert any(  # two trials were out at once
        a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
        for a in trials
        for b in trials
        if a.number < b.number
    )
    # The Fisher features were computed once, by a driver (Ray's workers never hold the
    # sampler): the first, after the baselines, and the restored one read them from beside the
    # journal.
    computed = [line.split(" ", 1) for line in log.read_text().splitlines()]
    (driver,) = {int(pid) for pid, _ in computed}
    assert driver in (first.pid, second.pid)
    assert sorted(expression for _, expression in computed) == sorted(space().expressions)
