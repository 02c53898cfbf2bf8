"""The sampler of a study, which the CLI builds in one place from the settings the study keeps:
``aquasurf plot`` shows the predictions of the search, its prior included; and the modules of the
CLI import one another one way only.

The end-to-end check runs the real CLI on a copy of the ``searched`` study of
:mod:`tests.test_cli`, whose map is stored: its database serves every study made in it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import optuna
import pytest

from optuna_aquasurf import AquaSurfSampler
from optuna_aquasurf.cli._study_sampler import study_space
from tests import test_cli
from tests.test_cli import aquasurf, invoke

# The fixtures of tests.test_cli: a private copy of its searched study.
copy, searched = test_cli.copy, test_cli.searched

CLI = Path(__file__).resolve().parents[1] / "cli"
PRIOR = "act-bench-digits:cnn"


def plotted_predictions(map_html: Path) -> list[str]:
    """The predicted scores that the map's HTML shows, one per function of the space."""
    return re.findall(r"predicted (-?\d+\.\d{4}|nan)", map_html.read_text())


def shown(predictions) -> list[str]:
    """Predicted scores as the map's HTML shows them."""
    return [f"{p:.4f}" for p in predictions]


@pytest.mark.parametrize("with_model_file", [True, False], ids=["model file", "stored map"])
def test_plot_shows_the_predictions_of_the_search_with_its_prior(copy, with_model_file):
    """With the model file, plot predicts as the search's own sampler, prior included; without
    it, from the stored 2-D map, prior included too."""
    search = ["--study", "primed", "--prior", PRIOR, "--n-trials", "3"]
    result = aquasurf("optimize", "tiny.py", *search, cwd=copy)
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{copy / 'aquasurf.db'}"
    study = optuna.load_study(study_name="primed", storage=url)
    kept = study.user_attrs["aquasurf"]
    assert (kept["prior"], kept["max_cost"], kept["cost_device"]) == ([PRIOR], None, "cpu")

    model_file = [str(copy / "tiny.py")] if with_model_file else []
    options = {} if with_model_file else {"map_key": kept["map"], "surrogate": "map"}
    result = invoke("plot", *model_file, "--study", "primed", "--storage", url, "--out", str(copy))
    assert result.exit_code == 0, result.output

    plotted = plotted_predictions(copy / "primed_map.html")
    space = study_space(study)
    with_prior = AquaSurfSampler(space, seed=0, prior=[PRIOR], **options).predict(study)
    without_prior = AquaSurfSampler(space, seed=0, **options).predict(study)
    assert plotted == shown(with_prior)
    assert plotted != shown(without_prior)


def cli_imports(path: Path) -> set[str]:
    """The modules of cli/ that the module at ``path`` imports, at its top or in a function."""
    modules = {module.stem for module in CLI.glob("*.py")}
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "optuna_aquasurf.cli":
            imported |= {alias.name for alias in node.names} & modules
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.removeprefix("optuna_aquasurf.cli."))
        elif isinstance(node, ast.Import):
            imported |= {alias.name.removeprefix("optuna_aquasurf.cli.") for alias in node.names}
    return imported & modules - {path.stem}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module -> modules it imports) as the path that closes it, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    return next(filter(None, (visit(module, []) for module in sorted(graph))), None)


def test_import_cycle_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycle(graph) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_cli_modules_import_each_other_one_way():
    graph = {path.stem: cli_imports(path) for path in CLI.glob("*.py")}
    assert graph["_optimize"] >= {"_map_process", "_views"}  # the parsing sees what is there
    cycle = import_cycle(graph)
    assert cycle is None, "cli/ modules import each other: " + " -> ".join(cycle)
