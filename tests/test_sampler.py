import subprocess
import sys

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
import torch
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase
from sklearn.neighbors import KNeighborsRegressor

from optuna_aquasurf import (
    AquaSurfSampler,
    SearchSpace,
    SpaceExhaustedError,
    _rules,
    _surrogate,
    suggest_activation,
)
from optuna_aquasurf._rules import Pick
from optuna_aquasurf._surrogate import Surrogate

optuna.logging.set_verbosity(optuna.logging.WARNING)

UNARY = ["zero", "one", "identity", "relu", "tanh", "sigmoid", "abs", "swish", "elu", "softsign"]


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)


class TestBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self, space):
        return lambda: AquaSurfSampler(space)


class TestMultiObjective(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self, space):
        return lambda: AquaSurfSampler(space)


X = torch.linspace(-3, 3, 61)


def closeness_to_gelu(trial):
    """A cheap objective: how close the suggested function is to gelu, in [-inf, 0]."""
    act = suggest_activation(trial)
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    error = ((act(X) - torch.nn.functional.gelu(X)) ** 2).mean().item()
    return -min(error, 1e6)


def run_study(space, storage, n_trials, seed=0, **kwargs):
    sampler = AquaSurfSampler(space, seed=seed, **kwargs)
    study = optuna.create_study(
        direction="maximize", sampler=sampler, storage=storage, study_name="s", load_if_exists=True
    )
    study.optimize(closeness_to_gelu, n_trials=n_trials)
    return study


def activations(study):
    return [t.user_attrs["activation"] for t in study.trials]


def test_baselines_first_then_no_repeats_and_readable_params(space, tmp_path):
    study = run_study(space, f"sqlite:///{tmp_path}/s.db", n_trials=20)
    names = activations(study)
    assert names[:6] == ["elu(x)", "relu(x)", "sigmoid(x)", "softsign(x)", "swish(x)", "tanh(x)"]
    functions = [space.find_equivalent(n) for n in names]
    assert len(set(functions)) == 20
    assert all(space[f].finite for f in functions)
    frame = study.trials_dataframe()
    assert frame["user_attrs_activation"].tolist() == names
    assert "lr" in study.best_params


def test_same_seed_same_suggestions_in_another_process(space, tmp_path):
    code = f"""
import optuna, sys
sys.path.insert(0, {str(tmp_path)!r})
optuna.logging.set_verbosity(optuna.logging.WARNING)
from tests.test_sampler import run_study, UNARY, activations
from optuna_aquasurf import SearchSpace
space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)
print("|".join(activations(run_study(space, None, n_trials=16))))
"""
    here = run_study(space, None, n_trials=16)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().split("|") == activations(here)


