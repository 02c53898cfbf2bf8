"""AquaSurfSampler: the surrogate search of activation functions as an Optuna sampler.

The sampler is an adapter: it holds the Optuna contract, its validated options
(:class:`~optuna_aquasurf._options.SamplerOptions`), the map of the space and its ranking rule,
and hands each study to its :class:`~optuna_aquasurf._search.StudySearch`, built once per study.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial

from optuna_aquasurf._activation import ActivationFunction
from optuna_aquasurf._dead_workers import worker_label
from optuna_aquasurf._expression import canonical
from optuna_aquasurf._map import SpaceMap
from optuna_aquasurf._operators import PAPER_UNARY
from optuna_aquasurf._options import DEFAULT_BASELINES, SamplerOptions
from optuna_aquasurf._prior import Source
from optuna_aquasurf._private import in_optimize_loop, storage_of, study_id, trial_id
from optuna_aquasurf._rules import RULES
from optuna_aquasurf._search import SpaceExhaustedError, StudySearch
from optuna_aquasurf._space import SearchSpace
from optuna_aquasurf._store import MemoryStore, Store, store_for

if TYPE_CHECKING:
    from optuna_aquasurf.features import FisherProbe

__all__ = ["DEFAULT_BASELINES", "AquaSurfSampler", "SpaceExhaustedError", "suggest_activation"]


class AquaSurfSampler(BaseSampler):
    """Search activation functions with the AQuaSurF surrogate; other parameters go elsewhere.

    Every function of the search space is described by its outputs at fixed points and, with a
    ``probe``, by its Fisher spectrum in your model (computed once per study and stored next to
    it). The sampler first tries the ``baselines``, then trains the untried function that the
    surrogate finds most promising: a k-nearest-neighbour regressor in the space of these
    features (``surrogate="features"``, the default) or on their 2-D map (``"map"``, the
    paper's) predicts every function's score from the trials so far.

    The surrogate adapts to each study: in the feature space it predicts from the outputs
    alone and from the outputs beside the Fisher features, and mixes the two by how well each
    predicts the study's own scores from one another (leave-one-out), so that a model whose
    Fisher spectrum says little about its scores is searched by its outputs, and one whose
    spectrum says much by both. Where the two disagree the prediction counts as less sure.

    With ``acquisition="ucb"`` (the default), each pick maximises the predicted score plus
    ``kappa`` times its uncertainty: the spread of the nearest scored functions' scores, growing
    with the distance to them. ``kappa`` is drawn anew for every pick from an exponential
    distribution of mean ``exploration`` (0.25 unless given), so that some picks exploit and
    some explore.
    ``"explore"`` adds ``exploration`` times the distance to the nearest tried function instead;
    ``"greedy"`` is the reference's rule: the best prediction alone. Any of them can start, after
    the baselines, with ``n_design`` space-filling picks (each the function farthest from all
    tried ones).

    With a ``prior`` (earlier studies, or Act-Bench-Digits tables that ship with the package),
    the surrogate starts from what they learned: their scores, as quantiles, predict this
    study's, with a weight that falls as its own scores grow and follows their rank agreement
    with them (see :mod:`optuna_aquasurf._transfer`).

    In a study of two objectives, the score and the activation's cost
    (``directions=[..., "minimize"]``, the objective returning ``act.cost`` second), the
    surrogate predicts the score alone, the cost being known for every function, and each pick
    is the function that would add most to the front of score against cost (its hypervolume,
    costs on a log scale, see :mod:`optuna_aquasurf._front`), with an optimistic score.

    Use it with :func:`suggest_activation`; the activation is recorded in each trial's user
    attribute ``"activation"`` (readable in ``trials_dataframe()`` and optuna-dashboard).
    Failed trials count as the worst score observed so far, pruned trials as their last
    reported value. Other parameters are sampled by ``independent_sampler``.

    Parameters
    ----------
    space
        A :class:`SearchSpace` or a list of expressions; by default the paper's 2,918 functions
        (``binary(unary(x),unary(x))`` over ``PAPER_UNARY``).
    probe
        A :class:`~optuna_aquasurf.features.FisherProbe` for your model; without one the map
        uses output features alone.
    baselines
        Expressions tried first, in order (skipped if the space has no equivalent). With a
        ``prior``, ``baselines=()`` starts from the prior's best functions instead.
    max_cost
        Never suggest a function whose cost is above this: the forward and backward time of
        the expression suggested, over relu's, on ``cost_device`` (see
        :meth:`SpaceMap.costs`; measured once per space, about 20 s for the paper space on the
        CPU, and kept with the study). Baselines above it are skipped with a warning.
    cost_device
        Where costs are measured (for ``max_cost`` and studies of score and cost): ``"cpu"``
        (one thread) or an accelerator such as ``"cuda"``; kept per kind of device.
    prior
        Earlier searches to start from: :class:`optuna.Study` objects (any storage, either
        direction), ``"STUDY@STORAGE_URL"`` strings, or bundled tables
        (``"act-bench-digits:cnn"``, ``vit``, ``resnet``, ``regression``). Their activations
        (user attribute ``"activation"``) count where this space has the same function, under
        any name; failed trials count as their worst. Read once per study and kept with it.
    surrogate
        ``"features"`` (the functions' reduced features, see :class:`SpaceMap`) or ``"map"``
        (their 2-D map).
    acquisition
        ``"ucb"``, ``"explore"`` or ``"greedy"``.
    n_design
        Space-filling picks after the baselines (each the function farthest from all tried).
    exploration
        ``"ucb"``: mean weight of the uncertainty (default 0.25); ``"explore"``: weight of the
        distance bonus (default 0.5).
    regressor
        Any scikit-learn regressor from the surrogate's points to scores; default kNN with k=3,
        weighted by inverse distance. The uncertainty of ``"ucb"`` always comes from the
        nearest scored functions.
    seed
        Seed of the map, of ``kappa`` and of tie-breaking; the same seed gives the same
        suggestions in
        another process. The map's identity is the space, the probe and this seed: changing any
        of them computes a new map.
    independent_sampler
        Sampler of all other parameters; default ``TPESampler(seed=seed)``.
    include_non_finite
        Also suggest functions that are infinite or NaN at some probe points.
    use_outputs
        Use the output features in the map; False (with a probe) maps by Fisher features alone.
    fisher_budget
        With a ``probe``: compute Fisher features for at most this many functions (default
        4,096); in a larger space for a space-filling subset, the others placed in the map
        from their output features (see :class:`SpaceMap`).
    map_key
        Use the map stored with the study under this key (the :attr:`map_key` of the sampler
        that computed it) instead of this sampler's own: to read a study without the model of
        its probe (``aquasurf plot`` does). Such a sampler never computes a map.

    Examples
    --------
    >>> import optuna, torch
    >>> from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> space = SearchSpace.from_expressions(["relu(x)", "tanh(x)", "abs(x)", "swish(x)"])
    >>> def objective(trial):
    ...     act = suggest_activation(trial)
    ...     return float(act(torch.linspace(-1, 1, 5)).sum())
    >>> sampler = AquaSurfSampler(space, baselines=["relu(x)"], seed=0)
    >>> study = optuna.create_study(direction="maximize", sampler=sampler)
    >>> study.optimize(objective, n_trials=4)
    >>> study.best_trial.user_attrs["activation"]
    'abs(x)'
    """

    def __init__(
        self,
        space: SearchSpace | Sequence[str] | None = None,
        probe: FisherProbe | None = None,
        *,
        baselines: Sequence[str] = DEFAULT_BASELINES,
        prior: Sequence[Source] = (),
        max_cost: float | None = None,
        cost_device: str = "cpu",
        surrogate: str = "features",
        acquisition: str = "ucb",
        n_design: int = 0,
        exploration: float | None = None,
        regressor=None,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        include_non_finite: bool = False,
        use_outputs: bool = True,
        fisher_budget: int | None = None,
        map_key: str | None = None,
    ):
        self._options = SamplerOptions.validated(
            space,
            baselines,
            prior,
            probe=probe,
            max_cost=max_cost,
            cost_device=cost_device,
            surrogate=surrogate,
            acquisition=acquisition,
            n_design=n_design,
            exploration=exploration,
            regressor=regressor,
            seed=seed,
            include_non_finite=include_non_finite,
            use_outputs=use_outputs,
            fisher_budget=fisher_budget,
            map_key=map_key,
        )
        self._rule = RULES[acquisition](exploration)
        self._independent_sampler = independent_sampler or TPESampler(seed=seed)
        self._fixed_params: dict[int, dict[str, Any]] = {}
        self._start_caches()

    def _start_caches(self) -> None:
        """The lock and what is computed on first use: never pickled, rebuilt after."""
        self._lock = threading.RLock()
        self._space_map: SpaceMap | None = None
        self._searches: dict[tuple, StudySearch] = {}

    def __getstate__(self) -> dict[str, Any]:
        kept = ("_options", "_rule", "_independent_sampler", "_fixed_params")
        return {name: self.__dict__[name] for name in kept}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_caches()

    @property
    def options(self) -> SamplerOptions:
        """The options this sampler was built with, validated."""
        return self._options

    @property
    def space(self) -> SearchSpace:
        """The search space (built on first use when none was given)."""
        return self.space_map.space

    @property
    def space_map(self) -> SpaceMap:
        """The :class:`SpaceMap` of the space: features, embedding and lookups (built on first
        use)."""
        with self._lock:
            if self._space_map is None:
                options = self._options
                space = options.space or SearchSpace.from_schemas(
                    ["binary(unary(x),unary(x))"], unary=PAPER_UNARY
                )
                self._space_map = SpaceMap(
                    space,
                    options.probe,
                    options.seed,
                    options.use_outputs,
                    key=options.map_key,
                    fisher_budget=options.fisher_budget,
                )
            return self._space_map

    def search(self, study: optuna.Study, name: str = "activation") -> StudySearch:
        """The :class:`~optuna_aquasurf._search.StudySearch` of ``study``: built on first use
        and kept."""
        key = (id(storage_of(study)), study_id(study), study.study_name, name)
        with self._lock:
            if key not in self._searches:
                baselines = self._baseline_names()
                self._searches[key] = StudySearch(
                    study, name, self._options, self.space_map, baselines, self._rule
                )
            return self._searches[key]

    # The Optuna sampler contract: everything but the activation goes to the independent sampler.

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            self._fixed_params[trial_id(trial)] = trial.system_attrs.get("fixed_params", {})
        self._independent_sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        with self._lock:
            self._fixed_params.pop(trial_id(trial), None)
        self._independent_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._independent_sampler.reseed_rng()

    # The activation.

    def suggest(self, study: optuna.Study, trial: optuna.Trial, name: str = "activation") -> str:
        """Choose the expression ``trial`` trains and record it; see :func:`suggest_activation`."""
        search = self.search(study, name)
        chosen = trial.user_attrs.get(name)  # set already, or inherited by a retried trial
        fixed = self._fixed_params.get(trial_id(trial), {}).get(name)
        with self._lock:
            if chosen is None and fixed is None:
                chosen = search.choose(trial)  # claimed there
            else:
                chosen = chosen if chosen is not None else canonical(fixed)
                function, exact = search.locate(chosen)
                if exact:
                    search.claim(trial, function)  # a retry or an enqueued trial takes it over
        if trial.user_attrs.get(name) != chosen:
            trial.set_user_attr(name, chosen)
        # See _dead_workers. Only study.optimize surely trains its trials in this process: Ray
        # Tune asks in its driver, trains in its workers, and resumes a dead driver's trials.
        runs_here = in_optimize_loop(study)
        if runs_here and trial.user_attrs.get("worker") != worker_label():
            trial.set_user_attr("worker", worker_label())
        return chosen

    # What users and the CLI read: forwarded to the map and to the study's search.

    def embedding(self, study: optuna.Study | None = None) -> np.ndarray:
        """2-D coordinates of every function of the space, computed once and stored with
        ``study`` (or in this process when no study is given)."""
        return self.space_map.embedding(self._store(study))

    def has_embedding(self, study: optuna.Study | None = None) -> bool:
        """Whether the map is ready: computed in this process or stored with ``study``, so that
        :meth:`embedding` returns at once."""
        return self.space_map.is_ready(self._store(study))

    def fisher_features(self, study: optuna.Study | None = None) -> np.ndarray:
        """Fisher features of the functions within the budget (every function of a space of at
        most ``fisher_budget``; else those of :attr:`SpaceMap.fisher_subset`), one row each,
        computed once and stored with ``study``; several workers calling this split the work."""
        if self._options.probe is None:
            raise ValueError("this sampler has no probe: give probe=FisherProbe(...)")
        return self.space_map.fisher_features(self._store(study))

    @property
    def map_key(self) -> str:
        """The map's identity: a digest of the space, the probe's fingerprint, ``use_outputs``
        and the seed (or the ``map_key`` given)."""
        return self.space_map.key

    def surrogate_points(self, study: optuna.Study | None = None) -> np.ndarray:
        """The coordinates the surrogate reads, one row per function: the reduced features
        (:meth:`SpaceMap.features`) or the 2-D map (:meth:`embedding`)."""
        if self._options.surrogate == "map":
            return self.embedding(study)
        return self.space_map.features(self._store(study))

    def locate(self, expression: str) -> tuple[int, bool]:
        """The position in the space of the function ``expression`` computes, and True; or, for a
        function outside the space, the nearest one by output features, and False."""
        return self.space_map.locate(expression)

    def name_of(self, function: int) -> str:
        """The expression this sampler suggests for the ``function``-th function of the space:
        a baseline's own spelling, else the space's expression."""
        return self._baseline_names().get(function, self.space[function].expression)

    def predict(self, study: optuna.Study, name: str = "activation") -> np.ndarray | None:
        """The surrogate's predicted score of every function (None before any score exists)."""
        with self._lock:
            return self.search(study, name).predict()

    def prior_observations(
        self, study: optuna.Study, name: str = "activation"
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each ``prior`` source's scored functions in this space and their quantiles (near 0
        its worst, near 1 its best).

        Read once per study and kept in its store, so that its workers and resumed runs use the
        same prior even if a source changes or goes.

        Raises
        ------
        ValueError
            For a source that cannot be read or holds no function of the space.
        """
        with self._lock:
            return self.search(study, name).prior_observations

    def baselines_left(self, study: optuna.Study, name: str = "activation") -> list[str]:
        """The baselines in the space that no trial of ``study`` has tried or is trying: the
        next picks, which need no map."""
        with self._lock:
            return self.search(study, name).baselines_left()

    def costs(self, study: optuna.Study) -> np.ndarray:
        """The cost of every function as this sampler suggests it (:meth:`SpaceMap.costs`, and
        for a baseline, that of its own spelling), measured once and kept with ``study``."""
        with self._lock:
            return self.search(study).costs

    def cost_of(self, study: optuna.Study, expression: str) -> float:
        """The cost of ``expression`` as ``study`` knows it, the same in every process: from
        :meth:`costs` when the study knows every function's and the sampler suggests this one
        under this name, else measured once and kept with the study."""
        with self._lock:
            return self.search(study).cost_of(expression)

    def knows_costs(self, study: optuna.Study) -> bool:
        """Whether ``study`` needs the cost of every function: with ``max_cost``, or when it
        minimises the cost as its second objective."""
        return self.search(study).knows_costs

    def baselines_over_cost(self, study: optuna.Study) -> dict[str, float]:
        """The baselines that ``max_cost`` leaves out, and their costs."""
        with self._lock:
            return self.search(study).baselines_over_cost()

    def _baseline_names(self) -> dict[int, str]:
        """The baselines found in the space, by function, in order (spelled as given)."""
        names: dict[int, str] = {}
        for baseline in self._options.baselines:
            function, exact = self.locate(baseline)
            if exact:
                names.setdefault(function, baseline)
        return names

    def _store(self, study: optuna.Study | None) -> Store:
        if study is None:
            return _LOCAL_STORE
        return store_for(storage_of(study))


_LOCAL_STORE = MemoryStore()


def suggest_activation(
    trial: optuna.Trial, name: str = "activation", normalize: bool = False
) -> ActivationFunction:
    """The activation function this trial should train, as a module.

    The study's sampler must be an :class:`AquaSurfSampler`. The expression is recorded in the
    trial's user attribute ``name``, and its cost (:meth:`AquaSurfSampler.cost_of`, measured once
    per study) in ``name + "_cost"``. ``study.enqueue_trial({"activation": "relu(x)"})`` makes a
    trial train that expression, inside the space or not.

    Parameters
    ----------
    trial
        The trial of the objective function.
    name
        User attribute (and enqueue key) of the expression.
    normalize
        Passed to :class:`ActivationFunction`.

    Examples
    --------
    A study of score and cost, whose front is ``study.best_trials``:

    >>> import optuna, torch
    >>> from optuna_aquasurf import AquaSurfSampler, suggest_activation
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> sampler = AquaSurfSampler(["relu(x)", "tanh(x)", "sinh(x)", "swish(x)"], seed=0)
    >>> study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    >>> def objective(trial):
    ...     act = suggest_activation(trial)
    ...     score = -float((act(torch.linspace(-1, 1, 5)) - torch.linspace(-1, 1, 5)).abs().sum())
    ...     return score, act.cost
    >>> study.optimize(objective, n_trials=4)
    >>> len(study.best_trials) >= 1
    True
    """
    sampler = trial.study.sampler
    if not isinstance(sampler, AquaSurfSampler):
        raise TypeError(
            "suggest_activation needs a study created with sampler=AquaSurfSampler(...), "
            f"not {type(sampler).__name__}"
        )
    study = trial.study
    expression = sampler.suggest(study, trial, name)
    cost = trial.user_attrs.get(f"{name}_cost")
    if cost is None:
        cost = sampler.cost_of(study, expression)
        trial.set_user_attr(f"{name}_cost", cost)
    return ActivationFunction(expression, normalize=normalize, cost=cost)
