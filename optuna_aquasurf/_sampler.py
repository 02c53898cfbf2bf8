"""AquaSurfSampler: the surrogate search of activation functions as an Optuna sampler."""

from __future__ import annotations

import functools
import hashlib
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from optuna_aquasurf import _acquisition, _front, _transfer
from optuna_aquasurf._activation import ActivationFunction
from optuna_aquasurf._expression import canonical
from optuna_aquasurf._feature_space import length_scale
from optuna_aquasurf._map import SpaceMap, check_map_options
from optuna_aquasurf._operators import PAPER_UNARY
from optuna_aquasurf._prior import Source, check_source, read_source, source_label
from optuna_aquasurf._scores import (
    function_scores,
    has_cost_objective,
    maximizes_score,
    trial_score,
)
from optuna_aquasurf._space import SearchSpace
from optuna_aquasurf._store import MemoryStore, Store, store_for

if TYPE_CHECKING:
    from optuna_aquasurf.features import FisherProbe

#: The reference's baselines, tried first (those with an equivalent in the space).
DEFAULT_BASELINES = (
    "elu(x)",
    "relu(x)",
    "selu(x)",
    "sigmoid(x)",
    "softplus(x)",
    "softsign(x)",
    "swish(x)",
    "tanh(x)",
)
#: What the surrogate reads: the functions' reduced features, or their 2-D map.
SURROGATES = ("features", "map")
#: Candidates tried, best first, when claiming the next function races with other workers.
_CLAIM_ATTEMPTS = 64


class SpaceExhaustedError(RuntimeError):
    """Every function of the search space has been tried or is being tried."""


