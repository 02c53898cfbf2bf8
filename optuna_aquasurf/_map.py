"""The map of a search space: its functions' features, the space the surrogate predicts in, their
2-D embedding and lookups in it."""

from __future__ import annotations

import hashlib
import math
import threading
from functools import cached_property, partial
from typing import TYPE_CHECKING

import numpy as np

from optuna_aquasurf._embedding import LARGE_MAP, LARGE_MAP_COMPONENTS, principal_components
from optuna_aquasurf._feature_space import feature_space, feature_views
from optuna_aquasurf._fisher_budget import (
    DEFAULT_FISHER_BUDGET,
    fill_from_neighbours,
    space_filling_subset,
)
from optuna_aquasurf._space import SearchSpace, are_near_twins
from optuna_aquasurf._store import Store

if TYPE_CHECKING:
    import torch

    from optuna_aquasurf.features import FisherProbe

#: Functions whose Fisher features are computed, stored and shared together.
FISHER_CHUNK = 64
#: Spaces up to this many functions have their costs measured; larger ones estimated.
MEASURED_COSTS_UP_TO = 20_000
#: Functions whose distance to an expression outside the space is measured exactly.
NEAREST_CHECKED = 64


def check_map_options(
    probe: FisherProbe | None, use_outputs: bool, key: str | None, fisher_budget: int | None
) -> None:
    """Raise ValueError for options that cannot make a map (see :class:`SpaceMap`)."""
    if fisher_budget is not None and fisher_budget < 1:
        raise ValueError(f"fisher_budget must be a positive number, got {fisher_budget}")
    if not use_outputs and probe is None and key is None:
        raise ValueError("use_outputs=False needs a probe: the map needs some features")


