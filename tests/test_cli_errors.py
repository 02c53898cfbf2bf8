"""Bad input to ``aquasurf``: clear messages, exit code 1, no traceback, no password.

These run the typer app in this process (typer's CliRunner); spaces of at most 3 functions need
no UMAP, so each check takes a second or less.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from optuna_aquasurf.cli._app import app

SPACE3 = 'SPACE = ["relu(x)", "tanh(x)", "abs(x)"]\n'


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Each test runs in its own folder; optuna's log level is put back afterwards."""
    monkeypatch.chdir(tmp_path)
    verbosity = optuna.logging.get_verbosity()
    yield tmp_path
    optuna.logging.set_verbosity(verbosity)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def write(name: str, text: str) -> str:
    with open(name, "w") as file:
        file.write(textwrap.dedent(text))
    return name


def user_error(result, *parts: str) -> None:
    """``result`` is a user error (exit 1) whose message has each of ``parts``."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Error:" in result.output and "Traceback" not in result.output, result.output
    for part in parts:
        assert part in result.output, result.output


def trials(study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage="sqlite:///aquasurf.db").get_trials()


def test_help_imports_no_heavy_library():
    script = (
        "import sys; from optuna_aquasurf.cli._app import app; "
        "print(sorted({'torch', 'optuna', 'umap', 'matplotlib', 'timm'} & set(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.stdout.strip() == "[]", run.stderr
    assert "optimize" in invoke("--help").output


def test_missing_file_shows_the_contract():
    user_error(invoke("optimize", "nowhere.py"), "nowhere.py does not exist", "build_model(")


def test_file_without_the_functions_lists_the_contract():
    write("empty.py", "x = 1\n")
    user_error(
        invoke("optimize", "empty.py"),
        "does not define build_model(activation) or model() nor train(model, trial, device) "
        "or data()",
        "fisher_batch() -> (inputs, targets)",
    )


def test_syntax_error_and_import_error():
    write("broken.py", "def build_model(activation)\n    return activation\n")
    user_error(invoke("optimize", "broken.py"), "Syntax error in", "broken.py, line 1")
    write("raising.py", "import json\njson.loads('{')\n")
    result = invoke("optimize", "raising.py")
    assert result.exit_code == 1
    assert "Importing raising.py failed" in result.output and "raising.py" in result.output
    assert "JSONDecodeError" in result.output


def test_bad_definitions():
    write("notfn.py", "build_model = 3\ndef data(): pass\n")
    user_error(invoke("optimize", "notfn.py"), "build_model in notfn.py must be a function")
    write("direction.py", "def build_model(a): pass\ndef data(): pass\nDIRECTION = 'up'\n")
    user_error(invoke("optimize", "direction.py"), "DIRECTION in direction.py")
    write("search.py", "def build_model(a): pass\ndef data(): pass\nSEARCH = {'lr': 0.1}\n")
    user_error(invoke("optimize", "search.py"), "SEARCH['lr']", "FloatDistribution")


def test_bad_space_expression_shows_where():
    write(
        "badspace.py",
        """
        def build_model(activation): pass
        def train(model, trial, device): return 0.0
        SPACE = ["relu(x)", "mul(x,tanhh(x))"]
        """,
    )
    user_error(invoke("optimize", "badspace.py"), "SPACE in badspace.py", "did you mean 'tanh'")


def test_invalid_storage_urls_never_show_the_password():
    user_error(invoke("status", "--storage", "nonsense"), "Invalid storage URL 'nonsense'")
    for url in (
        "postgresql://bob:s3cret@127.0.0.1:1/db",
        "nosuchdb://bob:s3cret@host/db",
        "postgresql://bob:s3cret@host:port/db",
    ):
        result = invoke("best", "--storage", url)
        user_error(result, "bob:***@")
        assert "s3cret" not in result.output


def test_unknown_study_lists_the_existing_ones():
    user_error(invoke("status"), "No database at sqlite:///aquasurf.db")
    for name in ("alpha", "beta"):
        optuna.create_study(study_name=name, storage="sqlite:///aquasurf.db")
    user_error(invoke("best", "--study", "gamma"), "No study named 'gamma'", "alpha, beta")
    user_error(invoke("top"), "has 2 studies; choose one with --study: alpha, beta")
    user_error(invoke("best", "--study", "alpha"), "'alpha' has no completed trial yet")


def test_export_of_an_expression(tmp_path):
    user_error(invoke("export", "--expression", "relu(x"), "Invalid expression")
    user_error(invoke("export", "--expression", "relu(x)", "--out", "my-act.py"), "identifier")
    result = invoke("export", "--expression", "mul(x, tanh(x))", "--out", "act.py")
    assert result.exit_code == 0, result.output
    assert "from act import Activation" in result.output
    assert 'EXPRESSION = "mul(x,tanh(x))"' in (tmp_path / "act.py").read_text()


def test_unavailable_device():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write("ok.py", "def build_model(a): pass\ndef data(): pass\n")
    user_error(invoke("optimize", "ok.py", "--device", "cuda"), "CUDA is not available")
    user_error(invoke("optimize", "ok.py", "--device", "tpu9"), "Unknown device 'tpu9'")


def test_same_error_in_the_first_trials_stops_and_a_fix_runs_them_again():
    broken = textwrap.dedent(
        """
        from torch import nn
        def build_model(activation):
            return nn.Sequential(nn.Linear(2, 2), activation)
        def train(model, trial, device):
            raise ValueError(f"boom {trial.number}")
        """
    )
    write("model.py", SPACE3 + broken)
    result = invoke("optimize", "model.py", "--n-trials", "3")
    assert result.exit_code == 1
    assert "first 3 trials all failed with ValueError" in result.output
    assert "Fix model.py and run the same command again" in result.output
    assert 'raise ValueError(f"boom {trial.number}")' in result.output  # the user's traceback
    failed = trials("model")
    assert [t.state for t in failed] == [TrialState.FAIL] * 3
    assert [t.user_attrs["fail_reason"] for t in failed] == [
        f"error: ValueError: boom {n}" for n in range(3)
    ]

    write(
        "model.py",
        SPACE3 + broken.replace('raise ValueError(f"boom {trial.number}")', "return 1.0"),
    )
    result = invoke("optimize", "model.py", "--n-trials", "3")
    assert result.exit_code == 0, result.output
    reruns = [t for t in trials("model") if "rerun_of" in t.user_attrs]
    assert sorted(t.user_attrs["rerun_of"] for t in reruns) == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in reruns)
    by_number = {t.number: t for t in failed}
    for t in reruns:
        original = by_number[t.user_attrs["rerun_of"]]
        assert t.user_attrs["activation"] == original.user_attrs["activation"]
        assert t.user_attrs["seed"] == original.user_attrs["seed"]


def test_diverging_activation_fails_its_trial_and_the_search_goes_on():
    write(
        "model.py",
        SPACE3
        + textwrap.dedent(
            """
        from torch import nn
        def build_model(activation):
            return nn.Sequential(activation)
        def train(model, trial, device):
            if trial.user_attrs["activation"] == "tanh(x)":
                return float("nan")
            return 0.5
        """
        ),
    )
    result = invoke("optimize", "model.py", "--n-trials", "3")
    assert result.exit_code == 0, result.output
    done = {t.user_attrs["activation"]: t for t in trials("model")}
    assert done["tanh(x)"].state == TrialState.FAIL
    assert done["tanh(x)"].user_attrs["fail_reason"] == "diverged: train() returned nan"
    assert done["relu(x)"].state == done["abs(x)"].state == TrialState.COMPLETE


def test_error_in_build_model_while_computing_the_map():
    write(
        "model.py",
        SPACE3
        + textwrap.dedent(
            """
            import torch
            def build_model(activation):
                raise RuntimeError("no such layer")
            def train(model, trial, device):
                return 0.0
            def fisher_batch():
                return torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
            """
        ),
    )
    result = invoke("optimize", "model.py", "--n-trials", "1")
    assert result.exit_code == 1
    assert "Computing the map failed" in result.output and "no such layer" in result.output
    assert 'raise RuntimeError("no such layer")' in result.output


def test_search_parameters_are_suggested_and_recorded():
    write(
        "model.py",
        SPACE3
        + textwrap.dedent(
            """
            from optuna.distributions import (
                CategoricalDistribution, FloatDistribution, IntDistribution
            )
            from torch import nn
            SEARCH = {
                "lr": FloatDistribution(1e-4, 1e-1, log=True),
                "width": IntDistribution(2, 8, step=2),
                "norm": CategoricalDistribution(["batch", "layer"]),
            }
            def build_model(activation):
                return nn.Sequential(activation)
            def train(model, trial, device):
                return trial.params["lr"] * trial.params["width"]
            """
        ),
    )
    result = invoke("optimize", "model.py", "--n-trials", "2", "--pruner", "none")
    assert result.exit_code == 0, result.output
    for t in trials("model"):
        assert set(t.params) == {"lr", "width", "norm"}
        assert t.value == pytest.approx(t.params["lr"] * t.params["width"])


def test_plot_without_its_libraries_names_the_extra(monkeypatch):
    import importlib.util

    from optuna_aquasurf.cli import _plot
    from optuna_aquasurf.cli._console import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"needs plotly: pip install 'optuna-aquasurf\[plot\]'"):
        _plot._check_plot_libraries()
