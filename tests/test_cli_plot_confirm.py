"""``aquasurf plot`` of a confirmed study: ``<study>_confirmed.png/.html``, each confirmed
function's mean and 95% interval beside the baseline's, written once a function has 2 scores.

The end-to-end test searches a space of 3 functions, whose map needs no UMAP.
"""

from __future__ import annotations

import json

import optuna
from optuna.trial import create_trial
from PIL import Image

from optuna_aquasurf.cli._plot import write_confirmed_plots
from optuna_aquasurf.cli._views import CONFIRM_ATTR
from tests.test_cli import TINY, aquasurf, invoke

#: The tiny model file of test_cli.py on 3 functions.
TINY_3 = TINY + '\nSPACE = ["relu(x)", "tanh(x)", "elu(x)"]\n'


def loss_study(scores: dict[str, list[float]]) -> optuna.Study:
    """An in-memory study minimizing a loss, with a completed trial per score of each function,
    confirmed against relu."""
    study = optuna.create_study(study_name="loss", direction="minimize")
    study.set_user_attr(CONFIRM_ATTR, {"baseline": "relu(x)"})
    for expression, values in scores.items():
        for value in values:
            study.add_trial(create_trial(value=value, user_attrs={"activation": expression}))
    return study


def test_confirmed_functions_are_drawn_best_mean_first_beside_the_baseline(tmp_path):
    scores = {"relu(x)": [0.30, 0.32], "tanh(x)": [0.20, 0.22, 0.21], "swish(x)": [0.10]}
    paths = write_confirmed_plots(loss_study(scores), tmp_path)
    assert [path.name for path in paths] == ["loss_confirmed.png", "loss_confirmed.html"]
    with Image.open(paths[0]) as image:
        image.verify()
    html = paths[1].read_text()
    assert '"categoryarray":["tanh(x)","relu(x)"]' in html  # the lower loss first
    assert '"name":"baseline"' in html and "mean 0.3100 of 2 scores" in html
    assert "swish(x)" not in html  # one score: not confirmed


def test_no_confirmed_plot_without_a_function_of_2_scores(tmp_path):
    study = loss_study({"relu(x)": [0.30], "tanh(x)": [0.20]})
    assert write_confirmed_plots(study, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_plot_draws_the_confirmed_functions_once_confirmed(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY_3)
    searched = aquasurf("optimize", "tiny.py", "--n-trials", "3", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr
    plot = ("plot", str(tmp_path / "tiny.py"), "--storage", f"sqlite:///{tmp_path / 'aquasurf.db'}")
    before = invoke(*plot, "--out", str(tmp_path / "before"))
    assert before.exit_code == 0, before.output
    assert not list((tmp_path / "before").glob("tiny_confirmed.*"))
    assert "tiny_confirmed" not in before.stdout

    confirmed = aquasurf(
        "confirm", "tiny.py", "--top", "2", "--repeats", "2", "--json", cwd=tmp_path
    )
    assert confirmed.returncode == 0, confirmed.stderr
    expressions = [f["activation"] for f in json.loads(confirmed.stdout)["functions"]]
    after = invoke(*plot, "--out", str(tmp_path / "after"))
    assert after.exit_code == 0, after.output
    assert "tiny_confirmed.png" in after.stdout and "tiny_confirmed.html" in after.stdout
    with Image.open(tmp_path / "after" / "tiny_confirmed.png") as image:
        image.verify()
    html = (tmp_path / "after" / "tiny_confirmed.html").read_text()
    assert all(expression in html for expression in expressions)
