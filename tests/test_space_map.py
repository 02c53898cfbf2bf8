"""SpaceMap: Fisher features on a budget and the layout of large spaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optuna_aquasurf import AquaSurfSampler, SearchSpace, _embedding
from optuna_aquasurf._fisher_budget import fill_from_neighbours, space_filling_subset
from optuna_aquasurf._map import SpaceMap
from optuna_aquasurf._store import MemoryStore
from optuna_aquasurf.features import FisherProbe

UNARY = ["zero", "one", "identity", "relu", "tanh", "sigmoid", "abs", "swish", "elu", "softsign"]


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)


class CountingProbe(FisherProbe):
    """A real probe that records the expressions it computes features of."""

    computed: list[str]

    def features(self, space, return_diverged=False):
        self.computed += [getattr(c, "expression", c) for c in space]
        return super().features(space, return_diverged)


def small_mlp(activation):
    return torch.nn.Sequential(torch.nn.Linear(4, 64), activation, torch.nn.Linear(64, 3))


@pytest.fixture
def probe():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 4, generator=generator)
    counting = CountingProbe(small_mlp, inputs, torch.arange(32) % 3, progress=False)
    counting.computed = []
    return counting


def test_space_filling_subset_covers_the_points():
    points = np.arange(101, dtype=np.float32)[:, None]
    assert space_filling_subset(points, 3).tolist() == [0, 50, 100]
    clusters = np.concatenate([np.zeros((50, 2)), np.full((5, 2), 10.0), np.full((50, 2), -10.0)])
    picked = space_filling_subset(clusters, 3)
    assert sorted(clusters[picked, 0].tolist()) == [-10.0, 0.0, 10.0]  # one of each cluster


def test_fill_from_neighbours_keeps_computed_rows_and_averages_the_nearest():
    points = np.array([[0.0], [1.0], [2.0], [10.0], [0.4], [9.0]], dtype=np.float32)
    subset = np.array([0, 1, 2, 3])
    features = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    filled = fill_from_neighbours(points, subset, features)
    np.testing.assert_array_equal(filled[subset], features)
    assert filled[4, 0] == pytest.approx(1.0)  # the mean of 0, 1 and 2
    assert filled[5, 0] == pytest.approx((10.0 + 2.0 + 1.0) / 3)


def test_a_budget_computes_fisher_features_of_a_space_filling_subset_only(space, probe):
    store = MemoryStore()
    budgeted = SpaceMap(space, probe, seed=0, fisher_budget=40)
    coords = budgeted.embedding(store)
    assert coords.shape == (len(space), 2) and np.isfinite(coords).all()
    assert len(probe.computed) == 40 == len(set(probe.computed))
    assert probe.computed == [space.expressions[i] for i in budgeted.fisher_subset]
    assert budgeted.fisher_features(store).shape == (40, probe.feature_length)
    # Spread over the space, not its first functions.
    assert budgeted.fisher_subset.max() > len(space) // 2

    full = SpaceMap(space, probe, seed=0)
    assert full.fisher_budget == len(space)
    assert full.key != budgeted.key
    # A budget that covers the space is no budget: same key, so the same stored map.
    assert SpaceMap(space, probe, seed=0, fisher_budget=10 * len(space)).key == full.key


def test_sampler_passes_its_budget(space, probe):
    sampler = AquaSurfSampler(space, probe, seed=0, fisher_budget=30)
    assert sampler.embedding().shape == (len(space), 2)
    assert sampler.fisher_features().shape == (30, probe.feature_length)
    with pytest.raises(ValueError, match="fisher_budget"):
        SpaceMap(space, probe, fisher_budget=0)
    with pytest.raises(ValueError, match="fisher_budget"):
        AquaSurfSampler(space, probe, fisher_budget=0)


def test_large_spaces_are_laid_out_from_principal_components(space, probe, monkeypatch):
    monkeypatch.setattr(_embedding, "LARGE_MAP", 100)
    reduced = []
    components = _embedding.principal_components
    monkeypatch.setattr(
        _embedding,
        "principal_components",
        lambda *args: reduced.append(components(*args).shape) or components(*args),
    )
    outputs = SpaceMap(space).output_features()[:120]
    fisher = probe.features(space.expressions[:120])
    coords = _embedding.embed(outputs, fisher, seed=0)
    assert coords.shape == (120, 2) and np.isfinite(coords).all()
    assert reduced == [(120, _embedding.LARGE_MAP_COMPONENTS), (120, probe.feature_length)]
