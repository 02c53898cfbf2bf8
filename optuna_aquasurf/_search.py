"""One study's search: what the sampler knows of a study, and the pick of its next function.

A :class:`StudySearch` is built once per study (and activation name) by the sampler and kept
between picks. It holds the study's store, its baselines, costs and prior, and its surrogate;
:meth:`StudySearch.choose` ranks the functions no trial has tried and claims the first that no
other worker has claimed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import warnings
from functools import cached_property

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from optuna_aquasurf._dead_workers import fail_trials_of_dead_workers
from optuna_aquasurf._map import SpaceMap
from optuna_aquasurf._options import SamplerOptions
from optuna_aquasurf._prior import read_source, source_label
from optuna_aquasurf._private import storage_of, study_id, trial_id
from optuna_aquasurf._rules import FrontGain, Greedy, Pick, SpaceFilling
from optuna_aquasurf._scores import (
    function_scores,
    has_cost_objective,
    maximizes_score,
    trial_score,
)
from optuna_aquasurf._store import store_for
from optuna_aquasurf._surrogate import Surrogate

#: Candidates tried, best first, when claiming the next function races with other workers.
CLAIM_ATTEMPTS = 64


class SpaceExhaustedError(RuntimeError):
    """The search space holds no function that the study may try (none is finite, or none
    costs at most ``max_cost``)."""


class StudySearch:
    """The search of the activation ``name`` in ``study``.

    Parameters
    ----------
    study
        The study.
    name
        The trials' user attribute that holds the activation.
    options
        The sampler's options.
    space_map
        The sampler's map of the space.
    baselines
        The baselines found in the space, by function, in order, spelled as given.
    rule
        The sampler's ranking rule (see :mod:`optuna_aquasurf._rules`).
    """

    def __init__(
        self,
        study: optuna.Study,
        name: str,
        options: SamplerOptions,
        space_map: SpaceMap,
        baselines: dict[int, str],
        rule: Greedy,
    ):
        self.maximize = maximizes_score(study)  # a clear error for a study of other objectives
        self.with_cost = has_cost_objective(study)
        if self.with_cost and not rule.ranks_fronts:
            raise ValueError(
                f'acquisition="{options.acquisition}" is for studies of one objective; a study '
                'of score and cost takes "ucb" or "greedy"'
            )
        self.study = study
        self.name = name
        self.options = options
        self.space_map = space_map
        self.baselines = baselines
        self.rule = rule
        self.store = store_for(storage_of(study))
        self._warned_baselines: set[str] = set()
        self._warned_exhausted = False
        #: Why no new function is left, once none is (see :meth:`_when_exhausted`).
        self.exhausted: str | None = None

    @cached_property
    def key(self) -> str:
        """What the study's prior depends on besides its sources: the study and the space."""
        study, space = self.study, self.space_map.space
        return f"{study.study_name}\n{study_id(study)}\n{space.fingerprint}\n{self.name}"

    # Picks.

    def choose(self, trial: optuna.Trial) -> str:
        """The expression ``trial`` trains: the best-ranked function that no trial has tried,
        claimed for it (see :meth:`_when_exhausted` when none is left)."""
        space = self.space_map.space
        self._fail_trials_of_dead_workers()
        trials = self.trials(exclude=trial_id(trial))
        tried = np.array(sorted({f for _, (f, exact) in trials if exact}), dtype=np.int64)
        eligible = np.ones(len(space), dtype=bool)
        if not self.options.include_non_finite:
            eligible &= space.finite
        if self.options.max_cost is not None:
            eligible &= self.affordable()
        available = eligible & ~np.isin(self.space_map.twin_of, tried)
        for _ in range(2):
            for function in self._ranking(trials, tried, available):
                if self.claim(trial, int(function)):
                    return self.name_of(int(function))
            # The baselines left are all being tried by other workers: rank the rest.
            available[list(self.baselines)] = False
        functions_left = len(np.unique(self.space_map.twin_of[eligible]))
        return self._when_exhausted(trial, trials, functions_left)

    def _when_exhausted(self, trial: optuna.Trial, trials, eligible: int) -> str:
        """When each of the ``eligible`` functions has been tried or is being tried: warn once,
        stop the study (as Optuna's ``GridSampler`` does) and give ``trial`` the best function
        so far again, marked ``repeat_of`` its first trial (another score of it, which the
        surrogate averages)."""
        where = "of the search space"
        if self.options.max_cost is not None:
            where = f"under max_cost={self.options.max_cost}"
        self.exhausted = f"all {eligible} functions {where} have been tried or are being tried"
        tried = [(t, f) for t, (f, exact) in trials if exact]
        if not tried:
            raise SpaceExhaustedError(f"no function to try: {self.exhausted}")
        functions, scores = self.observations(trials)
        if len(scores) > 0:
            best = int(functions[np.argmax(scores) if self.maximize else np.argmin(scores)])
        else:
            best = tried[0][1]
        first = min((t for t, f in tried if f == best), key=lambda t: t.number)
        expression = first.user_attrs[self.name]
        if not self._warned_exhausted:
            self._warned_exhausted = True
            warnings.warn(
                f"{self.exhausted}: the study stops, and trial {trial.number} trains the best "
                f"so far, {expression}, again",
                stacklevel=5,
            )
        trial.set_user_attr("repeat_of", first.number)
        with contextlib.suppress(RuntimeError):  # stop() works inside study.optimize only
            self.study.stop()
        return expression

    def _fail_trials_of_dead_workers(self) -> None:
        """Fail the trials left running by a process of this host that died, and run each
        again once: its function is trained, not held forever by a trial that never ends."""

        def run_again(study: optuna.Study, trial: FrozenTrial) -> None:
            attrs = {self.name: trial.user_attrs[self.name], "rerun_of": trial.number}
            study.enqueue_trial(trial.params, user_attrs=attrs)

        for failed, again in fail_trials_of_dead_workers(self.study, run_again, self.name):
            warnings.warn(
                f"trial {failed.number} was left running by a process that died "
                f"({failed.user_attrs['worker']}): failed"
                + (f", and {failed.user_attrs[self.name]} runs again" if again else ""),
                stacklevel=6,
            )

    def _ranking(self, trials, tried: np.ndarray, available: np.ndarray) -> np.ndarray:
        """The functions to claim, best first: the baselines left, then the rule's ranking
        (space-filling picks first, and while there is nothing to predict from)."""
        _ = self.prior_observations  # a source that cannot be read fails the first trial
        pending = [f for f in self.baselines if available[f]]
        candidates = np.flatnonzero(available)
        if pending or len(candidates) == 0:
            return np.array(pending[:CLAIM_ATTEMPTS], dtype=np.int64)
        functions, scores = self.observations(trials)
        if not self.maximize:
            scores = -scores
        rng = self._pick_rng(len(tried))
        pick = Pick(self.surrogate, functions, scores, tried, candidates, rng, CLAIM_ATTEMPTS)
        baselines = {int(self.space_map.twin_of[f]) for f in self.baselines}
        picks_after_baselines = len(set(tried.tolist()) - baselines)
        if picks_after_baselines < self.options.n_design or (
            len(scores) == 0 and not self.options.prior
        ):
            return SpaceFilling().rank(pick)
        rule = self.rule if len(scores) > 0 else Greedy()  # the prior alone
        if self.with_cost:
            rule = FrontGain(rule, self.costs)
        return rule.rank(pick)

    def _pick_rng(self, n_tried: int) -> np.random.Generator:
        """The randomness of one pick: the same for the same seed and number of functions tried,
        in any process."""
        if self.options.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.options.seed, n_tried])

    def claim(self, trial: optuna.Trial | FrozenTrial, function: int) -> bool:
        """Record that ``trial`` trains ``function`` (and so its near twins); False if another
        live trial does."""

        def is_stale(claimer: int) -> bool:
            """Whether the trial of id ``claimer``, holder of a claim, failed or is not a trial
            of this study."""
            trials = storage_of(self.study).get_all_trials(study_id(self.study), deepcopy=False)
            holder = next((t for t in trials if trial_id(t) == claimer), None)
            return holder is None or holder.state == TrialState.FAIL

        function = int(self.space_map.twin_of[function])
        return self.store.claim(study_id(self.study), function, trial_id(trial), is_stale)

    def name_of(self, function: int) -> str:
        """The expression suggested for the ``function``-th function of the space: a baseline's
        own spelling, else the space's expression."""
        return self.baselines.get(function, self.space_map.space[function].expression)

    # What the trials say.

    def locate(self, expression: str) -> tuple[int, bool]:
        """The function ``expression`` computes, as the search counts it: its location in the
        space (:meth:`SpaceMap.locate`), near twins counted as one, the first of them."""
        function, exact = self.space_map.locate(expression)
        return int(self.space_map.twin_of[function]), exact

    def trials(self, exclude: int | None = None) -> list[tuple[FrozenTrial, tuple[int, bool]]]:
        """The trials with an activation (but ``exclude``), and its :meth:`locate`."""
        return [
            (t, self.locate(t.user_attrs[self.name]))
            for t in self.study.get_trials(deepcopy=False)
            if self.name in t.user_attrs and trial_id(t) != exclude
        ]

    def observations(self, trials) -> tuple[np.ndarray, np.ndarray]:
        """Functions with a score (one per function, mean over trials) and those scores:
        completed trials give their value, pruned ones their last reported value, and a function
        whose trials all failed the worst value observed in the study."""
        results = [(f, trial_score(t), t.state == TrialState.FAIL) for t, (f, _) in trials]
        return function_scores(results, self.maximize)

    def predict(self) -> np.ndarray | None:
        """The surrogate's predicted score of every function (None before any score exists)."""
        functions, scores = self.observations(self.trials())
        if len(scores) == 0:
            return None
        sign = 1.0 if self.maximize else -1.0
        predicted, _ = self.surrogate.predict(functions, sign * scores)
        return sign * predicted

    def baselines_left(self) -> list[str]:
        """The baselines in the space that no trial has tried or is trying and ``max_cost``
        allows: the next picks, which need no map."""
        tried = {f for _, (f, exact) in self.trials() if exact}
        too_costly = self.baselines_over_cost()
        twin_of = self.space_map.twin_of
        return [
            b for f, b in self.baselines.items() if twin_of[f] not in tried and b not in too_costly
        ]

    # The surrogate and the prior.

    @cached_property
    def surrogate(self) -> Surrogate:
        """The study's surrogate over :meth:`views`, with its prior."""
        prior = self.prior_observations if self.options.prior else ()
        seed = self.options.seed or 0
        return Surrogate(self.views(), self.options.regressor, seed, prior)

    def views(self) -> list[np.ndarray]:
        """The coordinates the surrogate reads, one row per function: the views of the reduced
        features, or the 2-D map."""
        if self.options.surrogate == "map":
            return [self.space_map.embedding(self.store)]
        return self.space_map.feature_views(self.store)

    @cached_property
    def prior_observations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each prior source's scored functions in this space and their quantiles, read once
        and kept in the store (see :meth:`AquaSurfSampler.prior_observations`)."""
        observations = []
        for source in self.options.prior:
            entry = hashlib.sha256(f"{self.key}\n{source_label(source)}".encode()).hexdigest()
            read = functools.partial(self._read_prior, source)
            functions, quantiles = self.store.compute_once("priors", entry, read)
            observations.append((functions, quantiles))
        return observations

    def _read_prior(self, source) -> list[np.ndarray]:
        return list(read_source(source, self.space_map.find, self.name))

    # Costs.

    @property
    def knows_costs(self) -> bool:
        """Whether the study needs the cost of every function: with ``max_cost``, or when it
        minimises the cost as its second objective."""
        return self.options.max_cost is not None or self.with_cost

    @cached_property
    def costs(self) -> np.ndarray:
        """The cost of every function as suggested (a baseline's that of its own spelling),
        measured once and kept in the store."""
        from optuna_aquasurf._cost import stored_costs

        device = self.options.cost_device
        costs = self.space_map.costs(self.store, device).copy()
        if self.baselines:
            names = list(self.baselines.values())
            costs[list(self.baselines)] = stored_costs(self.store, names, device)
        return costs

    def cost_of(self, expression: str) -> float:
        """The cost of ``expression`` as the study knows it: from :attr:`costs` when the study
        knows every function's and this is the suggested spelling, else measured once and
        kept in the store."""
        from optuna_aquasurf._cost import stored_costs

        if self.knows_costs:
            function, exact = self.space_map.locate(expression)
            if exact and expression == self.name_of(function):
                return float(self.costs[function])
        return float(stored_costs(self.store, [expression], self.options.cost_device)[0])

    def baselines_over_cost(self) -> dict[str, float]:
        """The baselines that ``max_cost`` leaves out, and their costs."""
        if self.options.max_cost is None:
            return {}
        return {
            name: float(self.costs[function])
            for function, name in self.baselines.items()
            if self.costs[function] > self.options.max_cost
        }

    def affordable(self) -> np.ndarray:
        """Which functions cost at most ``max_cost``; warns once of each baseline that does
        not."""
        for name, cost in self.baselines_over_cost().items():
            if name not in self._warned_baselines:
                self._warned_baselines.add(name)
                warnings.warn(
                    f"baseline {name} costs {cost:.1f} relu passes, above "
                    f"max_cost={self.options.max_cost}: skipped",
                    stacklevel=5,
                )
        return self.costs <= self.options.max_cost
