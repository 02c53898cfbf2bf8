"""Studies of score and cost: the front, its hypervolume, and a sampler that spreads its picks
along the front it predicts."""

import numpy as np
import optuna
import pytest
import torch

from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
from optuna_aquasurf._front import front_gain, hypervolume, on_front
from tests.test_sampler import UNARY, X, activations

optuna.logging.set_verbosity(optuna.logging.WARNING)


def dominated_by_another(scores, costs, i):
    return any(
        scores[j] >= scores[i]
        and costs[j] <= costs[i]
        and (scores[j], costs[j]) != (scores[i], costs[i])
        for j in range(len(scores))
    )


def test_the_front_is_what_no_other_point_beats():
    rng = np.random.default_rng(0)
    scores, costs = rng.integers(0, 6, 40).astype(float), rng.integers(1, 6, 40).astype(float)
    front = on_front(scores, costs)
    for i in range(len(scores)):
        if dominated_by_another(scores, costs, i):
            assert not front[i]
    kept = {(scores[i], costs[i]) for i in np.flatnonzero(front)}
    assert kept == {
        (scores[i], costs[i]) for i in range(40) if not dominated_by_another(scores, costs, i)
    }
    assert front.sum() == len(kept)  # of equal points, one


def test_hypervolume_of_rectangles_on_a_log_cost_scale():
    reference = (0.0, np.e**3)
    assert hypervolume([2.0], [np.e], reference) == pytest.approx(2.0 * 2)
    # Two steps: (score 1 from log cost 0) and (score 3 from log cost 2), up to log cost 3.
    assert hypervolume([1.0, 3.0, 0.5], [1.0, np.e**2, np.e**2.5], reference) == pytest.approx(
        1 * 2 + 3 * 1
    )
    assert hypervolume([-1.0, 5.0], [1.0, np.e**4], reference) == 0.0  # beyond the reference


def test_a_new_point_gains_the_hypervolume_it_adds_or_its_shortfall():
    rng = np.random.default_rng(1)
    front_scores, front_costs = rng.random(6), np.exp(rng.random(6) * 3)
    scores, costs = rng.random(200) * 1.2, np.exp(rng.random(200) * 3.5)
    reference = (0.2, np.exp(3.6))
    gain = front_gain(scores, costs, front_scores, front_costs, reference)
    before = hypervolume(front_scores, front_costs, reference)
    for s, c, g in zip(scores, costs, gain):
        added = hypervolume(np.append(front_scores, s), np.append(front_costs, c), reference)
        if g > 0:
            assert g == pytest.approx(added - before)
        else:
            assert added == pytest.approx(before)
            beaten = [fs for fs, fc in zip(front_scores, front_costs) if fc <= c]
            level = max([reference[0], *beaten])
            assert g == pytest.approx(min(s - level, 0.0))


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)


def closeness_and_cost(trial):
    act = suggest_activation(trial)
    error = ((act(X) - torch.nn.functional.gelu(X)) ** 2).mean().item()
    return -min(error, 1e6), act.cost


def test_a_study_of_score_and_cost_knows_every_cost_and_spreads_along_the_front(space, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    sampler = AquaSurfSampler(space, seed=0)
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=sampler, storage=storage
    )
    study.optimize(closeness_and_cost, n_trials=24)
    costs = sampler.costs(study)
    names = activations(study)
    assert names[:3] == ["elu(x)", "relu(x)", "sigmoid(x)"]
    for trial, name in zip(study.trials, names):  # the cost returned is the one the sampler knows
        function = space.find_equivalent(name)
        if name in space.expressions:
            assert trial.values[1] == costs[function]
    assert len({space.find_equivalent(n) for n in names}) == 24
    # Every function's true score and cost: the sampler's front beats a random search's.
    scores = np.array([closeness_and_cost_of(e) for e in space.expressions])
    scores[np.isnan(scores)] = -1e6
    reference = (float(np.median(scores)), 2 * float(costs.max()))
    found = np.array([t.values for t in study.best_trials])
    mine = hypervolume(found[:, 0], found[:, 1], reference)
    random = []
    for seed in range(5):
        picks = np.random.default_rng(seed).choice(len(space), 24, replace=False)
        random.append(hypervolume(scores[picks], costs[picks], reference))
    assert mine > max(random)
    assert len(study.best_trials) >= 2


def closeness_and_cost_of(expression):
    from optuna_aquasurf import ActivationFunction

    act = ActivationFunction(expression)
    with torch.no_grad():
        error = ((act(X) - torch.nn.functional.gelu(X)) ** 2).mean().item()
    return -min(error, 1e6)  # min(nan, 1e6) is nan: as closeness_and_cost, a failed trial


@pytest.mark.parametrize(
    "directions", [["maximize", "maximize"], ["maximize", "minimize", "minimize"]]
)
def test_other_multi_objective_studies_are_a_clear_error(space, directions):
    study = optuna.create_study(directions=directions, sampler=AquaSurfSampler(space))
    with pytest.raises(ValueError, match="the score and the activation's cost"):
        study.optimize(
            lambda t: (suggest_activation(t) and 0.0,) * len(directions), n_trials=1, catch=()
        )


def test_explore_is_for_one_objective(space):
    sampler = AquaSurfSampler(space, acquisition="explore")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    with pytest.raises(ValueError, match='acquisition="explore" is for studies of one objective'):
        study.optimize(closeness_and_cost, n_trials=1, catch=())


def test_a_study_of_score_and_cost_is_a_prior(space):
    source = optuna.create_study(
        directions=["minimize", "minimize"], sampler=AquaSurfSampler(space, seed=0)
    )
    source.optimize(lambda t: (-closeness_and_cost(t)[0], suggest_activation(t).cost), n_trials=10)
    sampler = AquaSurfSampler(space, prior=[source], seed=0)
    target = optuna.create_study(direction="maximize", sampler=sampler)
    [(functions, quantiles)] = sampler.prior_observations(target)
    assert len(functions) == 10
    best = source.trials[int(np.argmin([t.values[0] for t in source.trials]))]
    assert functions[np.argmax(quantiles)] == space.find_equivalent(best.user_attrs["activation"])