def test_resume_from_sqlite_in_another_process_continues_without_a_map(space, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    first = activations(run_study(space, url, n_trials=12))
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("select count(*) from aquasurf_embeddings")).scalar()
    assert stored == 0  # the surrogate reads the features: the 2-D map is for plots only
    code = f"""
import numpy as np
import optuna
from tests.test_sampler import run_study, UNARY, activations
from optuna_aquasurf import SearchSpace
import optuna_aquasurf._embedding as e
def fail(*a, **k):
    raise AssertionError("2-D map computed")
e.embed = fail
space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)
print("|".join(activations(run_study(space, {url!r}, n_trials=6))))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    both = result.stdout.strip().split("|")
    assert both[:12] == first and len(both) == 18
    assert both == activations(run_study(space, None, n_trials=18))  # as if never interrupted
    loaded = optuna.load_study(study_name="s", storage=url)
    assert len(loaded.trials) == 18


def test_map_surrogate_stores_its_embedding_once(space, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    run_study(space, url, n_trials=12, surrogate="map")
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("select count(*) from aquasurf_embeddings")).scalar()
    assert stored == 1


def test_parameter_storage_is_small(space, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    run_study(space, url, n_trials=10)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        params = connection.execute(
            sa.text("select sum(length(distribution_json)) from trial_params")
        ).scalar()
        attrs = connection.execute(
            sa.text("select sum(length(value_json)) from trial_user_attributes")
        ).scalar()
    assert (params + attrs) / 10 < 2000


def test_enqueued_and_outside_expressions(space):
    sampler = AquaSurfSampler(space, seed=0, baselines=["relu(x)"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"activation": "gelu(x)"})
    study.enqueue_trial({"activation": "max( x, zero(x) )"})
    study.optimize(closeness_to_gelu, n_trials=5)
    names = activations(study)
    assert names[:2] == ["gelu(x)", "max(x,zero(x))"]
    assert "relu(x)" not in names  # the enqueued max(x,zero(x)) is relu: not tried twice
    function, exact = sampler.locate("gelu(x)")
    assert not exact and 0 <= function < len(space)
    assert study.best_trial.user_attrs["activation"] == "gelu(x)"


def test_user_space_as_a_plain_list():
    sampler = AquaSurfSampler(["relu(x)", "tanh(x)", "abs(x)", "swish(x)", "max(x,zero(x))"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(closeness_to_gelu, n_trials=4)
    assert len(sampler.space) == 4
    with pytest.warns(UserWarning, match="all 4 functions of the search space have been tried"):
        study.optimize(closeness_to_gelu, n_trials=1, catch=())
    assert study.trials[-1].user_attrs["repeat_of"] < 4


def test_failed_trials_count_as_the_worst_score(space):
    sampler = AquaSurfSampler(space, seed=0, baselines=["relu(x)", "tanh(x)", "exp(x)"])

    def objective(trial):
        act = suggest_activation(trial)
        value = act(X).abs().max().item()
        if value > 10:
            raise ValueError("diverged")
        return -value

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"activation": "div(one(x),abs(x))"})  # infinite at 0: fails
    study.optimize(objective, n_trials=12, catch=(ValueError,))
    search = sampler.search(study)
    functions, scores = search.observations(search.trials())
    failed = {
        sampler.locate(t.user_attrs["activation"])[0]
        for t in study.trials
        if t.state == optuna.trial.TrialState.FAIL
    }
    assert failed
    worst = min(t.value for t in study.trials if t.value is not None)
    for function, score in zip(functions, scores):
        if function in failed:
            assert score == worst


def test_pruned_trials_use_their_last_value(space):
    sampler = AquaSurfSampler(space, seed=0)

    def objective(trial):
        suggest_activation(trial)
        trial.report(-float(trial.number), step=0)
        if trial.number % 2:
            raise optuna.TrialPruned()
        return 1.0

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=6)
    search = sampler.search(study)
    functions, scores = search.observations(search.trials())
    assert sorted(scores.tolist()) == [-5.0, -3.0, -1.0, 1.0, 1.0, 1.0]


def test_minimize_direction_prefers_low_values(space):
    sampler = AquaSurfSampler(space, seed=0, acquisition="greedy")

    def objective(trial):
        return -closeness_to_gelu(trial)

    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=25)
    maximize = run_study(space, None, n_trials=25, acquisition="greedy")
    assert activations(study) == activations(maximize)


def test_threads_never_train_the_same_function(space):
    sampler = AquaSurfSampler(space, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(closeness_to_gelu, n_trials=24, n_jobs=4)
    functions = [space.find_equivalent(n) for n in activations(study)]
    assert len(set(functions)) == 24


def test_other_sampler_is_a_clear_error():
    study = optuna.create_study()
    with pytest.raises(TypeError, match="sampler=AquaSurfSampler"):
        study.optimize(lambda t: suggest_activation(t) and 0.0, n_trials=1, catch=())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(acquisition="thompson"), "acquisition must be one of"),
        (dict(surrogate="umap"), "surrogate must be one of"),
        (dict(n_design=-1), "n_design"),
        (dict(exploration=-0.5), "exploration"),
        (dict(baselines=["relu("]), "position"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AquaSurfSampler(["relu(x)", "tanh(x)"], **kwargs)


def test_deleting_a_study_leaves_nothing_that_breaks_a_new_one(space, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    first = activations(run_study(space, url, n_trials=10))
    optuna.delete_study(study_name="s", storage=url)
    again = activations(run_study(space, url, n_trials=10))
    assert again == first


def test_two_processes_on_one_sqlite_study_never_share_a_function(space, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    run_study(space, url, n_trials=1)  # create the study and its embedding once
    code = f"""
