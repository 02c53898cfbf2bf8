"""The ``aquasurf`` command next to Optuna's: --version, metric names, ``studies``, ``delete``,
-v, and help that fits 80 columns."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import optuna
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from optuna_aquasurf import __version__
from optuna_aquasurf._store import store_for
from optuna_aquasurf.cli._app import app
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._optimize import SearchSettings, open_study
from optuna_aquasurf.cli._userfile import CONTRACT, load_user_file
from optuna_aquasurf.cli._verbosity import VERBOSE_VARIABLE

TINY = textwrap.dedent(
    """
    import torch
    from torch import nn

    SPACE = ["relu(x)", "tanh(x)", "sigmoid(x)", "swish(x)"]

    def build_model(activation):
        return nn.Sequential(nn.Linear(4, 8), activation, nn.Linear(8, 1))

    def train(model, trial, device):
        with torch.no_grad():
            return float(model(torch.ones(2, 4)).mean())
    """
)


#: TINY for the built-in trainer: data() instead of train().
BUILT_IN = TINY.replace("def train(model, trial, device):", "def data():\n    return [], []\n")


@pytest.fixture(autouse=True)
def restore_verbosity(monkeypatch):
    """Undo what -v writes to the environment and to Optuna's log level."""
    monkeypatch.setenv(VERBOSE_VARIABLE, "0")
    yield
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input, env={"COLUMNS": "80"})


def without_torch(*args: str) -> str:
    """Output of the app run with ``args`` in a fresh interpreter, then whether torch loaded."""
    code = (
        "import sys; from typer.testing import CliRunner; "
        "from optuna_aquasurf.cli._app import app; "
        f"result = CliRunner().invoke(app, {list(args)!r}); "
        "print(result.exit_code, result.output, 'torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture
def storage(tmp_path) -> str:
    """A SQLite storage with study 'one' (maximize: complete 0.5 and 0.75, one failed) and
    study 'two' (maximize score, minimize cost: one complete)."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    one = optuna.create_study(study_name="one", storage=url, direction="maximize")
    for value in (0.5, 0.75):
        one.add_trial(optuna.trial.create_trial(value=value))
    one.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    two = optuna.create_study(study_name="two", storage=url, directions=["maximize", "minimize"])
    two.add_trial(optuna.trial.create_trial(values=[0.5, 1.5]))
    return url


def test_version_prints_the_package_version_without_torch():
    assert without_torch("--version") == f"0 aquasurf {__version__}\n False\n"


def search_settings(**changes) -> SearchSettings:
    """The settings of a one-trial search on the CPU, with ``changes``."""
    settings = dict(
        n_trials=1,
        timeout=None,
        device="cpu",
        storage_url="sqlite://",
        study_name=None,
        seed=0,
        pruner="none",
        heartbeat_interval=60,
        grace_period=None,
        max_retry=0,
    )
    return SearchSettings(**{**settings, **changes})


def test_metric_names_of_the_objectives(tmp_path):
    """``accuracy`` for the built-in trainer, ``score`` for train(), or the file's METRIC."""
    files = {"own": TINY, "named": TINY + 'METRIC = "top1"\n', "built_in": BUILT_IN}
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    own, named, trainer = (load_user_file(tmp_path / f"{name}.py") for name in files)
    settings, with_cost = search_settings(), search_settings(objectives="score,cost")
    assert settings.metric_names(trainer) == ["accuracy"]
    assert settings.metric_names(own) == ["score"]
    assert settings.metric_names(named) == ["top1"]
    assert with_cost.metric_names(named) == ["top1", "cost"]


@pytest.mark.parametrize(
    "lines, message",
    [
        ('METRIC = ""', "METRIC in"),
        ('METRIC = "cost"', "other than 'cost'"),
        ("METRIC = 3", "not 3"),
    ],
)
def test_a_bad_metric_name_is_a_clear_error(tmp_path, lines, message):
    (tmp_path / "bad.py").write_text(TINY + lines + "\n")
    with pytest.raises(UserError, match=message):
        load_user_file(tmp_path / "bad.py")


def test_a_metric_name_needs_train(tmp_path):
    (tmp_path / "bad.py").write_text(BUILT_IN + 'METRIC = "top1"\n')
    with pytest.raises(UserError, match="sets METRIC but has no train"):
        load_user_file(tmp_path / "bad.py")


@pytest.mark.parametrize("objectives", ["score", "score,cost"])
def test_new_and_resumed_studies_get_metric_names(tmp_path, objectives):
    (tmp_path / "tiny.py").write_text(TINY)
    url = f"sqlite:///{tmp_path / 'aquasurf.db'}"
    directions = ["maximize", "minimize"][: len(objectives.split(","))]
    optuna.create_study(study_name="older", storage=url, directions=directions)
    settings = search_settings(storage_url=url, objectives=objectives)
    for name in ("tiny", "older"):
        named = SearchSettings(**{**settings.__dict__, "study_name": name})
        _, study = open_study(tmp_path / "tiny.py", named)
        assert study.metric_names == objectives.split(",")


def test_studies_lists_names_directions_trials_and_best_values(storage):
    result = invoke("studies", "--storage", storage, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "name": "one",
            "directions": ["maximize"],
            "trials": {"complete": 2, "fail": 1},
            "best_value": 0.75,
        },
        {
            "name": "two",
            "directions": ["maximize", "minimize"],
            "trials": {"complete": 1},
            "best_value": None,
        },
    ]
    table = invoke("studies", "--storage", storage).output
    assert "2 complete, 1 fail" in table and "0.75" in table and "maximize, minimize" in table


