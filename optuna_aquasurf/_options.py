"""The options of an :class:`~optuna_aquasurf.AquaSurfSampler`, validated in one place."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
import torch

from optuna_aquasurf._baselines import DEFAULT_BASELINES
from optuna_aquasurf._expression import canonical
from optuna_aquasurf._map import check_map_options
from optuna_aquasurf._prior import Source, check_source
from optuna_aquasurf._rules import RULES
from optuna_aquasurf._space import SearchSpace

if TYPE_CHECKING:
    from optuna_aquasurf.features import FisherProbe

#: What the surrogate reads: the functions' reduced features, or their 2-D map.
SURROGATES = ("features", "map")


@dataclass(frozen=True)
class SamplerOptions:
    """Everything an :class:`~optuna_aquasurf.AquaSurfSampler` is built with but its independent
    sampler (see its docstring for each); :meth:`validated` checks them and puts them in their
    normal form."""

    space: SearchSpace | None = None
    probe: FisherProbe | None = None
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    prior: tuple[Source, ...] = ()
    max_cost: float | None = None
    cost_device: str = "cpu"
    surrogate: str = "features"
    acquisition: str = "ucb"
    n_design: int = 0
    exploration: float | None = None
    regressor: Any = None
    seed: int | None = None
    include_non_finite: bool = False
    use_outputs: bool = True
    fisher_budget: int | None = None
    map_key: str | None = None

    @classmethod
    def validated(
        cls,
        space: SearchSpace | Sequence[str] | None = None,
        baselines: Sequence[str] = DEFAULT_BASELINES,
        prior: Source | Sequence[Source] = (),
        **options,
    ) -> SamplerOptions:
        """The options, checked: a ValueError names the first that is wrong."""
        from optuna_aquasurf._surrogate import default_regressor

        self = cls(**options)
        if self.surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {self.surrogate!r}")
        if self.acquisition not in RULES:
            raise ValueError(f"acquisition must be one of {tuple(RULES)}, got {self.acquisition!r}")
        if self.n_design < 0:
            raise ValueError(f"n_design must be >= 0, got {self.n_design}")
        if self.exploration is not None and not self.exploration >= 0:
            raise ValueError(f"exploration must be >= 0, got {self.exploration}")
        check_map_options(self.probe, self.use_outputs, self.map_key, self.fisher_budget)
        if self.max_cost is not None and not self.max_cost > 0:
            raise ValueError(f"max_cost must be a positive number, got {self.max_cost}")
        try:
            torch.device(self.cost_device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"cost_device: no device {self.cost_device!r} (cpu, cuda, cuda:N)"
            ) from None
        if isinstance(prior, str | optuna.Study):
            prior = [prior]
        for source in prior:
            check_source(source)
        if space is not None and not isinstance(space, SearchSpace):
            space = SearchSpace.from_expressions(list(space))
        return dataclasses.replace(
            self,
            space=space,
            baselines=tuple(canonical(b) for b in baselines),
            prior=tuple(prior),
            cost_device=str(self.cost_device),
            regressor=self.regressor if self.regressor is not None else default_regressor(),
        )
