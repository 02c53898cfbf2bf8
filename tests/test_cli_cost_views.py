"""What the views say about cost: ``top``, ``best``, ``status``, ``plot`` and ``export`` of a study
of the score alone (costs recorded with its trials, or for older trials measured now) and of a
study of (score, cost) (costs stored as its second values); which function ``export`` writes.

The studies are written with optuna directly, as ``aquasurf optimize`` would leave them, and
read by the real typer app in this process. Their space has 3 functions, whose map needs no
UMAP, so ``plot`` takes a second.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from PIL import Image
from typer.testing import CliRunner

from optuna_aquasurf import AquaSurfSampler, SearchSpace
from optuna_aquasurf.cli._app import app
from optuna_aquasurf.cli._plot import write_cost_plots
from optuna_aquasurf.cli._study_sampler import SETTINGS_ATTR
from optuna_aquasurf.cli._views import COST_ATTR

SPACE = ["relu(x)", "tanh(x)", "swish(x)"]
#: The (score, cost) study's trials: expression, score, cost. Softsign ties swish's cost with a
#: lower score; sigmoid scores as swish for more cost; both are off the front.
PARETO = [
    ("relu(x)", 0.80, 1.0),
    ("tanh(x)", 0.85, 1.2),
    ("swish(x)", 0.90, 1.7),
    ("softsign(x)", 0.70, 1.7),
    ("sigmoid(x)", 0.90, 3.0),
    ("mul(x,tanh(x))", 0.95, 4.0),
]
FRONT = ["relu(x)", "tanh(x)", "swish(x)", "mul(x,tanh(x))"]
#: The single-objective study's trials: expression, score (minimised: a loss).
LOSSES = [("relu(x)", 0.30), ("tanh(x)", 0.25), ("swish(x)", 0.20), ("cosh(x)", 0.40)]
#: The single-objective study whose trials record their costs (as ``suggest_activation`` does):
#: expression, score (minimised), cost. The costs are far from what these functions measure, so a
#: view that shows them read them.
RECORDED = [("relu(x)", 0.30, 7.25), ("tanh(x)", 0.25, 11.5), ("swish(x)", 0.20, 30.0)]
#: A (score, cost) study whose best score is tied: elu(x) first, then the cheaper
#: sub(swish(x),one(x)), the front's best.
TIED = [("relu(x)", 0.80, 0.92), ("elu(x)", 0.90, 2.58), ("sub(swish(x),one(x))", 0.90, 2.50)]
#: A (score, cost) study after ``aquasurf confirm``: expression, scores (the search's first,
#: then its repeats) and cost. By single trials the front would be relu, tanh (its search score,
#: 0.90) and mul; by means, tanh's (0.773) is below relu's (0.81) for more cost, and swish's
#: (0.85) tops relu's: the front is :data:`MEAN_FRONT`.
CONFIRMED = [
    ("relu(x)", [0.80, 0.82], 1.0),
    ("tanh(x)", [0.90, 0.70, 0.72], 1.2),
    ("swish(x)", [0.86, 0.84], 1.7),
    ("mul(x,tanh(x))", [0.95], 4.0),
]
MEAN_FRONT = ["relu(x)", "swish(x)", "mul(x,tanh(x))"]
#: A generous band around relu's cost over relu's, for a loaded machine.
RELU_COST = (0.3, 3.0)


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    """A SQLite database of the studies ``pareto`` (maximize score, minimize cost), ``loss``
    (minimize), ``registered`` (an operator this process does not know) and ``three`` (three
    objectives), the first two with their map stored; ``recorded`` (:data:`RECORDED`) and
    ``tied`` (:data:`TIED`)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cost_views') / 'aquasurf.db'}"
    space = SearchSpace.from_schemas(SPACE)
    sampler = AquaSurfSampler(space, seed=0)
    settings = {"file": "model.py", "space": SPACE, "seed": 0, "map": sampler.map_key}

    pareto = optuna.create_study(
        storage=url, study_name="pareto", directions=["maximize", "minimize"]
    )
    pareto.set_user_attr(SETTINGS_ATTR, {**settings, "objectives": ["score", "cost"]})
    for expression, score, cost in PARETO:
        attrs = {"activation": expression, "seconds": 1.0}
        pareto.add_trial(create_trial(values=[score, cost], user_attrs=attrs))
    pareto.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"activation": "abs(x)"}))

    loss = optuna.create_study(storage=url, study_name="loss", direction="minimize")
    loss.set_user_attr(SETTINGS_ATTR, settings)
    for expression, score in LOSSES:
        loss.add_trial(create_trial(value=score, user_attrs={"activation": expression}))
    for study in (pareto, loss):
        sampler.embedding(study)  # the map, stored with the study as `optimize` stores it

    registered = optuna.create_study(storage=url, study_name="registered", direction="maximize")
    for expression, score in [("myop(x)", 0.9), ("relu(x)", 0.8)]:
        registered.add_trial(create_trial(value=score, user_attrs={"activation": expression}))

    three = optuna.create_study(storage=url, study_name="three", directions=["maximize"] * 3)
    three.add_trial(create_trial(values=[1.0, 2.0, 3.0], user_attrs={"activation": "relu(x)"}))

    recorded = optuna.create_study(storage=url, study_name="recorded", direction="minimize")
    for expression, score, cost in RECORDED:
        attrs = {"activation": expression, COST_ATTR: cost}
        recorded.add_trial(create_trial(value=score, user_attrs=attrs))

    tied = optuna.create_study(storage=url, study_name="tied", directions=["maximize", "minimize"])
    for expression, score, cost in TIED:
        tied.add_trial(create_trial(values=[score, cost], user_attrs={"activation": expression}))
    return url