class SpaceMap:
    """Every function of a space described by its output and Fisher features: in the reduced
    feature space the surrogate predicts in (:meth:`features`), and on a 2-D map for plots
    (:meth:`embedding`).

    The Fisher features and the map are computed once and kept in a
    :class:`~optuna_aquasurf._store.Store` under :attr:`key`, so that every worker of a study and
    every resumed run uses the same ones. Workers split the Fisher features chunk by chunk,
    through the store's leases. The feature space is derived from them in each process (a few
    principal components: seconds).

    Parameters
    ----------
    space
        The functions.
    probe
        A :class:`~optuna_aquasurf.features.FisherProbe` of the user's model, or None for a map
        of output features alone.
    seed
        Seed of the embedding.
    use_outputs
        Use the output features (False needs a probe).
    key
        Use the map stored under this key instead of computing one (it then never computes).
    fisher_budget
        Compute Fisher features for at most this many functions (default
        :data:`~optuna_aquasurf._fisher_budget.DEFAULT_FISHER_BUDGET`): in a larger space, for a
        space-filling subset chosen on the output features (:attr:`fisher_subset`); every other
        function takes the mean Fisher features of its 3 nearest computed ones by output
        features.

    Examples
    --------
    >>> from optuna_aquasurf import SearchSpace, SpaceMap
    >>> space_map = SpaceMap(SearchSpace.from_expressions(["relu(x)", "tanh(x)", "abs(x)"]))
    >>> space_map.locate("max(x,zero(x))")  # relu under another name
    (0, True)
    >>> space_map.locate("softsign(x)")  # outside the space: the nearest function, tanh
    (1, False)
    """

    def __init__(
        self,
        space: SearchSpace,
        probe: FisherProbe | None = None,
        seed: int | None = None,
        use_outputs: bool = True,
        key: str | None = None,
        fisher_budget: int | None = None,
    ):
        check_map_options(probe, use_outputs, key, fisher_budget)
        self.space = space
        self.probe = probe
        self.seed = 0 if seed is None else seed
        self.use_outputs = use_outputs
        budget = DEFAULT_FISHER_BUDGET if fisher_budget is None else fisher_budget
        self.fisher_budget = min(budget, len(space))
        self._given_key = key
        self._start_caches()

    _SETTINGS = ("space", "probe", "seed", "use_outputs", "fisher_budget", "_given_key")

    def _start_caches(self) -> None:
        """The lock and what is computed on first use: never pickled, rebuilt after."""
        self._lock = threading.RLock()
        self._embedding: np.ndarray | None = None
        self._features: np.ndarray | None = None
        self._outputs: np.ndarray | None = None
        self._locations: dict[str, tuple[int, bool]] = {}
        self._estimated_costs: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {name: self.__dict__[name] for name in self._SETTINGS}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_caches()

    @property
    def key(self) -> str:
        """The map's identity: a digest of the space, the probe's fingerprint, ``use_outputs``
        and the seed (or the ``key`` given)."""
        if self._given_key is not None:
            return self._given_key
        probe = self.probe.fingerprint if self.probe is not None else "no-probe"
        identity = f"{self.space.fingerprint}|{probe}|outputs={self.use_outputs}|{self.seed}"
        return hashlib.sha256((identity + self._budget_identity()).encode()).hexdigest()

    def _budget_identity(self) -> str:
        """What the budget adds to keys: nothing while every function gets Fisher features."""
        if self.probe is None or self.fisher_budget == len(self.space):
            return ""
        return f"|fisher_budget={self.fisher_budget}"

    @cached_property
    def fisher_subset(self) -> np.ndarray:
        """Positions of the functions whose Fisher features are computed: all of them, or
        ``fisher_budget`` chosen to cover the output features (farthest first, on their
        leading principal components)."""
        if self.fisher_budget == len(self.space):
            return np.arange(len(self.space))
        return space_filling_subset(self._output_components, self.fisher_budget)

    @cached_property
    def _output_components(self) -> np.ndarray:
        """The output features on their leading principal components, as a large map reads
        them; the Fisher budget is chosen and placed on them too."""
        return principal_components(self.output_features(), LARGE_MAP_COMPONENTS, self.seed)

    @cached_property
    def _fisher_expressions(self) -> list[str]:
        """The expressions of :attr:`fisher_subset`."""
        if self.fisher_budget == len(self.space):
            return self.space.expressions
        return [self.space[int(i)].expression for i in self.fisher_subset]

    def features(self, store: Store) -> np.ndarray:
        """The functions in the surrogate's feature space (see
        :func:`~optuna_aquasurf._feature_space.feature_space`), one row each. The Fisher
        features come from ``store`` (computed there first if missing)."""
        with self._lock:
            if self._features is None:
                if self._given_key is not None and self.probe is None:
                    raise ValueError(
                        "a map read by its key has no features: build the sampler with the "
                        "probe that computed it"
                    )
                fisher = self._all_fisher_features(store) if self.probe is not None else None
                outputs = self._output_components if self.use_outputs else None
                self._features = feature_space(outputs, fisher, self.seed)
            return self._features

    def feature_views(self, store: Store) -> list[np.ndarray]:
        """The views of :meth:`features` that the surrogate reads (see
        :func:`~optuna_aquasurf._feature_space.feature_views`)."""
        outputs = self._output_components if self.use_outputs else None
        return feature_views(self.features(store), outputs)

    def is_ready(self, store: Store) -> bool:
        """Whether :meth:`embedding` returns at once: computed here, or saved in ``store``."""
        with self._lock:
            if self._embedding is None:
                saved = store.load("embeddings", self.key)
                if saved is None:
                    return False
                self._embedding = saved[0]
            return True

    def embedding(self, store: Store) -> np.ndarray:
        """2-D coordinates of every function, one row each: loaded from ``store``, or computed
        there once (workers computing it together split the Fisher features)."""
        with self._lock:
            if self.is_ready(store):
                return self._embedding
            if self._given_key is not None:
                raise ValueError(f"no map is stored under the key {self.key!r}")
            # Outside the map's lease: every worker takes its share of the features.
            fisher = self._all_fisher_features(store) if self.probe is not None else None

            def compute() -> list[np.ndarray]:
                from optuna_aquasurf._embedding import embed

                outputs = None
                if self.use_outputs:  # a large map reads the components only: one PCA serves
                    large = len(self.space) >= LARGE_MAP
                    outputs = self._output_components if large else self.output_features()
                return [embed(outputs, fisher, self.seed)]

            self._embedding = store.compute_once("embeddings", self.key, compute)[0]
            return self._embedding

    def _all_fisher_features(self, store: Store) -> np.ndarray:
        """Fisher features of every function: computed ones, and the others placed from them."""
        computed = self.fisher_features(store)
        if len(computed) == len(self.space):
            return computed
        if len(self.space) >= LARGE_MAP:  # the map reads only principal components
            computed = principal_components(computed, LARGE_MAP_COMPONENTS, self.seed)
        return fill_from_neighbours(self._output_components, self.fisher_subset, computed)

    def fisher_features(self, store: Store) -> np.ndarray:
        """Fisher features of the functions of :attr:`fisher_subset` (all, within the budget),
        one row each, computed (and saved in ``store``) chunk by chunk.

        Workers of one study split the chunks: each first computes those that no other worker
        is computing, then waits for the others' results.
        """
        if self.probe is None:
            raise ValueError("this map has no probe: give probe=FisherProbe(...)")
        identity = f"{self.space.fingerprint}|{self.probe.fingerprint}{self._budget_identity()}"
        key = hashlib.sha256(identity.encode()).hexdigest()
        expressions = self._fisher_expressions

        def compute(chunk: int) -> list[np.ndarray]:
            part = expressions[chunk * FISHER_CHUNK : (chunk + 1) * FISHER_CHUNK]
            return list(self.probe.features(part, return_diverged=True))

        rows: dict[int, np.ndarray] = {}
        for wait in (False, True):
            for chunk in range(math.ceil(len(expressions) / FISHER_CHUNK)):
                if chunk not in rows:
                    saved = store.compute_once("fisher", key, partial(compute, chunk), chunk, wait)
                    if saved is not None:
                        rows[chunk] = saved[0]
        return np.concatenate([rows[chunk] for chunk in sorted(rows)])

    def output_features(self) -> np.ndarray:
        """The functions' outputs at the probe points (see
        :func:`~optuna_aquasurf.features.output_features`), computed once."""
        from optuna_aquasurf.features import output_features

        with self._lock:
            if self._outputs is None:
                self._outputs = output_features(self.space)
            return self._outputs

    def locate(self, expression: str) -> tuple[int, bool]:
        """The position in the space of the function ``expression`` computes, and True; or, for a
        function outside the space, the nearest one by output features, and whether it is a
        near twin of it (equal up to float rounding, see :meth:`SearchSpace.near_twins`)."""
        with self._lock:
            if expression not in self._locations:
                function = self.find(expression)
                if function is not None:
                    self._locations[expression] = (function, True)
                else:
                    self._locations[expression] = self._nearest(expression)
            return self._locations[expression]

    @cached_property
    def twin_of(self) -> np.ndarray:
        """For every function, the first of its near twins (itself when it has none): the
        function that stands for all of them in a search."""
        first = np.arange(len(self.space))
        for group in self.space.near_twins():
            first[group] = group[0]
        return first

    def costs(self, store: Store, device: str | torch.device = "cpu") -> np.ndarray:
        """Every function's cost, that of its expression in :attr:`SearchSpace.expressions`
        (see :mod:`optuna_aquasurf._cost`): measured on ``device`` once per space and kind of
        device and kept in ``store`` (about 20 s for the paper space on the CPU); estimated
        from its operators in a space of more than :data:`MEASURED_COSTS_UP_TO` functions."""
        from optuna_aquasurf._cost import estimated_cost, stored_costs

        expressions = self.space.expressions
        if len(expressions) <= MEASURED_COSTS_UP_TO:
            return stored_costs(store, expressions, device)
        with self._lock:
            if self._estimated_costs is None:
                self._estimated_costs = np.array([estimated_cost(e) for e in expressions])
            return self._estimated_costs

    def find(self, expression: str) -> int | None:
        """The position in the space of the function ``expression`` computes (under any name),
        or None for a function outside the space."""
        if expression in self.space:
            return self.space.index(expression)
        return self.space.find_equivalent(expression)

    def _nearest(self, expression: str) -> tuple[int, bool]:
        """The function nearest to ``expression`` by output features, and whether it is its
        near twin."""
        from optuna_aquasurf.features import output_features

        alone = SearchSpace.from_expressions([expression])
        point = output_features(alone)[0]
        outputs = self.output_features()
        # |a - b|^2 = |a|^2 - 2 a.b + |b|^2: one matrix-vector product, no copy of the outputs;
        # its float32 rounding can reorder near ties, so the closest few are measured exactly.
        rough = self._squared_norms - 2 * (outputs @ point)
        closest = np.sort(
            np.argpartition(rough, min(NEAREST_CHECKED, len(rough) - 1))[:NEAREST_CHECKED]
        )
        exact = np.linalg.norm(outputs[closest] - point, axis=1)
        nearest = int(closest[np.argmin(exact)])
        twin = alone.finite[0] and are_near_twins(alone.outputs(), self.space.outputs([nearest]))
        return nearest, bool(twin)

    @cached_property
    def _squared_norms(self) -> np.ndarray:
        outputs = self.output_features()
        return np.einsum("ij,ij->i", outputs, outputs)
