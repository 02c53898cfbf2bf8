"""End-to-end checks of the ``aquasurf`` command: the real CLI in a subprocess, on SQLite.

A tiny model file with a SPACE of 8 expressions keeps trials instant; its map (UMAP, about 30 s
on 2 cores) is computed once, in the study of the ``searched`` fixture, and every test copies
that database, so the map is loaded, not recomputed.
"""

from __future__ import annotations

import json
import os
import shutil
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
from typer.testing import CliRunner

from optuna_aquasurf import ActivationFunction, AquaSurfSampler
from optuna_aquasurf.cli._app import app
from optuna_aquasurf.cli._study_sampler import study_space

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = textwrap.dedent(
    """
    import os, pathlib, time
    import torch
    from torch import nn

    SPACE = ["relu(x)", "tanh(x)", "sigmoid(x)", "swish(x)", "abs(x)", "mul(x,tanh(x))",
             "softsign(x)", "elu(x)"]

    def build_model(activation):
        return nn.Sequential(nn.Linear(4, 8), activation, nn.Linear(8, 1))

    def train(model, trial, device):
        if os.environ.get("SLOW_TRIAL") == str(trial.number):
            pathlib.Path("started").write_text(str(trial.number))
            time.sleep(120)
        x = torch.linspace(-2, 2, 16, device=device).reshape(4, 4)
        with torch.no_grad():
            return float(model(x).mean())
    """
)


