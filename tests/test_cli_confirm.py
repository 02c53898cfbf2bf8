"""``aquasurf confirm`` end to end: the real CLI on the tiny model file of test_cli.py, then the
views of the confirmed study.

The search's first trials are the sampler's baselines, which need no map of the space, and
confirmation trains functions already scored: no test here computes a map.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.test_cli import TINY, aquasurf, invoke, trials, wait_for

#: Trials of the search: baselines of the tiny space, all of them.
SEARCH_TRIALS = 4


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A folder with tiny.py and aquasurf.db holding study 'tiny' of 4 finished trials."""
    folder = tmp_path_factory.mktemp("searched")
    (folder / "tiny.py").write_text(TINY)
    result = aquasurf("optimize", "tiny.py", "--n-trials", str(SEARCH_TRIALS), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def copy(searched, tmp_path) -> Path:
    """A private copy of the searched folder."""
    shutil.copytree(searched, tmp_path, dirs_exist_ok=True)
    return tmp_path


def scores_of(folder: Path) -> Counter:
    """How many completed trials each function has."""
    done = [t for t in trials(folder) if t.state == TrialState.COMPLETE]
    return Counter(t.user_attrs["activation"] for t in done)


def test_confirm_trains_each_function_to_its_repeats_once(copy):
    result = aquasurf("confirm", "tiny.py", "--top", "2", "--repeats", "2", "--json", cwd=copy)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    functions = report["functions"]
    confirmed = {f["activation"] for f in functions}
    assert 2 <= len(confirmed) <= 3 and report["baseline"] in confirmed
    assert all(f["n"] == 2 and f["n_failed"] == 0 for f in functions)
    means = [f["mean"] for f in functions]
    assert means == sorted(means, reverse=True)  # tiny.py maximizes
    counts = scores_of(copy)
    assert all(counts[name] == 2 for name in confirmed)
    repeats = [t for t in trials(copy) if "repeat_of" in t.user_attrs]
    assert len(repeats) == len(confirmed)
    assert len({t.user_attrs["seed"] for t in trials(copy)}) == len(trials(copy))

    again = aquasurf("confirm", "tiny.py", "--top", "2", "--repeats", "2", cwd=copy)
    assert again.returncode == 0, again.stderr
    assert scores_of(copy) == counts
    assert "95% interval" in again.stdout and report["baseline"] in again.stdout

    storage = ["--storage", f"sqlite:///{copy / 'aquasurf.db'}"]
    best = json.loads(invoke("best", "--json", *storage).stdout)
    assert best["expression"] == functions[0]["activation"]
    assert best["n"] == 2 and best["mean"] == pytest.approx(functions[0]["mean"])
    top = json.loads(invoke("top", "--json", *storage).stdout)
    names = [row["expression"] for row in top]
    assert len(names) == len(set(names)) == len(counts)
    assert [row["n"] for row in top[: len(confirmed)]] == [2] * len(confirmed)
    status = json.loads(invoke("status", "--json", *storage).stdout)
    assert status["best"]["n"] == 2

    exported = invoke("export", *storage, "--out", str(copy / "best_act.py"))
    assert exported.exit_code == 0, exported.output
    assert f": {functions[0]['activation']}," in exported.stdout
    assert "of 2 scores" in exported.stdout


def test_workers_option_hands_the_enqueued_runs_to_its_workers(copy, monkeypatch):
    """``--workers`` in this process: the first process enqueues the runs, and its workers, run
    here one after the other (real processes in the next test), train them: the first all, the
    second none."""
    from optuna_aquasurf.cli import _confirm

    outputs = []

    def workers_here(command, devices, storage_url):
        assert command[3:] == ["confirm", str(copy / "tiny.py"), "--study", "tiny"]
        assert [device for device, _ in devices] == ["cpu", "cpu"]
        for i, (device, _) in enumerate(devices):
            worker = ("--device", device, "--worker", f"{i + 1}/2", "--storage", storage_url)
            result = invoke(*command[3:], *worker)
            assert result.exit_code == 0, result.output
            outputs.append(result.output)

    monkeypatch.setattr(_confirm, "run_workers", workers_here)
    settings = _confirm.ConfirmSettings(
        top=2,
        repeats=3,
        against=None,
        until_separated=False,
        max_trials=None,
        device="cpu",
        storage_url=f"sqlite:///{copy / 'aquasurf.db'}",
        study_name=None,
        workers=2,
    )
    report = _confirm.confirm_search(copy / "tiny.py", settings)
    assert [r.n for r in report.records] == [3] * len(report.records)
    runs = 2 * len(report.records)
    trained = [output.count(f"Worker {i}/2: Trial") for i, output in enumerate(outputs, 1)]
    assert trained == [runs, 0]
    done = trials(copy)
    assert len(done) == SEARCH_TRIALS + runs
    assert all(t.state == TrialState.COMPLETE for t in done)


def test_workers_share_the_runs_and_train_each_once(copy):
    """``--workers 2``: the worker processes train the runs that the first process enqueued,
    each taking the next one (a trial takes 0.2 s here, so that both may take some): every
    confirmed function ends with exactly its repeats, and no trial is left running or waiting,
    nor was any trial of the search started."""
    with (copy / "tiny.py").open("a") as model_file:
        model_file.write(
            "\n_train = train\n\n"
            "def train(model, trial, device):\n"
            "    time.sleep(0.2)\n"
            "    return _train(model, trial, device)\n"
        )
    options = ("confirm", "tiny.py", "--top", "2", "--repeats", "3", "--json")
    result = aquasurf(*options, "--workers", "2", cwd=copy)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    confirmed = [f["activation"] for f in report["functions"]]
    runs = 2 * len(confirmed)  # each function's search trial and 2 repeats
    assert f"Training {runs} runs on 2 workers (cpu)." in result.stderr
    counts = scores_of(copy)
    for function in report["functions"]:
        assert function["n"] == counts[function["activation"]] == 3, function
    done = trials(copy)
    assert len(done) == SEARCH_TRIALS + runs
    assert all(t.state == TrialState.COMPLETE for t in done)
    assert all("repeat_of" in t.user_attrs for t in done[SEARCH_TRIALS:])
    workers = {t.user_attrs["worker"] for t in done[SEARCH_TRIALS:]}
    assert {t.user_attrs["worker"] for t in done[:SEARCH_TRIALS]}.isdisjoint(workers)
    assert 1 <= len(workers) <= 2


def test_confirm_killed_with_kill_9_trains_its_lost_run_again(copy, start_process):
    """The run left RUNNING by a confirmation killed with kill -9 is failed as "process died"
    (its process is gone on this host) by the next run, which trains it again: every confirmed
    function ends with exactly its repeats."""
    options = ("confirm", "tiny.py", "--top", "2", "--repeats", "2", "--json")
    first_run = SEARCH_TRIALS  # the number of the confirmation's first trial
    killed = start_process(
        [sys.executable, "-m", "optuna_aquasurf", *options],
        cwd=copy,
        env={**os.environ, "SLOW_TRIAL": str(first_run)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(copy / "started", killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    result = aquasurf(*options, cwd=copy)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    died = [t for t in trials(copy) if t.user_attrs.get("fail_reason") == "process died"]
    assert [t.number for t in died] == [first_run]
    assert died[0].state == TrialState.FAIL
    counts = scores_of(copy)
    for function in report["functions"]:
        assert function["n"] == counts[function["activation"]] == 2, function
    assert died[0].user_attrs["activation"] in {f["activation"] for f in report["functions"]}
    assert all(f["n_failed"] == 0 for f in report["functions"])  # a lost run is no failure
    assert not [t for t in trials(copy) if t.state == TrialState.RUNNING]
