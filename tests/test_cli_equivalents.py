"""The other names of a study's functions that `aquasurf top` lists are kept with the study when
its search starts (cli/_equivalents.py): read without torch, the same as the space's own."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
from optuna.trial import create_trial

from optuna_aquasurf import SearchSpace
from optuna_aquasurf._baselines import DEFAULT_BASELINES
from optuna_aquasurf._private import storage_of
from optuna_aquasurf._store import store_for
from optuna_aquasurf.cli import _equivalents
from optuna_aquasurf.cli._equivalents import equivalents_of, save_equivalents, space_equivalents
from optuna_aquasurf.cli._study_sampler import SETTINGS_ATTR, StudySettings
from optuna_aquasurf.cli._views import COST_ATTR

#: Names with several spellings, and a function near relu's baselines.
SPACE = ["max(x,unary(x))", "add(unary(x),unary(x))"]
UNARY = ["relu", "tanh", "zero", "identity", "sigmoid"]


def new_study(url: str, name: str) -> optuna.Study:
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    study.set_user_attr(SETTINGS_ATTR, {"file": "model.py", "space": SPACE, "seed": 0})
    return study


def space() -> SearchSpace:
    return SearchSpace.from_schemas(SPACE, unary=UNARY)


def test_kept_equivalents_are_the_spaces_own(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'aquasurf.db'}"
    built = space()
    kept, rebuilt = new_study(url, "kept"), new_study(url, "rebuilt")
    save_equivalents(kept, built, DEFAULT_BASELINES)
    from_space = space_equivalents(built)
    from_store = equivalents_of(kept)
    monkeypatch.setattr(
        "optuna_aquasurf.cli._study_sampler.StudySettings.search_space", lambda settings: built
    )
    from_rebuilt = equivalents_of(rebuilt)  # nothing kept: the space is rebuilt
    names = [name for f in range(len(built)) for name in built[f].equivalents]
    assert any(len(built[f].equivalents) > 1 for f in range(len(built)))
    for expression in names + list(DEFAULT_BASELINES):
        assert from_store(expression) == from_space(expression) == from_rebuilt(expression)
    assert from_store("relu(x)") == from_space("relu(x)") != []


def test_top_lists_kept_equivalents_without_torch(tmp_path):
    url = f"sqlite:///{tmp_path / 'aquasurf.db'}"
    study = new_study(url, "s")
    built = space()
    save_equivalents(study, built, DEFAULT_BASELINES)
    for expression, score in [("relu(x)", 0.9), ("add(tanh(x),zero(x))", 0.8)]:
        attrs = {"activation": expression, COST_ATTR: 1.0}  # recorded: no cost measured
        study.add_trial(create_trial(value=score, user_attrs=attrs))
    code = f"""
import sys
from typer.testing import CliRunner
from optuna_aquasurf.cli._app import app
result = CliRunner().invoke(app, ["top", "--storage", {url!r}, "--study", "s", "--json"])
assert result.exit_code == 0, result.output
print(result.output)
print("torch" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    output, torch_loaded = run.stdout.rstrip().rsplit("\n", 1)
    assert torch_loaded == "False"
    rows = {row["expression"]: row["equivalents"] for row in json.loads(output)}
    expected = space_equivalents(built)
    assert rows == {e: expected(e) for e in ("relu(x)", "add(tanh(x),zero(x))")}
    assert rows["add(tanh(x),zero(x))"]


def test_a_space_of_too_many_names_is_not_kept(tmp_path, monkeypatch):
    study = new_study(f"sqlite:///{tmp_path / 'aquasurf.db'}", "big")
    built = space()
    monkeypatch.setattr(_equivalents, "MAX_KEPT_NAMES", built.n_names - 1)
    save_equivalents(study, built, DEFAULT_BASELINES)
    key = _equivalents._key(StudySettings.of(study))
    assert store_for(storage_of(study)).load(_equivalents.TABLE, key) is None
    monkeypatch.setattr(_equivalents, "MAX_KEPT_NAMES", built.n_names)
    save_equivalents(study, built, DEFAULT_BASELINES)
    assert store_for(storage_of(study)).load(_equivalents.TABLE, key) is not None
