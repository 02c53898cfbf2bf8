"""Transfer: a study starts from earlier studies' scores or a bundled Act-Bench-Digits table."""

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial
from scipy.stats import spearmanr

from optuna_aquasurf import (
    PAPER_UNARY,
    ActivationFunction,
    AquaSurfSampler,
    SearchSpace,
    _surrogate,
    _transfer,
)
from optuna_aquasurf._prior import read_source
from optuna_aquasurf._scores import function_scores, quantiles
from tests.test_sampler import UNARY, X, activations, closeness_to_gelu, run_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: The default baselines that the space of these tests holds, in the order they are tried.
BASELINES = ["elu(x)", "relu(x)", "sigmoid(x)", "softsign(x)", "swish(x)", "tanh(x)"]


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=UNARY)


def prior_study(results, direction="maximize", storage=None, name="old"):
    """A study holding ``(expression, value)`` results; a value of None is a failed trial."""
    study = optuna.create_study(direction=direction, storage=storage, study_name=name)
    study.add_trials(
        create_trial(
            state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
            value=value,
            user_attrs={"activation": expression},
        )
        for expression, value in results
    )
    return study


def test_quantiles_put_any_direction_on_one_scale():
    assert quantiles(np.array([3.0, 1.0, 2.0]), maximize=True).tolist() == pytest.approx(
        [5 / 6, 1 / 6, 3 / 6]
    )
    assert quantiles(np.array([3.0, 1.0, 2.0]), maximize=False).tolist() == pytest.approx(
        [1 / 6, 5 / 6, 3 / 6]
    )
    functions, scores = function_scores([(4, 1.0, False), (2, None, True), (4, 3.0, False)], True)
    assert functions.tolist() == [2, 4] and scores.tolist() == [1.0, 2.0]  # failed: the worst


def test_a_prior_study_is_located_by_equivalence_with_failures_worst(space):
    study = prior_study(
        [("max(x,zero(x))", 0.9), ("tanh(x)", 0.5), ("abs(x)", None), ("sinh(x)", 0.99)],
        direction="maximize",
    )
    sampler = AquaSurfSampler(space)
    functions, q = read_source(study, sampler.space_map.find)
    relu, tanh, abs_ = (space.find_equivalent(e) for e in ("relu(x)", "tanh(x)", "abs(x)"))
    assert dict(zip(functions.tolist(), q.tolist())) == pytest.approx(
        {relu: 5 / 6, tanh: 3 / 6, abs_: 1 / 6}  # sinh is not in the space: left out
    )
    lower_is_better = prior_study([("relu(x)", 0.1), ("tanh(x)", 0.3)], direction="minimize")
    functions, q = read_source(lower_is_better, sampler.space_map.find)
    assert dict(zip(functions.tolist(), q.tolist())) == {relu: 0.75, tanh: 0.25}


def test_bundled_tables_cover_the_paper_space_with_divergences_last():
    sampler = AquaSurfSampler(SearchSpace.from_schemas(["binary(unary(x),unary(x))"], PAPER_UNARY))
    functions, q = read_source("act-bench-digits:cnn", sampler.space_map.find)
    assert functions.tolist() == list(range(2918))
    best = sampler.space_map.find("max(relu(x),selu(x))")
    diverged = sampler.space_map.find("exp(exp(x))") or sampler.space_map.find("pow(exp(x),exp(x))")
    assert q[diverged] < 0.2 < 0.5 < q[best]


def test_without_baselines_the_first_pick_is_the_priors_best(space):
    study = prior_study([("tanh(x)", 0.2), ("swish(x)", 0.9), ("relu(x)", 0.5)])
    found = run_study(space, None, n_trials=3, prior=[study], baselines=())
    # Swish, or a function that computes the same: mul(identity(x),sigmoid(x)) is another
    # function of the space, its features 1e-8 from swish's, and may tie with it in other versions.
    first = ActivationFunction(activations(found)[0])
    torch.testing.assert_close(first(X), torch.nn.functional.silu(X))


def gelu_results(space, sign=1.0):
    """Every function of ``space`` scored by closeness to gelu (times ``sign``); None (a failed
    trial) where that is not finite."""
    results = []
    for expression in space.expressions:
        error = float(
            ((ActivationFunction(expression)(X) - torch.nn.functional.gelu(X)) ** 2).mean()
        )
        results.append((expression, sign * -min(error, 1e6) if np.isfinite(error) else None))
    return results