def invoke(storage: str, study: str, *args: str):
    """Run the app in this process on ``study``; the result of a command that succeeded."""
    result = CliRunner().invoke(app, [*args, "--storage", storage, "--study", study])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def as_json(storage: str, study: str, *args: str):
    return json.loads(invoke(storage, study, *args, "--json").stdout)


def test_top_of_a_cost_study_by_score_and_by_cost(storage):
    by_score = as_json(storage, "pareto", "top")
    assert [row["score"] for row in by_score] == [0.95, 0.90, 0.90, 0.85, 0.80, 0.70]
    by_cost = as_json(storage, "pareto", "top", "--by", "cost", "-n", "4")
    # Cheapest first; swish before softsign, same cost, for its better score.
    assert [row["expression"] for row in by_cost] == [e for e, _, _ in PARETO[:4]]
    assert [row["cost"] for row in by_cost] == [1.0, 1.2, 1.7, 1.7]
    assert [row["rank"] for row in by_cost] == [1, 2, 3, 4]
    assert {"trial", "expression", "score", "params", "seconds", "equivalents"} < set(by_cost[0])

    table = invoke(storage, "pareto", "top", "--by", "cost").stdout
    assert "Cheapest functions of pareto" in table and "1.7x" in table
    assert table.index("relu(x)") < table.index("tanh(x)") < table.index("mul(x,tanh(x))")


def test_top_of_a_single_objective_study_measures_costs_not_recorded(storage):
    """The trials of ``loss`` record no cost (a study older than the record): measured now."""
    by_score = as_json(storage, "loss", "top")
    assert [row["expression"] for row in by_score] == ["swish(x)", "tanh(x)", "relu(x)", "cosh(x)"]
    costs = {row["expression"]: row["cost"] for row in by_score}
    assert all(cost > 0 for cost in costs.values()), costs
    assert RELU_COST[0] < costs["relu(x)"] < RELU_COST[1], costs

    by_cost = as_json(storage, "loss", "top", "--by", "cost")
    assert sorted(row["expression"] for row in by_cost) == sorted(costs)
    listed = [row["cost"] for row in by_cost]
    assert listed == sorted(listed)
    assert "Best functions of loss" in invoke(storage, "loss", "top").stdout


