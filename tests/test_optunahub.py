"""The OptunaHub package (package/samplers/aquasurf/, the registry's layout), loaded as
optunahub loads a package from a checkout of the registry."""

from __future__ import annotations

import runpy
from pathlib import Path

import optuna
import pytest

import optuna_aquasurf

optunahub = pytest.importorskip("optunahub")

REGISTRY = Path(__file__).resolve().parents[1] / "package"
PACKAGE = REGISTRY / "samplers" / "aquasurf"


def load():
    return optunahub.load_local_module(package="samplers/aquasurf", registry_root=str(REGISTRY))


def test_the_package_holds_the_registrys_files_and_front_matter():
    files = {"__init__.py", "README.md", "LICENSE", "example.py", "requirements.txt"}
    assert files <= {path.name for path in PACKAGE.iterdir()}
    front_matter = PACKAGE.joinpath("README.md").read_text().split("---\n")[1]
    fields = dict(line.split(": ", 1) for line in front_matter.splitlines())
    assert set(fields) == {"author", "title", "description", "tags", "optuna_versions", "license"}
    assert "sampler" in fields["tags"]
    assert fields["license"] == "MIT License"
    assert PACKAGE.joinpath("LICENSE").read_text().startswith("MIT License")


def test_the_package_is_the_installed_library_and_runs_a_short_study():
    module = load()
    assert module.AquaSurfSampler is optuna_aquasurf.AquaSurfSampler
    assert module.suggest_activation is optuna_aquasurf.suggest_activation

    space = ["relu(x)", "tanh(x)", "swish(x)", "abs(x)"]
    study = optuna.create_study(sampler=module.AquaSurfSampler(space, seed=0))
    study.optimize(lambda trial: module.suggest_activation(trial).cost, n_trials=4)
    tried = sorted(t.user_attrs["activation"] for t in study.trials)
    assert tried == sorted(space)


def test_the_example_runs(monkeypatch):
    """example.py as published, its ``optunahub.load_module`` served from this checkout."""
    monkeypatch.setattr(optunahub, "load_module", lambda package: load())
    example = runpy.run_path(str(PACKAGE / "example.py"), run_name="__main__")
    study = example["study"]
    assert len(study.trials) == 5
    assert study.best_trial.user_attrs["activation"] in example["space"]