def test_a_true_prior_predicts_better_and_a_reversed_one_costs_nothing(space):
    # When a search finds the best function is its own luck: without a prior, some versions find
    # it at the first pick after the baselines. So the comparison is one that holds in any
    # version: the baselines come first, with a prior or without, so after them two studies have
    # the same observations; from these, a prior that knows every score predicts the functions
    # not tried yet in an order closer to the true one than the study's own surrogate.
    results = gelu_results(space)
    own = run_study(space, None, n_trials=len(BASELINES))
    true = run_study(space, None, n_trials=len(BASELINES), prior=[prior_study(results)])
    assert activations(own) == activations(true) == BASELINES
    truth = np.array([np.nan if value is None else value for _, value in results])
    untried = np.isfinite(truth)
    untried[[space.find_equivalent(e) for e in BASELINES]] = False

    def rank_agreement(study):
        return spearmanr(study.sampler.predict(study)[untried], truth[untried]).statistic

    assert rank_agreement(true) > rank_agreement(own)
    # A prior that ranks the functions the other way counts for nothing once the baselines
    # disagree with it (a rule of the weighting, not luck): the search goes exactly as without.
    without = run_study(space, None, n_trials=20)
    reversed_prior = prior_study(gelu_results(space, sign=-1.0))
    reversed_run = run_study(space, None, n_trials=20, prior=[reversed_prior])
    assert activations(reversed_run) == activations(without)


def test_the_priors_share_falls_as_own_observations_grow():
    points = np.random.default_rng(0).normal(size=(50, 2))
    surface = _surrogate.prior_surface(points, np.arange(50), np.linspace(0, 1, 50), 1.0)
    shares = []
    for n in (1, 8, 40):
        functions = np.arange(n)
        _, share = _transfer.with_prior([surface], functions, functions * 1.0, np.zeros(50))
        shares.append(share[0])
    assert shares == pytest.approx([8 / 9, 8 / 16, 8 / 48], rel=0.01)  # agreement about 1


def test_agreement_needs_evidence_and_ignores_a_source_that_disagrees():
    points = np.random.default_rng(0).normal(size=(60, 2))
    quantiles = np.random.default_rng(1).random(60)
    surface = _surrogate.prior_surface(points, np.arange(60), quantiles, 1.0)
    # The same ranking, as the source's, counts for less on fewer functions. (Noisy rankings of
    # 8 and 60 functions would agree with it by chance more or less.)
    few, many = (_transfer.agreement(surface, np.arange(n), quantiles[:n]) for n in (8, 60))
    assert 0 < few < many < 1
    noisy = quantiles + np.random.default_rng(2).normal(scale=0.2, size=60)
    assert 0 < _transfer.agreement(surface, np.arange(60), noisy) < many
    assert _transfer.agreement(surface, np.arange(4), -noisy[:4]) == 1.0  # too few to tell
    assert _transfer.agreement(surface, np.arange(60), -noisy) == 0.0


def check_prior_kept_with_the_study(space, tmp_path, new):
    """A study on ``new`` reads its prior from a SQLite file once: it resumes without it."""
    old = f"sqlite:///{tmp_path}/old.db"
    run_study(space, old, n_trials=10)
    first = activations(run_study(space, new, n_trials=10, prior=[f"s@{old}"]))
    (tmp_path / "old.db").unlink()  # the source goes: the study still has its prior
    resumed = run_study(space, new, n_trials=2, prior=[f"s@{old}"])
    assert activations(resumed)[:10] == first and len(resumed.trials) == 12
    ((functions, q),) = resumed.sampler.prior_observations(resumed)
    assert len(functions) == 10 and q.max() > 0.9


def test_the_prior_is_read_once_and_kept_with_the_study(space, tmp_path):
    check_prior_kept_with_the_study(space, tmp_path, f"sqlite:///{tmp_path}/new.db")


def test_the_prior_is_kept_on_postgresql_and_mariadb(space, tmp_path, database_url):
    check_prior_kept_with_the_study(space, tmp_path, database_url)


@pytest.mark.parametrize(
    "prior, message",
    [
        ("act-bench-digits:mlp", "unknown prior table 'act-bench-digits:mlp'"),
        ("resnet", "neither 'STUDY@STORAGE_URL'"),
        (3, "a prior is an optuna.Study"),
    ],
)
def test_bad_priors_are_clear_errors(prior, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AquaSurfSampler(prior=[prior])


def test_a_missing_prior_study_names_the_studies_there(space, tmp_path):
    storage = f"sqlite:///{tmp_path}/old.db"
    prior_study([("relu(x)", 1.0)], storage=storage, name="resnet")
    study = optuna.create_study(sampler=AquaSurfSampler(space, prior=[f"vit@{storage}"]))
    with pytest.raises(ValueError, match="no study .vit. there \\(its studies: resnet\\)"):
        study.sampler.prior_observations(study)
    empty = prior_study([("sinh(x)", 1.0)], name="outside")
    study = optuna.create_study(sampler=AquaSurfSampler(space, prior=[empty]))
    with pytest.raises(ValueError, match="no scored activation of this search space"):
        study.optimize(closeness_to_gelu, n_trials=1)
