"""The surrogate's views: the outputs alone and beside the Fisher features, mixed by how well
each predicts the study's own scores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from optuna_aquasurf import SearchSpace
from optuna_aquasurf._map import SpaceMap
from optuna_aquasurf._store import MemoryStore
from optuna_aquasurf._surrogate import Surrogate, default_regressor, view_shares
from optuna_aquasurf.features import FisherProbe

UNARY = ["zero", "one", "identity", "relu", "tanh", "sigmoid", "abs", "swish", "elu", "softsign"]


def small_mlp(activation):
    return torch.nn.Sequential(torch.nn.Linear(4, 64), activation, torch.nn.Linear(64, 3))


@pytest.fixture(scope="module")
def space_map():
    space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 4, generator=generator)
    probe = FisherProbe(small_mlp, inputs, torch.arange(32) % 3, progress=False)
    return SpaceMap(space, probe, seed=0)


def line_and_noise(n=60, seed=0):
    """Two views of ``n`` functions: one where the scores grow along a line, one of noise."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    along = np.column_stack([scores, np.zeros(n)]).astype(np.float32)
    noise = rng.normal(size=(n, 2)).astype(np.float32)
    return along, noise, scores


def test_the_view_whose_neighbours_tell_the_scores_gets_the_larger_share():
    along, noise, scores = line_and_noise()
    functions = np.arange(0, 60, 2)
    shares = view_shares([noise, along], functions, scores[functions], default_regressor())
    assert shares.sum() == pytest.approx(1.0)
    assert shares[1] > 0.7 > shares[0]
    swapped = view_shares([along, noise], functions, scores[functions], default_regressor())
    assert swapped[0] == pytest.approx(shares[1])


def test_shares_are_equal_until_the_scores_can_rate_the_views():
    along, noise, scores = line_and_noise()
    regressor = default_regressor()
    for functions in (np.array([0, 1]), np.array([0, 1, 2, 3])):
        flat = np.full(len(functions), 0.5)
        assert np.allclose(view_shares([noise, along], functions, flat, regressor), 0.5)
    assert np.allclose(
        view_shares([noise, along], np.array([4, 7]), scores[[4, 7]], regressor), 0.5
    )
    assert view_shares([along], np.array([0, 1, 2]), scores[:3], regressor).tolist() == [1.0]


def test_one_view_twice_predicts_as_the_view_alone():
    along, noise, scores = line_and_noise()
    views = np.hstack([along, noise])
    functions = np.arange(0, 60, 3)
    alone = Surrogate([views], default_regressor()).predict(
        functions, scores[functions], uncertainty=True
    )
    twice = Surrogate([views, views], default_regressor()).predict(
        functions, scores[functions], uncertainty=True
    )
    np.testing.assert_allclose(twice[0], alone[0], rtol=1e-12)
    np.testing.assert_allclose(twice[1], alone[1], rtol=1e-12)


def test_views_that_disagree_make_the_prediction_less_sure():
    along, noise, scores = line_and_noise()
    functions = np.arange(0, 60, 3)
    mixed = Surrogate([noise, along], default_regressor())
    mean, spread = mixed.predict(functions, scores[functions], uncertainty=True)
    views = [
        Surrogate([v], default_regressor()).predict(functions, scores[functions], True)
        for v in (noise, along)
    ]
    shares = view_shares([noise, along], functions, scores[functions], default_regressor())
    np.testing.assert_allclose(mean, shares[0] * views[0][0] + shares[1] * views[1][0])
    within = np.sqrt(shares[0] * views[0][1] ** 2 + shares[1] * views[1][1] ** 2)
    disagree = np.abs(views[0][0] - views[1][0]) > 0.1
    assert disagree.any() and (spread[disagree] > within[disagree]).all()


def test_the_views_of_a_map_with_a_probe_are_the_outputs_then_both(space_map):
    store = MemoryStore()
    features = space_map.features(store)
    outputs, both = space_map.feature_views(store)
    assert outputs.shape == (len(space_map.space), 16) and both is features
    np.testing.assert_array_equal(outputs, features[:, :16])
    assert features.shape[1] > 16
    for block in (features[:, :16], features[:, 16:]):  # each block of mean squared norm one
        assert np.mean(np.sum(block.astype(np.float64) ** 2, axis=1)) == pytest.approx(1.0, 1e-4)
    without_probe = SpaceMap(space_map.space, None, seed=0)
    assert len(without_probe.feature_views(store)) == 1


SEEDED_PICKS = """
import numpy as np, optuna, torch
from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
from optuna_aquasurf.features import FisherProbe
from tests.test_surrogate_views import UNARY, small_mlp
optuna.logging.set_verbosity(optuna.logging.WARNING)
space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)
inputs = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
probe = FisherProbe(small_mlp, inputs, torch.arange(32) % 3, progress=False)
study = optuna.create_study(direction="maximize", sampler=AquaSurfSampler(space, probe, seed=3))
x = torch.linspace(-2, 2, 41)
study.optimize(lambda t: -float((suggest_activation(t)(x) - x.abs()).square().mean()), 16)
print("|".join(t.user_attrs["activation"] for t in study.trials))
"""


def test_seeded_picks_of_both_views_are_the_same_in_another_process():
    def picks():
        command = [sys.executable, "-c", SEEDED_PICKS]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
        return run.stdout.strip().split("|")

    first, second = picks(), picks()
    assert len(first) == 16 and len(set(first)) == 16
    assert first == second