def aquasurf(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240):
    """Run ``python -m optuna_aquasurf ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "optuna_aquasurf", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "optuna_aquasurf", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def invoke(*args: str):
    """Run the typer app in this process."""
    return CliRunner().invoke(app, list(args))


def trials(folder: Path, study: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{folder / 'aquasurf.db'}"
    return optuna.load_study(study_name=study, storage=storage).get_trials()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A folder with tiny.py and aquasurf.db holding study 'tiny' with 3 finished trials and
    its map (which `plot FILE` computes: 3 trials, all baselines, end before it is needed)."""
    folder = tmp_path_factory.mktemp("searched")
    (folder / "tiny.py").write_text(TINY)
    result = aquasurf("optimize", "tiny.py", "--n-trials", "3", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "computed in the background" in result.stderr
    result = aquasurf("plot", "tiny.py", "--out", "plots", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def copy(searched, tmp_path) -> Path:
    """A private copy of the searched folder."""
    shutil.copytree(searched, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_search_records_each_trial(searched):
    done = trials(searched)
    assert [t.state for t in done] == [TrialState.COMPLETE] * 3
    for t in done:
        assert {"activation", "device", "seed", "seconds"} <= set(t.user_attrs)
        assert t.user_attrs["device"] == "cpu"
        assert t.user_attrs["seed"] == t.number


def test_resume_adds_trials_without_repeats(copy):
    before = trials(copy)
    result = aquasurf("optimize", "tiny.py", "--n-trials", "6", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "3 of 6 trials done" in result.stderr
    after = trials(copy)
    assert [t.state for t in after] == [TrialState.COMPLETE] * 6
    assert [(t.value, t.user_attrs) for t in after[:3]] == [(t.value, t.user_attrs) for t in before]
    assert len({t.user_attrs["activation"] for t in after}) == 6
    again = aquasurf("optimize", "tiny.py", "--n-trials", "6", cwd=copy)
    assert again.returncode == 0 and "Nothing to do" in again.stderr
    assert len(trials(copy)) == 6


def test_kill_9_then_resume_retries_the_stale_trial(copy):
    heartbeat = ["--heartbeat-interval", "1", "--grace-period", "2"]
    process = start(
        "optimize", "tiny.py", "--n-trials", "5", *heartbeat, cwd=copy, env={"SLOW_TRIAL": "3"}
    )
    wait_for(copy / "started", process)
    time.sleep(1.5)  # a heartbeat or two
    process.kill()
    process.communicate()
    # As if it ran on another host: a dead process of this one is failed at once instead (see
    # test_cli_crash.py); the trials of other hosts wait for their heartbeats to go stale.
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{copy / 'aquasurf.db'}")
    study._storage.set_trial_user_attr(study.trials[3]._trial_id, "worker", "otherhost:1")
    time.sleep(3)  # past the grace period
    result = aquasurf("optimize", "tiny.py", "--n-trials", "5", *heartbeat, cwd=copy)
    assert result.returncode == 0, result.stderr
    done = trials(copy)
    stale = done[3]
    assert stale.state == TrialState.FAIL and "fail_reason" not in stale.user_attrs
    retry = next(t for t in done if t.system_attrs.get("failed_trial") == 3)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["activation"] == stale.user_attrs["activation"]
    assert retry.user_attrs["seed"] == 3
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    assert len(complete) == 5
    assert len({t.user_attrs["activation"] for t in complete}) == 5


def test_ctrl_c_fails_the_running_trial_and_resume_runs_it_again(copy):
    before = trials(copy)
    process = start("optimize", "tiny.py", "--n-trials", "5", cwd=copy, env={"SLOW_TRIAL": "3"})
    wait_for(copy / "started", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Trial 3 is marked failed" in stderr and "resume" in stderr
    done = trials(copy)
    assert len(done) == 4
    assert [(t.state, t.value) for t in done[:3]] == [(t.state, t.value) for t in before]
    assert done[3].state == TrialState.FAIL
    assert done[3].user_attrs["fail_reason"] == "interrupted"

    result = aquasurf("optimize", "tiny.py", "--n-trials", "5", cwd=copy)
    assert result.returncode == 0, result.stderr
    done = trials(copy)
    rerun = next(t for t in done if t.user_attrs.get("rerun_of") == 3)
    assert rerun.state == TrialState.COMPLETE
    assert rerun.user_attrs["activation"] == done[3].user_attrs["activation"]
    assert sum(t.state == TrialState.COMPLETE for t in done) == 5


def test_views(searched):
    done = trials(searched)
    best = max(done, key=lambda t: t.value)
    result = aquasurf("best", "--json", cwd=searched)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["expression"] == best.user_attrs["activation"]
    assert record["score"] == best.value and record["trial"] == best.number

    # The other views in this process: the same app, without the start-up time.
    storage = ["--storage", f"sqlite:///{searched / 'aquasurf.db'}"]
    status = json.loads(invoke("status", "--json", "--study", "tiny", *storage).stdout)
    assert status["trials"]["complete"] == 3 and status["finished"] == 3
    assert status["best"]["expression"] == record["expression"]
    top = json.loads(invoke("top", "--json", "-n", "2", *storage).stdout)
    assert [row["rank"] for row in top] == [1, 2]
    assert top[0]["score"] >= top[1]["score"]
    for view in ("status", "top", "best"):
        shown = invoke(view, *storage)
        assert shown.exit_code == 0 and record["expression"] in shown.stdout, shown.output


def test_plot_writes_images_and_html_without_the_model_file(copy):
    from PIL import Image

    (copy / "tiny.py").unlink()
    shutil.rmtree(copy / "plots")
    result = aquasurf("plot", "--out", "plots", cwd=copy)
    assert result.returncode == 0, result.stderr
    names = ["tiny_map.png", "tiny_map.html", "tiny_history.png", "tiny_history.html"]
    for name in names:
        assert (copy / "plots" / name).is_file(), name
    for name in names[::2]:
        with Image.open(copy / "plots" / name) as image:
            image.verify()
    for name in names[1::2]:
        assert "plotly" in (copy / "plots" / name).read_text()


def test_export_runs_without_this_package(copy):
    result = aquasurf("export", "--out", "best_act.py", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "from best_act import Activation" in result.stdout
    best = max(trials(copy), key=lambda t: t.value).user_attrs["activation"]
    x = torch.linspace(-5, 5, 101)
    torch.save(x, copy / "x.pt")
    script = (
        "import sys, torch; sys.modules['optuna_aquasurf'] = None; "  # importing it now fails
        "import best_act; "
        "torch.save(best_act.Activation(fused=False)(torch.load('x.pt')), 'y.pt')"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    expected = ActivationFunction(best)(x)
    assert torch.equal(torch.load(copy / "y.pt"), expected)


def test_prior_from_another_study_and_a_bundled_table(copy):
    """--prior: a new study reads an earlier one and a bundled table once, and keeps them."""
    old = f"sqlite:///{copy / 'aquasurf.db'}"
    priors = ["--prior", f"tiny@{old}", "--prior", "act-bench-digits:cnn"]
    result = aquasurf("optimize", "tiny.py", "--n-trials", "8", "--study", "new", *priors, cwd=copy)
    assert result.returncode == 0, result.stderr
    assert f"Prior tiny@{old}: 3 functions of the space scored." in result.stderr
    assert "Prior act-bench-digits:cnn: 8 functions of the space scored." in result.stderr
    assert [t.state for t in trials(copy, "new")] == [TrialState.COMPLETE] * 8
    missing = aquasurf("optimize", "tiny.py", "--study", "other", "--prior", f"vit@{old}", cwd=copy)
    assert missing.returncode == 1
    assert "--prior: prior vit@" in missing.stderr and "(its studies: tiny, new" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = invoke(
        "optimize", str(copy / "tiny.py"), "--storage", old, "--prior", "act-bench-digits:mlp"
    )
    assert unknown.exit_code == 1 and "unknown prior table" in unknown.output


def test_max_cost_leaves_out_the_functions_above_it(copy):
    """--max-cost 2: the baselines above it (softsign costs 3-5 relu passes on the machines
    seen) are named and never trained, relu (1) is, and so is nothing above the bound by the
    costs kept with the study (what a function costs differs between machines)."""
    cheap = ["--study", "cheap", "--max-cost", "2", "--n-trials", "5"]
    result = aquasurf("optimize", "tiny.py", *cheap, cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "--max-cost 2: " in result.stderr
    study = optuna.load_study(study_name="cheap", storage=f"sqlite:///{copy / 'aquasurf.db'}")
    sampler = AquaSurfSampler(study_space(study), max_cost=2)  # the costs kept with the study
    trained = [t.user_attrs["activation"] for t in study.trials if "activation" in t.user_attrs]
    assert "relu(x)" in trained and all(sampler.cost_of(study, a) <= 2 for a in trained)
    skipped = sampler.baselines_over_cost(study)
    assert "softsign(x)" in skipped and not set(skipped) & set(trained)
    assert all(f"{name} ({cost:.1f})" in result.stderr for name, cost in skipped.items())


def test_a_search_of_every_function_stops_and_exits_0(copy):
    """More trials than functions: once all 8 are tried the search stops (one trial trains the
    best again) and says why, exit code 0."""
    result = aquasurf("optimize", "tiny.py", "--study", "all", "--n-trials", "12", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "Search finished: all 8 functions of the search space have been tried" in result.stderr
    done = trials(copy, "all")
    assert len(done) == 9 and all(t.state == TrialState.COMPLETE for t in done)
    repeat = done[-1]
    assert repeat.user_attrs["repeat_of"] < 8
    assert len({t.user_attrs["activation"] for t in done}) == 8


def test_objectives_score_and_cost(copy):
    """--objectives score,cost: a study of two objectives whose trials return the score and the
    activation's cost; the same study without the option is refused."""
    front = ["--study", "front", "--objectives", "score,cost"]
    result = aquasurf("optimize", "tiny.py", *front, "--n-trials", "4", cwd=copy)
    assert result.returncode == 0, result.stderr
    assert "cost minimised" in result.stderr
    done = trials(copy, "front")
    assert [t.state for t in done] == [TrialState.COMPLETE] * 4
    relu = next(t for t in done if t.user_attrs["activation"] == "relu(x)")
    assert 0.3 < relu.values[1] < 3 and all(t.values[1] > 0 for t in done)
    result = aquasurf("optimize", "tiny.py", "--study", "front", "--n-trials", "5", cwd=copy)
    assert result.returncode == 1
    assert "['maximize', 'minimize']" in result.stderr and "choose another --study" in result.stderr


def test_digits_example_short_search(tmp_path):
    """The digits example's model, data and Fisher batch, over 3 functions for 1 epoch."""
    (tmp_path / "digits_small.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(EXAMPLES)!r})
            from digits_cnn import build_model, data, fisher_batch

            SPACE = ["relu(x)", "tanh(x)", "mul(x,sigmoid(x))"]
            EPOCHS = 1
            """
        )
    )
    result = aquasurf("optimize", "digits_small.py", "--n-trials", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Fisher features" in result.stderr
    done = trials(tmp_path, "digits_small")
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    assert all(0.1 < t.value <= 1.0 for t in done)
    assert all(t.intermediate_values == {1: t.value} for t in done)


def test_a_fisher_batch_that_changes_between_processes_is_reported(tmp_path):
    """The map process gets another batch from a random fisher_batch(): its map would not be the
    search's, so it says so and stops; the search computes the map itself."""
    random_batch = (
        "\n\ndef fisher_batch():\n    return torch.randn(8, 4), torch.randint(0, 1, (8,))\n"
    )
    (tmp_path / "tiny.py").write_text(TINY + random_batch)
    result = aquasurf("optimize", "tiny.py", "--n-trials", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fisher_batch() gave the map process another batch" in result.stderr
    assert [t.state for t in trials(tmp_path)] == [TrialState.COMPLETE] * 8