def test_studies_does_not_import_torch(storage):
    output = without_torch("studies", "--storage", storage, "--json")
    assert output.startswith("0 [") and output.endswith(" False\n")


def test_studies_of_a_missing_database_is_a_clear_error(tmp_path):
    result = invoke("studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 1 and "No database at" in result.output


def test_delete_asks_then_removes_the_study_and_its_claims(storage):
    backend = optuna.storages.RDBStorage(storage)
    store = store_for(backend)
    ids = {name: backend.get_study_id_from_name(name) for name in ("one", "two")}
    for study_id in ids.values():
        assert store.claim(study_id, 7, 1, lambda trial_id: False)

    refused = invoke("delete", "--study", "one", "--storage", storage, input="n\n")
    assert refused.exit_code == 1 and "Delete the study 'one' and its 3 trials?" in refused.output
    assert len(optuna.get_all_study_names(storage)) == 2

    result = invoke("delete", "--study", "one", "--storage", storage, input="y\n")
    assert result.exit_code == 0 and "Deleted the study one and its 3 trials." in result.output
    assert optuna.get_all_study_names(storage) == ["two"]
    with backend.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT study_id FROM aquasurf_claims").all()
    assert rows == [(ids["two"],)]

    result = invoke("delete", "--study", "two", "--storage", storage, "--yes")
    assert result.exit_code == 0 and optuna.get_all_study_names(storage) == []


def test_delete_of_an_unknown_study_is_a_clear_error(storage):
    result = invoke("delete", "--study", "three", "--storage", storage, "--yes")
    assert result.exit_code == 1
    assert "No study named 'three'" in result.output and "one, two" in result.output


def test_verbose_shows_optunas_info_log(storage):
    from optuna_aquasurf.cli._verbosity import set_optuna_verbosity

    assert invoke("studies", "--storage", storage).exit_code == 0
    set_optuna_verbosity()
    assert optuna.logging.get_verbosity() == logging.ERROR
    assert invoke("-v", "studies", "--storage", storage).exit_code == 0
    set_optuna_verbosity()
    assert optuna.logging.get_verbosity() == logging.INFO


@pytest.mark.parametrize("command", [[], *([name] for name in get_command(app).commands)])
def test_help_fits_80_columns(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.output  # no cell cut short
    if command == ["optimize"]:  # each row of the contract on one line
        shown = {line.strip() for line in lines}
        assert all(row.strip() in shown for row in CONTRACT.splitlines())
