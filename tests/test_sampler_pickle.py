"""The sampler pickles and deep-copies at any time, as Ray Tune, Dask and optunahub need, and a
copy continues a study with the picks the original would have made."""

import copy
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
from optuna_aquasurf.features import FisherProbe

REPO = Path(__file__).resolve().parent.parent
UNARY = ["identity", "relu", "tanh", "sigmoid", "abs", "square", "erf", "swish", "softplus", "elu"]
X = torch.linspace(-3, 3, 101)


def small_space() -> SearchSpace:
    return SearchSpace.from_schemas(["unary(x)", "binary(unary(x),unary(x))"], unary=UNARY)


def objective(trial: optuna.Trial) -> float:
    """Closeness to GELU on [-3, 3], scaled by a parameter of the independent sampler."""
    act = suggest_activation(trial)
    weight = trial.suggest_float("weight", 0.5, 1.0)
    return -weight * float((act(X) - torch.nn.functional.gelu(X)).abs().mean())


def build_mlp(activation: torch.nn.Module) -> torch.nn.Module:
    """A module-level builder: a probe holding it pickles."""
    return torch.nn.Sequential(torch.nn.Linear(4, 8), activation, torch.nn.Linear(8, 3))


def picks(study: optuna.Study) -> list:
    return [(t.user_attrs["activation"], t.params["weight"]) for t in study.trials]


def test_a_new_sampler_pickles_and_deep_copies():
    sampler = AquaSurfSampler(seed=0)
    for copied in (pickle.loads(pickle.dumps(sampler)), copy.deepcopy(sampler)):
        assert repr(copied.options) == repr(sampler.options)
        assert copied.map_key == sampler.map_key


def test_a_sampler_pickles_after_picks_and_with_a_probe():
    probe = FisherProbe(build_mlp, torch.randn(16, 4), torch.randint(0, 3, (16,)), progress=False)
    sampler = AquaSurfSampler(small_space(), probe, seed=0, baselines=["relu(x)", "tanh(x)"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=4)
    for copied in (pickle.loads(pickle.dumps(sampler)), copy.deepcopy(sampler)):
        assert copied.map_key == sampler.map_key
        assert copied.baselines_left(study) == sampler.baselines_left(study) == []
        study.sampler = copied
        study.optimize(objective, n_trials=1)
    assert len({t.user_attrs["activation"] for t in study.trials}) == 6


def test_a_pickled_sampler_continues_in_another_process_with_the_same_picks(tmp_path):
    sampler = AquaSurfSampler(small_space(), seed=3, baselines=["relu(x)", "tanh(x)"])
    first = tmp_path / "first.db"
    study = optuna.create_study(
        storage=f"sqlite:///{first}", study_name="s", direction="maximize", sampler=sampler
    )
    study.optimize(objective, n_trials=6)
    (tmp_path / "sampler.pkl").write_bytes(pickle.dumps(sampler))
    shutil.copy(first, tmp_path / "second.db")

    study.optimize(objective, n_trials=6)  # the original goes on
    code = (
        "import json, pickle, sys, optuna\n"
        "from tests.test_sampler_pickle import objective, picks\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "sampler = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "study = optuna.load_study(study_name='s', storage=sys.argv[2], sampler=sampler)\n"
        "study.optimize(objective, n_trials=6)\n"
        "print(json.dumps(picks(study)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, tmp_path / "sampler.pkl", f"sqlite:///{tmp_path}/second.db"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    elsewhere = [tuple(p) for p in json.loads(result.stdout.splitlines()[-1])]
    assert elsewhere == picks(study)
    assert len(set(elsewhere)) == 12


@pytest.mark.parametrize("acquisition", ["greedy", "explore"])
def test_pickled_options_keep_the_rule(acquisition):
    sampler = AquaSurfSampler(small_space(), acquisition=acquisition, n_design=2)
    copied = pickle.loads(pickle.dumps(sampler))
    assert type(copied._rule) is type(sampler._rule)
    assert copied.options.n_design == 2