def test_unknown_cost_is_listed_last_and_shown_as_a_dash(storage):
    by_cost = as_json(storage, "registered", "top", "--by", "cost")
    assert [(row["expression"], row["cost"] is None) for row in by_cost] == [
        ("relu(x)", False),
        ("myop(x)", True),
    ]
    table = invoke(storage, "registered", "top").stdout
    assert "myop(x)" in table and " - " in table


def test_best_of_a_cost_study_is_its_pareto_front(storage):
    record = as_json(storage, "pareto", "best")
    assert set(record) == {"study", "directions", "front"}
    assert record["directions"] == ["maximize", "minimize"]
    front = record["front"]
    assert [row["expression"] for row in front] == FRONT
    assert [(row["score"], row["cost"]) for row in front] == [
        (s, c) for e, s, c in PARETO if e in FRONT
    ]
    study = optuna.load_study(study_name="pareto", storage=storage)
    assert {row["trial"] for row in front} == {t.number for t in study.best_trials}
    assert [row["member"] for row in front] == [1, 2, 3, 4]  # what `export --pick` takes

    table = invoke(storage, "pareto", "best").stdout
    assert "Pareto front of pareto" in table and "export --pick #" in table
    assert all(expression in table for expression in FRONT)
    assert "sigmoid(x)" not in table and "softsign(x)" not in table


def test_best_of_a_single_objective_study_adds_its_cost(storage):
    record = as_json(storage, "loss", "best")
    assert record["direction"] == "minimize"
    assert record["expression"] == "swish(x)" and record["score"] == 0.20
    assert record["cost"] > 0
    assert "cost" in invoke(storage, "loss", "best").stdout


def test_status_of_both_kinds(storage):
    pareto = as_json(storage, "pareto", "status")
    assert pareto["direction"] == "maximize"
    assert pareto["directions"] == ["maximize", "minimize"]
    assert pareto["front_size"] == len(FRONT)
    assert pareto["best"]["expression"] == "mul(x,tanh(x))" and pareto["best"]["cost"] == 4.0
    assert pareto["trials"]["complete"] == len(PARETO) and pareto["trials"]["fail"] == 1
    shown = invoke(storage, "pareto", "status").stdout
    assert "maximize score, minimize cost" in shown and "Pareto front" in shown

    loss = as_json(storage, "loss", "status")
    assert loss["directions"] == ["minimize"] and loss["front_size"] is None
    assert loss["best"]["expression"] == "swish(x)"
    assert "Pareto front" not in invoke(storage, "loss", "status").stdout


def test_more_than_two_objectives_is_a_clear_error(storage):
    for view in ("top", "best", "status"):
        result = CliRunner().invoke(app, [view, "--storage", storage, "--study", "three"])
        assert result.exit_code == 1, result.output
        assert "has the objectives [" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("study", ["pareto", "loss"])
def test_plot_writes_score_against_cost(storage, study, tmp_path):
    written = invoke(storage, study, "plot", "--out", str(tmp_path)).stdout
    kinds = ("map", "history", "cost")
    names = [f"{study}_{kind}.{suffix}" for kind in kinds for suffix in ("png", "html")]
    for name in names:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert written.count("wrote ") == len(names)
    with Image.open(tmp_path / f"{study}_cost.png") as image:
        image.verify()
    html = (tmp_path / f"{study}_cost.html").read_text()
    assert "Pareto front" in html and '"type":"log"' in html and "relu(x)" in html


def test_cost_plots_need_no_map(storage, tmp_path):
    study = optuna.load_study(study_name="registered", storage=storage)
    paths = write_cost_plots(study, tmp_path / "plots")
    assert [path.name for path in paths] == ["registered_cost.png", "registered_cost.html"]
    assert all(path.stat().st_size > 0 for path in paths)
    # The function of unknown cost is left out; relu, the only one left, is the front.
    assert "myop(x)" not in paths[1].read_text()