class AquaSurfSampler(BaseSampler):
    """Search activation functions with the AQuaSurF surrogate; other parameters go elsewhere.

    Every function of the search space is described by its outputs at fixed points and, with a
    ``probe``, by its Fisher spectrum in your model (computed once per study and stored next to
    it). The sampler first tries the ``baselines``, then trains the untried function that the
    surrogate finds most promising: a k-nearest-neighbour regressor in the space of these
    features (``surrogate="features"``, the default) or on their 2-D map (``"map"``, the
    paper's) predicts every function's score from the trials so far.

    With ``acquisition="ucb"`` (the default), each pick maximises the predicted score plus
    ``kappa`` times its uncertainty: the spread of the nearest scored functions' scores, growing
    with the distance to them. ``kappa`` is drawn anew for every pick from an exponential
    distribution of mean ``exploration``, so that some picks exploit and some explore.
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
        ``"ucb"``: mean weight of the uncertainty; ``"explore"``: weight of the distance bonus.
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
        exploration: float = 0.5,
        regressor=None,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        include_non_finite: bool = False,
        use_outputs: bool = True,
        fisher_budget: int | None = None,
        map_key: str | None = None,
    ):
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
        if acquisition not in _acquisition.ACQUISITIONS:
            raise ValueError(
                f"acquisition must be one of {_acquisition.ACQUISITIONS}, got {acquisition!r}"
            )
        if n_design < 0:
            raise ValueError(f"n_design must be >= 0, got {n_design}")
        if not exploration >= 0:
            raise ValueError(f"exploration must be >= 0, got {exploration}")
        check_map_options(probe, use_outputs, map_key, fisher_budget)
        if max_cost is not None and not max_cost > 0:
            raise ValueError(f"max_cost must be a positive number, got {max_cost}")
        try:
            torch.device(cost_device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"cost_device: no device {cost_device!r} (cpu, cuda, cuda:N)"
            ) from None
        if isinstance(prior, str | optuna.Study):
            prior = [prior]
        for source in prior:
            check_source(source)
        if space is not None and not isinstance(space, SearchSpace):
            space = SearchSpace.from_expressions(list(space))
        self._space = space
        self._probe = probe
        self._baselines = [canonical(b) for b in baselines]
        self._prior = list(prior)
        self._max_cost = max_cost
        self._cost_device = str(cost_device)
        self._warned_baselines: set[str] = set()
        self._costs: dict[str, np.ndarray] = {}
        self._surrogate = surrogate
        self._acquisition = acquisition
        self._n_design = n_design
        self._exploration = exploration
        self._regressor = regressor if regressor is not None else _acquisition.default_regressor()
        self._seed = seed
        self._independent_sampler = independent_sampler or TPESampler(seed=seed)
        self._include_non_finite = include_non_finite
        self._use_outputs = use_outputs
        self._fisher_budget = fisher_budget
        self._map_key = map_key
        self._lock = threading.RLock()
        self._fixed_params: dict[int, dict[str, Any]] = {}
        self._space_map: SpaceMap | None = None
        self._points_length_scale: tuple[np.ndarray | None, float] = (None, 1.0)
        self._prior_observations: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._prior_surfaces: tuple[np.ndarray | None, str, list] = (None, "", [])
        # Nearest tried and nearest scored functions of every function, kept between suggestions.
        self._neighbours = {"tried": _acquisition.Neighbours(), "scored": _acquisition.Neighbours()}

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
                space = self._space or SearchSpace.from_schemas(
                    ["binary(unary(x),unary(x))"], unary=PAPER_UNARY
                )
                self._space_map = SpaceMap(
                    space,
                    self._probe,
                    self._seed,
                    self._use_outputs,
                    key=self._map_key,
                    fisher_budget=self._fisher_budget,
                )
            return self._space_map

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
            self._fixed_params[trial._trial_id] = trial.system_attrs.get("fixed_params", {})
        self._independent_sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        with self._lock:
            self._fixed_params.pop(trial._trial_id, None)
        self._independent_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._independent_sampler.reseed_rng()

    # The activation.

    def suggest(self, study: optuna.Study, trial: optuna.Trial, name: str = "activation") -> str:
        """Choose the expression ``trial`` trains and record it; see :func:`suggest_activation`."""
        maximizes_score(study)  # a clear error for a study of other objectives
        if has_cost_objective(study) and self._acquisition == "explore":
            raise ValueError(
                'acquisition="explore" is for studies of one objective; a study of score and '
                'cost takes "ucb" or "greedy"'
            )
        chosen = trial.user_attrs.get(name)  # set already, or inherited by a retried trial
        fixed = self._fixed_params.get(trial._trial_id, {}).get(name)
        if chosen is None and fixed is None:
            chosen = self._choose(study, trial, name)  # claimed there
        else:
            chosen = chosen if chosen is not None else canonical(fixed)
            function, exact = self.locate(chosen)
            if exact:
                self._claim(study, trial, function)  # a retry or an enqueued trial takes it over
        if trial.user_attrs.get(name) != chosen:
            trial.set_user_attr(name, chosen)
        return chosen

    def embedding(self, study: optuna.Study | None = None) -> np.ndarray:
        """2-D coordinates of every function of the space, computed once and stored with
        ``study`` (or in this process when no study is given)."""
        return self.space_map.embedding(self._store(study))

    def has_embedding(self, study: optuna.Study | None = None) -> bool:
        """Whether the map is ready: computed in this process or stored with ``study``, so that
        :meth:`embedding` returns at once."""
        return self.space_map.is_ready(self._store(study))

    def baselines_left(self, study: optuna.Study, name: str = "activation") -> list[str]:
        """The baselines in the space that no trial of ``study`` has tried or is trying: the
        next picks, which need no map."""
        with self._lock:
            tried = {f for _, (f, exact) in self._trials(study, name, exclude=None) if exact}
            too_costly = self.baselines_over_cost(study)
            return [
                b
                for f, b in self._baseline_names().items()
                if f not in tried and b not in too_costly
            ]

    def fisher_features(self, study: optuna.Study | None = None) -> np.ndarray:
        """Fisher features of the functions within the budget (every function of a space of at
        most ``fisher_budget``; else those of :attr:`SpaceMap.fisher_subset`), one row each,
        computed once and stored with ``study``; several workers calling this split the work."""
        if self._probe is None:
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
        if self._surrogate == "map":
            return self.embedding(study)
        return self.space_map.features(self._store(study))

    def predict(self, study: optuna.Study, name: str = "activation") -> np.ndarray | None:
        """The surrogate's predicted score of every function (None before any score exists)."""
        with self._lock:
            points = self.surrogate_points(study)
            functions, scores = self._observations(study, self._trials(study, name, exclude=None))
            if len(scores) == 0:
                return None
            sign = 1.0 if maximizes_score(study) else -1.0
            predicted, _ = self._predict_scores(
                study, points, functions, sign * scores, name, uncertainty=False
            )
            return sign * predicted

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
            key = self._study_key(study, name)
            if key not in self._prior_observations:
                store = self._store(study)
                observations = []
                for source in self._prior:
                    entry = hashlib.sha256(f"{key}\n{source_label(source)}".encode()).hexdigest()
                    read = functools.partial(self._read_prior, source, name)
                    functions, quantiles = store.compute_once("priors", entry, read)
                    observations.append((functions, quantiles))
                self._prior_observations[key] = observations
            return self._prior_observations[key]

    def _read_prior(self, source: Source, name: str) -> list[np.ndarray]:
        return list(read_source(source, self.space_map.find, name))

    def _study_key(self, study: optuna.Study, name: str) -> str:
        """What a study's prior and costs depend on (besides the sources and the device): the
        study and the space."""
        return f"{study.study_name}\n{study._study_id}\n{self.space.fingerprint}\n{name}"

    def _choose(self, study: optuna.Study, trial: optuna.Trial, name: str) -> str:
        with self._lock:
            space = self.space
            trials = self._trials(study, name, exclude=trial._trial_id)
            tried = np.array(sorted({f for _, (f, exact) in trials if exact}), dtype=np.int64)
            available = np.ones(len(space), dtype=bool)
            available[tried] = False
            if not self._include_non_finite:
                available &= space.finite
            if self._max_cost is not None:
                available &= self._affordable(study)
            for _ in range(2):
                for function in self._ranking(study, trials, tried, available, name):
                    if self._claim(study, trial, function):
                        return self.name_of(int(function))
                # The baselines left are all being tried by other workers: rank the rest.
                available[list(self._baseline_names())] = False
            raise SpaceExhaustedError(
                f"every function of the search space ({len(space)}) has been tried or is "
                "being tried: stop the study or give a larger space"
            )

    def costs(self, study: optuna.Study) -> np.ndarray:
        """The cost of every function as this sampler suggests it (:meth:`SpaceMap.costs`, and
        for a baseline, that of its own spelling), measured once and kept with ``study``."""
        from optuna_aquasurf._cost import stored_costs

        with self._lock:
            key = self._study_key(study, name="")
            if key not in self._costs:
                store = self._store(study)
                costs = self.space_map.costs(store, self._cost_device).copy()
                baselines = self._baseline_names()
                names = list(baselines.values())
                if names:
                    costs[list(baselines)] = stored_costs(store, names, self._cost_device)
                self._costs[key] = costs
            return self._costs[key]

    def cost_of(self, study: optuna.Study, expression: str) -> float:
        """The cost of ``expression`` as ``study`` knows it: from :meth:`costs` when the sampler
        suggests the function under this name, else measured (see
        :attr:`ActivationFunction.cost`)."""
        from optuna_aquasurf._cost import measured_cost

        function, exact = self.locate(expression)
        if exact and expression == self.name_of(function):
            return float(self.costs(study)[function])
        return measured_cost(canonical(expression), self._cost_device)

    def knows_costs(self, study: optuna.Study) -> bool:
        """Whether ``study`` needs the cost of every function: with ``max_cost``, or when it
        minimises the cost as its second objective."""
        return self._max_cost is not None or has_cost_objective(study)

    def baselines_over_cost(self, study: optuna.Study) -> dict[str, float]:
        """The baselines that ``max_cost`` leaves out, and their costs."""
        if self._max_cost is None:
            return {}
        costs = self.costs(study)
        return {
            name: float(costs[function])
            for function, name in self._baseline_names().items()
            if costs[function] > self._max_cost
        }

    def _affordable(self, study: optuna.Study) -> np.ndarray:
        """Which functions cost at most ``max_cost``; warns once of each baseline that does
        not."""
        for name, cost in self.baselines_over_cost(study).items():
            if name not in self._warned_baselines:
                self._warned_baselines.add(name)
                warnings.warn(
                    f"baseline {name} costs {cost:.1f} relu passes, above "
                    f"max_cost={self._max_cost}: skipped",
                    stacklevel=3,
                )
        return self.costs(study) <= self._max_cost

    def name_of(self, function: int) -> str:
        """The expression this sampler suggests for the ``function``-th function of the space:
        a baseline's own spelling, else the space's expression."""
        return self._baseline_names().get(function, self.space[function].expression)

    def _baseline_names(self) -> dict[int, str]:
        """The baselines found in the space, by function, in order (spelled as given)."""
        names: dict[int, str] = {}
        for baseline in self._baselines:
            function, exact = self.locate(baseline)
            if exact:
                names.setdefault(function, baseline)
        return names

    def _ranking(self, study, trials, tried, available, name) -> np.ndarray:
        self.prior_observations(study, name)  # a source that cannot be read fails the first trial
        baselines = list(self._baseline_names())
        pending = [f for f in baselines if available[f]]
        candidates = np.flatnonzero(available)
        if pending or len(candidates) == 0:
            return np.array(pending[:_CLAIM_ATTEMPTS], dtype=np.int64)
        points = self.surrogate_points(study)
        functions, scores = self._observations(study, trials)
        picks_after_baselines = len(set(tried.tolist()) - set(baselines))
        if picks_after_baselines < self._n_design or (len(scores) == 0 and not self._prior):
            distance = _acquisition.distance_to_nearest(self._neighbours["tried"], points, tried)
            return _acquisition.farthest_first(distance, candidates, _CLAIM_ATTEMPTS)
        if not maximizes_score(study):
            scores = -scores
        acquisition = self._acquisition if len(scores) > 0 else "greedy"  # the prior alone
        predicted, bonus = self._predict_scores(
            study, points, functions, scores, name, uncertainty=acquisition == "ucb"
        )
        exploration = self._exploration
        if acquisition == "ucb":
            exploration = self._pick_rng(len(tried)).exponential(self._exploration)
        elif acquisition == "explore":
            bonus = _acquisition.distance_to_nearest(self._neighbours["tried"], points, tried)
        if has_cost_objective(study):
            optimistic = predicted if bonus is None else predicted + exploration * bonus
            return self._rank_on_front(study, optimistic, functions, scores, candidates)
        return _acquisition.rank(
            acquisition, predicted, candidates, exploration, _CLAIM_ATTEMPTS, bonus
        )

    def _rank_on_front(self, study, optimistic, functions, scores, candidates) -> np.ndarray:
        """The candidates that would add most to the front of score and cost, best first: by
        their :func:`~optuna_aquasurf._front.front_gain` over the scored functions, with the
        optimistic score and the known cost. Above the reference (the median score so far, twice
        the highest cost), the front counts only functions worth a look."""
        costs = self.costs(study)
        median = np.median(scores if len(scores) else optimistic[candidates])
        reference = (float(median), 2 * float(costs.max()))
        gain = np.full(len(costs), -np.inf)
        gain[candidates] = _front.front_gain(
            optimistic[candidates], costs[candidates], scores, costs[functions], reference
        )
        return _acquisition.rank("greedy", gain, candidates, 0.0, _CLAIM_ATTEMPTS)

    def _predict_scores(self, study, points, functions, scores, name, uncertainty: bool):
        """The predicted score of every function from the observed ``scores`` (higher is better)
        and the prior, and with ``uncertainty`` how unsure each prediction is (else None)."""
        predicted, spread = None, None
        if len(scores) > 0:
            scored = self._neighbours["scored"]
            if uncertainty:
                k = _acquisition.neighbours_of(self._regressor)
                length_scale = self._length_scale(points)
                knn, spread = _acquisition.predict_with_uncertainty(
                    scored, points, functions, scores, k, length_scale
                )
                if _acquisition.is_default_knn(self._regressor):
                    predicted = knn
            if predicted is None:
                predicted = _acquisition.predict(self._regressor, points, functions, scores, scored)
        if self._prior:
            surfaces = self._prior_surfaces_of(study, points, name)
            predicted, share = _transfer.with_prior(surfaces, functions, scores, predicted)
            if spread is not None:
                spread = (1 - share) * spread
        return predicted, spread

    def _prior_surfaces_of(self, study, points, name) -> list[_transfer.PriorSurface]:
        """The prior's :class:`~optuna_aquasurf._transfer.PriorSurface` of each source, computed
        once for the surrogate's ``points``."""
        key = self._study_key(study, name)
        if self._prior_surfaces[0] is not points or self._prior_surfaces[1] != key:
            length_scale = self._length_scale(points)
            surfaces = [
                _transfer.prior_surface(points, functions, quantiles, length_scale)
                for functions, quantiles in self.prior_observations(study, name)
            ]
            self._prior_surfaces = (points, key, surfaces)
        return self._prior_surfaces[2]

    def _length_scale(self, points: np.ndarray) -> float:
        """The :func:`length_scale` of ``points``, computed once."""
        if self._points_length_scale[0] is not points:
            self._points_length_scale = (points, length_scale(points, self._seed or 0))
        return self._points_length_scale[1]

    def _pick_rng(self, n_tried: int) -> np.random.Generator:
        """The randomness of one pick: the same for the same seed and number of functions tried,
        in any process."""
        if self._seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self._seed, n_tried])

    def _trials(self, study: optuna.Study, name: str, exclude: int | None):
        """The trials of ``study`` with an activation (but ``exclude``), and its location."""
        return [
            (t, self.locate(t.user_attrs[name]))
            for t in study.get_trials(deepcopy=False)
            if name in t.user_attrs and t._trial_id != exclude
        ]

    def _observations(self, study, trials) -> tuple[np.ndarray, np.ndarray]:
        """Functions with a score (one per function, mean over trials) and those scores:
        completed trials give their value, pruned ones their last reported value, and a function
        whose trials all failed the worst value observed in the study."""
        results = [(f, trial_score(t), t.state == TrialState.FAIL) for t, (f, _) in trials]
        return function_scores(results, maximizes_score(study))

    def locate(self, expression: str) -> tuple[int, bool]:
        """The position in the space of the function ``expression`` computes, and True; or, for a
        function outside the space, the nearest one by output features, and False."""
        return self.space_map.locate(expression)

    def _claim(self, study, trial, function: int) -> bool:
        def is_stale(trial_id: int) -> bool:
            """Whether the holder of a claim failed or is not a trial of this study."""
            trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
            holder = next((t for t in trials if t._trial_id == trial_id), None)
            return holder is None or holder.state == TrialState.FAIL

        return self._store(study).claim(study._study_id, int(function), trial._trial_id, is_stale)

    def _store(self, study: optuna.Study | None) -> Store:
        if study is None:
            return _LOCAL_STORE
        return store_for(study._storage)


_LOCAL_STORE = MemoryStore()


def suggest_activation(
    trial: optuna.Trial, name: str = "activation", normalize: bool = False
) -> ActivationFunction:
    """The activation function this trial should train, as a module.

    The study's sampler must be an :class:`AquaSurfSampler`. The expression is recorded in the
    trial's user attribute ``name``. ``study.enqueue_trial({"activation": "relu(x)"})`` makes a
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
    cost = sampler.cost_of(study, expression) if sampler.knows_costs(study) else None
    return ActivationFunction(expression, normalize=normalize, cost=cost)
