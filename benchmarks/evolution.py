"""Regularized evolution over activation expressions, as an Optuna sampler (a replay baseline).

Aging evolution (Real et al. 2019): the population is the latest ``population`` finished trials;
each new candidate mutates one operator of the best of ``tournament`` random members. The first
``population`` trials are random.
"""

from __future__ import annotations

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import TrialState

from optuna_aquasurf import Expression, SearchSpace, parse
from optuna_aquasurf._operators import get_operator, operator_names

_MUTATION_ATTEMPTS = 100


class RegularizedEvolutionSampler(BaseSampler):
    """Samples the categorical parameter ``param_name`` (choices: ``space.expressions``).

    Parameters
    ----------
    space
        The search space; mutations keep each operator's arity, so schemas are preserved.
    population, tournament
        Size of the aging population and of the tournament.
    seed
        Random seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        population: int = 20,
        tournament: int = 5,
        seed: int | None = None,
        param_name: str = "activation",
    ):
        self._space = space
        self._population = population
        self._tournament = tournament
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._param_name = param_name
        used = {node.op for name in space.expressions for node in _calls(parse(name))}
        self._operators = {a: [op for op in operator_names(a) if op in used] for a in (1, 2, "n")}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name != self._param_name or not isinstance(
            param_distribution, CategoricalDistribution
        ):
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if param_name in t.params
        ]
        tried = {self._space.index(t.params[param_name]) for t in done}
        untried = [i for i in range(len(self._space)) if i not in tried]
        if len(done) < self._population:
            return self._space[int(self._rng.choice(untried))].expression
        members = done[-self._population :]
        picks = self._rng.choice(len(members), size=self._tournament, replace=False)
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        parent = max((members[i] for i in picks), key=lambda t: sign * t.value)
        tree = parse(parent.params[param_name])
        for _ in range(_MUTATION_ATTEMPTS):
            child = self._space.index(str(self._mutate(tree)))
            if child not in tried:
                return self._space[child].expression
        return self._space[int(self._rng.choice(untried))].expression

    def _mutate(self, tree: Expression) -> Expression:
        """The tree with one randomly chosen operator replaced by another of the same arity."""
        calls = list(_calls(tree))
        target = calls[self._rng.randint(len(calls))]
        pool = [op for op in self._operators[get_operator(target.op).arity] if op != target.op]
        new_op = pool[self._rng.randint(len(pool))] if pool else target.op
        return _replace(tree, target, Expression(new_op, target.args))


def _calls(tree: Expression):
    if tree.args:
        yield tree
        for arg in tree.args:
            yield from _calls(arg)


def _replace(tree: Expression, target: Expression, new: Expression) -> Expression:
    if tree is target:
        return new
    return Expression(tree.op, tuple(_replace(a, target, new) for a in tree.args))