def test_cost_plots_of_a_study_without_a_completed_trial(tmp_path):
    study = optuna.create_study(study_name="empty", directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"activation": "relu(x)"}))
    paths = write_cost_plots(study, tmp_path)
    assert all(path.stat().st_size > 0 for path in paths)


def test_export_of_a_study_of_score_and_cost_writes_the_cost_it_knows(storage, tmp_path):
    out = tmp_path / "cheap_act.py"
    printed = invoke(storage, "pareto", "export", "--out", str(out)).stdout
    assert "mul(x,tanh(x)), cost 4 relu passes" in printed  # the best score, its stored cost
    assert "\nCOST = 4\n" in out.read_text()


def test_recorded_costs_are_the_figure_of_every_view(storage, tmp_path):
    """The costs a study recorded with its trials are shown as they are, never measured again."""
    costs = {expression: cost for expression, _, cost in RECORDED}
    assert {row["expression"]: row["cost"] for row in as_json(storage, "recorded", "top")} == costs
    assert as_json(storage, "recorded", "best")["cost"] == costs["swish(x)"]
    assert as_json(storage, "recorded", "status")["best"]["cost"] == costs["swish(x)"]
    assert "cost 30.0x" in invoke(storage, "recorded", "best").stdout

    out = tmp_path / "recorded_act.py"
    printed = invoke(storage, "recorded", "export", "--out", str(out), "--max-cost", "8").stdout
    assert "relu(x), cost 7.25 relu passes" in printed
    assert "\nCOST = 7.25\n" in out.read_text()

    study = optuna.load_study(study_name="recorded", storage=storage)
    html = write_cost_plots(study, tmp_path)[1].read_text()
    assert "cost 7.25x relu" in html and "cost 11.50x relu" in html