import numpy as np
import optuna
from tests.test_sampler import run_study, UNARY
from optuna_aquasurf import SearchSpace
space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)
run_study(space, {url!r} + "?timeout=30", n_trials=15, seed=None)
"""
    workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    study = optuna.load_study(study_name="s", storage=url)
    functions = [space.find_equivalent(n) for n in activations(study)]
    assert len(functions) == 31
    assert len(set(functions)) == 31


def small_mlp(activation):
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16),
        activation,
        torch.nn.Linear(16, 16),
        activation,
        torch.nn.Linear(16, 3),
    )


def test_fisher_features_join_the_map_and_are_stored_in_chunks(space, tmp_path):
    from optuna_aquasurf.features import FisherProbe

    generator = torch.Generator().manual_seed(0)
    probe = FisherProbe(
        small_mlp, torch.randn(32, 4, generator=generator), torch.arange(32) % 3, progress=False
    )
    url = f"sqlite:///{tmp_path}/s.db"
    sampler = AquaSurfSampler(space, probe, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=url)
    study.optimize(closeness_to_gelu, n_trials=10)
    with_fisher = sampler.embedding(study)
    outputs_only = AquaSurfSampler(space, seed=0).embedding()
    assert with_fisher.shape == outputs_only.shape == (len(space), 2)
    assert not np.allclose(with_fisher, outputs_only)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        chunks = connection.execute(sa.text("select count(*) from aquasurf_fisher_chunks")).scalar()
    assert chunks == -(-len(space) // 64)
    fisher_only = AquaSurfSampler(space, probe, seed=0, use_outputs=False)
    assert fisher_only.embedding().shape == (len(space), 2)


def brute_force_ranking(coords, tried, observed, score_of, candidates, acquisition, k=3):
    """The ranking as plain numpy computes it: every distance, full stable sorts."""
    points = coords.astype(np.float64)

    def distances(sites):
        return np.sqrt(((points[:, None, :] - points[None, sites, :]) ** 2).sum(axis=-1))

    def unit(values):
        span = values.max() - values.min()
        return (values - values.min()) / span if span > 0 else np.zeros_like(values)

    neighbours = np.argsort(distances(observed), axis=1, kind="stable")[:, :k]
    predicted = score_of[observed[neighbours]].mean(axis=1)
    nearest_tried = distances(tried).min(axis=1)
    value = predicted[candidates]
    if acquisition == "explore":
        value = unit(value) + 0.5 * unit(nearest_tried[candidates])
    farthest = candidates[np.argsort(-nearest_tried[candidates], kind="stable")]
    return candidates[np.argsort(-value, kind="stable")], farthest, predicted


def test_incremental_neighbours_rank_exactly_as_brute_force():
    rng = np.random.default_rng(0)
    n = 2000
    coords = rng.normal(size=(n, 2)).astype(np.float32)
    score_of = rng.random(n)
    order = rng.permutation(n)
    surrogate = Surrogate([coords], KNeighborsRegressor(n_neighbors=3))
    weighted = Surrogate([coords], _surrogate.default_regressor())
    # Sites added one at a time, then more than a kd-tree's worth at once, then some removed.
    for tried in [
        order[:1],
        order[:2],
        order[:7],
        order[:8],
        order[:150],
        order[:151],
        order[9:151],
    ]:
        tried = np.sort(tried)
        observed = tried[::2]
        candidates = np.setdiff1d(np.arange(n), tried)
        pick = Pick(surrogate, observed, score_of[observed], tried, candidates, rng, 64)
        fast, _ = surrogate.predict(observed, score_of[observed])
        k = min(3, len(observed))
        expected_order, expected_farthest, expected_predicted = brute_force_ranking(
            coords, tried, observed, score_of, candidates, "explore", k
        )
        assert np.array_equal(fast, expected_predicted)
        assert np.array_equal(
            fast, _surrogate.predict(surrogate.regressor, coords, observed, score_of[observed])
        )
        assert np.array_equal(_rules.DistanceBonus(0.5).rank(pick), expected_order[:64])
        assert np.array_equal(_rules.SpaceFilling().rank(pick), expected_farthest[:64])
        greedy, _, _ = brute_force_ranking(
            coords, tried, observed, score_of, candidates, "greedy", k
        )
        assert np.array_equal(_rules.Greedy().rank(pick), greedy[:64])
        assert np.allclose(
            weighted.predict(observed, score_of[observed])[0],
            _surrogate.predict(weighted.regressor, coords, observed, score_of[observed]),
            rtol=1e-6,
            atol=0,
        )


@pytest.mark.parametrize("n", [1, 5, 40, 200])
def test_best_candidates_are_the_head_of_a_stable_sort(n):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 10, size=100).astype(np.float64)  # many ties
    values[rng.choice(100, size=30, replace=False)] = np.nan
    candidates = np.arange(100) * 3
    expected = candidates[np.argsort(-values, kind="stable")][:n]
    assert np.array_equal(_rules.best(values, candidates, n), expected)


def test_uncertainty_is_the_neighbours_spread_growing_with_distance():
    table = _surrogate.Neighbours()
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.1, 0.0], [1.0, 10.0]])
    observed = np.array([0, 1, 2])
    same = _surrogate.predict_with_uncertainty(
        _surrogate.Neighbours(), coords, observed, np.array([0.5, 0.5, 0.5]), 3, 1.0
    )[1]
    assert np.allclose(same, 0.0)  # neighbours agree and the spread of all scores is zero
    scores = np.array([0.0, 1.0, 2.0])
    predicted, sigma = _surrogate.predict_with_uncertainty(
        _surrogate.Neighbours(), coords, observed, scores, 3, 1.0
    )
    knn = _surrogate.default_regressor()
    assert np.array_equal(predicted, _surrogate.predict(knn, coords, observed, scores, table))
    assert sigma[0] == pytest.approx(0.5)  # on the two points at 0: their scores' spread
    assert sigma[3] > sigma[0]  # a little farther away: a little less sure
    # Far away, the spread of all scores adds to that of the (distant) neighbours.
    assert sigma[4] > np.std(scores) and sigma[4] == pytest.approx(
        np.sqrt(2) * np.std(scores), 0.01
    )


def test_ucb_without_exploration_is_greedy_in_the_feature_space(space):
    greedy = activations(run_study(space, None, n_trials=20, acquisition="greedy"))
    ucb = activations(run_study(space, None, n_trials=20, exploration=0.0))
    assert ucb == greedy
    explored = activations(run_study(space, None, n_trials=20))
    assert explored[:6] == greedy[:6] and explored != greedy  # the baselines, then other picks


def test_surrogate_points_are_the_reduced_features(space):
    sampler = AquaSurfSampler(space, seed=0)
    points = sampler.surrogate_points()
    assert points.shape == (len(space), 16)  # outputs only: 16 principal components
    assert points.dtype == np.float32
    assert np.mean(np.sum(points.astype(np.float64) ** 2, axis=1)) == pytest.approx(1.0)
    map_sampler = AquaSurfSampler(space, seed=0, surrogate="map")
    assert map_sampler.surrogate_points().shape == (len(space), 2)


def test_any_scikit_learn_regressor_plugs_in(space):
    from sklearn.ensemble import RandomForestRegressor

    regressor = RandomForestRegressor(n_estimators=5, random_state=0)
    study = run_study(space, None, n_trials=15, regressor=regressor)
    functions = {space.find_equivalent(n) for n in activations(study)}
    assert len(functions) == 15
    predicted = study.sampler.predict(study)
    assert predicted.shape == (len(space),) and np.isfinite(predicted).all()


def test_an_exhausted_space_warns_once_repeats_the_best_and_stops_the_study():
    space = SearchSpace.from_expressions(["relu(x)", "tanh(x)", "abs(x)", "sigmoid(x)", "erf(x)"])
    sampler = AquaSurfSampler(space, seed=0, baselines=["relu(x)"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with pytest.warns(UserWarning, match="all 5 functions of the search space have been tried"):
        study.optimize(closeness_to_gelu, n_trials=20)
    assert len(study.trials) == 6  # five functions, then the best again, and the study stops
    repeat = study.trials[-1]
    best = max(study.trials[:5], key=lambda t: t.value)
    assert repeat.user_attrs["activation"] == best.user_attrs["activation"]
    assert repeat.user_attrs["repeat_of"] == best.number
    assert sampler.search(study).exhausted is not None


def test_exhausted_under_max_cost_counts_the_affordable_functions():
    space = SearchSpace.from_schemas(["unary(x)"], unary=["relu", "tanh", "sinh", "cosh", "abs"])
    sampler = AquaSurfSampler(space, seed=0, max_cost=1e9, baselines=[])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    affordable = int((sampler.costs(study) <= 1e9).sum())
    match = f"all {affordable} functions under max_cost=1000000000.0 have been tried"
    with pytest.warns(UserWarning, match=match):
        study.optimize(closeness_to_gelu, n_trials=20)
    assert len(study.trials) == affordable + 1


def test_a_space_with_nothing_affordable_is_a_clear_error():
    space = SearchSpace.from_expressions(["sinh(x)", "cosh(x)"])
    sampler = AquaSurfSampler(space, seed=0, max_cost=1e-9, baselines=[])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with pytest.raises(SpaceExhaustedError, match="no function to try: all 0 functions under"):
        study.optimize(closeness_to_gelu, n_trials=1)


def test_near_twins_are_trained_once_and_seen_as_one_function():
    """swish(x), a baseline, and mul(sigmoid(x),identity(x)) compute the same function up to
    float rounding: once one is tried the other is never suggested, and the surrogate has one
    observation of both."""
    twin = "mul(sigmoid(x),identity(x))"
    space = SearchSpace.from_expressions(["swish(x)", twin, "relu(x)", "tanh(x)", "abs(x)"])
    assert space.near_twins() == [[0, 1]]
    sampler = AquaSurfSampler(space, seed=0, baselines=["swish(x)", "relu(x)"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"activation": twin})
    study.optimize(closeness_to_gelu, n_trials=4)
    suggested = [t.user_attrs["activation"] for t in study.trials]
    assert suggested[0] == twin and "swish(x)" not in suggested
    assert sorted(suggested) == sorted([twin, "relu(x)", "tanh(x)", "abs(x)"])
    search = sampler.search(study)
    functions, _ = search.observations(search.trials())
    assert len(functions) == 4 and search.locate("swish(x)") == search.locate(twin)


def test_a_baseline_outside_the_space_finds_its_near_twin():
    space = SearchSpace.from_expressions(["mul(sigmoid(x),identity(x))", "relu(x)", "tanh(x)"])
    sampler = AquaSurfSampler(space, seed=0, baselines=["swish(x)"])
    assert sampler.locate("swish(x)") == (0, True)
    assert sampler.locate("gelu(x)")[1] is False
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(closeness_to_gelu, n_trials=1)
    assert study.trials[0].user_attrs["activation"] == "swish(x)"