def test_status_and_best_read_recorded_costs_without_torch(storage):
    """Reading recorded costs needs no measurement, so no torch (which takes seconds to load)."""
    code = f"""
import sys
from typer.testing import CliRunner
from optuna_aquasurf.cli._app import app
for view in ("status", "best"):
    result = CliRunner().invoke(app, [view, "--storage", {storage!r}, "--study", "recorded"])
    assert result.exit_code == 0, result.output
print("torch" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_export_of_a_cost_study_writes_the_cheaper_of_the_best_scores(storage, tmp_path):
    """elu(x), trained first, scores as sub(swish(x),one(x)) for more cost: off the front."""
    out = tmp_path / "tied_act.py"
    printed = invoke(storage, "tied", "export", "--out", str(out)).stdout
    assert "wrote" in printed and "sub(swish(x),one(x)), cost 2.5 relu passes" in printed
    assert "trial 2: score 0.9 (maximize), front member 2 of 2" in printed
    assert 'EXPRESSION = "sub(swish(x),one(x))"' in out.read_text()
    assert as_json(storage, "tied", "status")["best"]["expression"] == "sub(swish(x),one(x))"


@pytest.mark.parametrize(
    ("choice", "member"),
    [
        (["--pick", "1"], 1),
        (["--pick", "3"], 3),
        (["--max-cost", "1.7"], 3),  # swish(x), not softsign(x) of the same cost
        (["--max-cost", "3.9"], 3),  # not sigmoid(x), which scores as swish(x) for more
        (["--max-cost", "4"], 4),
    ],
)
def test_export_writes_the_front_member_chosen(storage, tmp_path, choice, member):
    out = tmp_path / "chosen_act.py"
    printed = invoke(storage, "pareto", "export", "--out", str(out), *choice).stdout
    expression, score, cost = next(t for t in PARETO if t[0] == FRONT[member - 1])
    assert f"{expression}, cost {cost:.3g} relu passes" in printed
    assert f"score {score:.6g} (maximize), front member {member} of {len(FRONT)}" in printed
    assert f'EXPRESSION = "{expression}"' in out.read_text()


def test_export_of_a_single_objective_study_under_a_cost(storage, tmp_path):
    out = tmp_path / "cheap_act.py"
    printed = invoke(storage, "recorded", "export", "--out", str(out), "--max-cost", "12").stdout
    assert "tanh(x), cost 11.5 relu passes" in printed  # swish(x) scores better for 30
    assert "score 0.25 (minimize)" in printed and "front member" not in printed
    assert "\nCOST = 11.5\n" in out.read_text()


@pytest.mark.parametrize(
    ("study", "args", "message"),
    [
        ("pareto", ["--pick", "5"], "--pick 5: give a number from 1 to 4, the members of"),
        ("pareto", ["--max-cost", "0.5"], "its cheapest, relu(x), costs 1 relu passes."),
        ("recorded", ["--max-cost", "5"], "its cheapest, relu(x), costs 7.25 relu passes."),
        ("recorded", ["--pick", "1"], "study 'recorded' has the score alone"),
        ("pareto", ["--expression", "relu(x)", "--max-cost", "2"], "leave out --pick, --max-cost"),
    ],
)
def test_export_choices_that_cannot_be_are_clear_errors(storage, tmp_path, study, args, message):
    out = tmp_path / "act.py"
    result = CliRunner().invoke(
        app, ["export", "--storage", storage, "--study", study, "--out", str(out), *args]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_the_front_of_a_confirmed_study_is_that_of_the_means(tmp_path):
    """After a confirmation, best, status, export and the cost plot compute the front from each
    function's mean score, its repeats included, not from its best trial."""
    url = f"sqlite:///{tmp_path / 'confirmed.db'}"
    study = optuna.create_study(
        storage=url, study_name="confirmed", directions=["maximize", "minimize"]
    )
    for expression, (first, *_), cost in CONFIRMED:  # the search's trials, then the repeats
        study.add_trial(create_trial(values=[first, cost], user_attrs={"activation": expression}))
    for number, (expression, (_, *repeats), cost) in enumerate(CONFIRMED):
        attrs = {"activation": expression, "repeat_of": number}
        for score in repeats:
            study.add_trial(create_trial(values=[score, cost], user_attrs=attrs))
    means = {expression: np.mean(scores) for expression, scores, _ in CONFIRMED}

    front = as_json(url, "confirmed", "best")["front"]
    assert [row["expression"] for row in front] == MEAN_FRONT
    assert [row["mean"] for row in front] == pytest.approx([means[e] for e in MEAN_FRONT])
    assert [row["n"] for row in front] == [2, 2, 1]
    assert [(row["trial"], row["score"]) for row in front] == [(4, 0.82), (2, 0.86), (3, 0.95)]
    table = invoke(url, "confirmed", "best").stdout
    assert "mean (maximize)" in table and "0.85 " in table and "│ tanh(x) " not in table

    status = as_json(url, "confirmed", "status")
    assert status["front_size"] == len(MEAN_FRONT)
    assert status["best"]["expression"] == "mul(x,tanh(x))"
    out = tmp_path / "swish_act.py"
    printed = invoke(url, "confirmed", "export", "--out", str(out), "--max-cost", "1.5").stdout
    assert "relu(x), cost 1 relu passes" in printed  # not tanh(x), for its search score
    printed = invoke(url, "confirmed", "export", "--out", str(out), "--pick", "2").stdout
    assert "swish(x), cost 1.7 relu passes" in printed
    assert "mean 0.85 of 2 scores, best trial 2 (maximize), front member 2 of 3" in printed

    html = write_cost_plots(study, tmp_path)[1].read_text()
    assert "best trial 2: swish(x)" in html and "mean 0.8500 of 2 scores, cost 1.70x relu" in html
