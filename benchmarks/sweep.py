"""Sweep the surrogate's constants on Act-Bench-Digits tables with a quick replay outside Optuna.

    python -m benchmarks.sweep --arch cnn,regression --sharpness 1,2,3,4,5,8 --seeds 20
    python -m benchmarks.sweep --arch cnn,regression --exploration 0.1,0.25,0.5 --seeds 20

A quick replay is the default sampler's search without a study: the baselines in order, then
each pick the best candidate of :class:`~optuna_aquasurf._rules.UpperConfidenceBound` with the
library's :class:`~optuna_aquasurf._surrogate.Surrogate`, every score looked up in the table. It
skips Optuna's storage and the sampler's seeded map (one map, seed 0, serves every seed), so a
sweep of many settings takes seconds once the Fisher features are computed; the medians it prints
stay within about one evaluation of ``benchmarks.replay``'s. For each table and setting it prints
the median evaluations to the top 1% and the share of seeds that find the table's best function
within 50 evaluations. #28 chose the constants on cnn and regression; vit and resnet are out of
sample.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from benchmarks.replay import Context, _median_reach
from optuna_aquasurf import _surrogate
from optuna_aquasurf._map import SpaceMap
from optuna_aquasurf._rules import Pick, UpperConfidenceBound
from optuna_aquasurf._sampler import DEFAULT_BASELINES
from optuna_aquasurf._store import MemoryStore
from optuna_aquasurf._surrogate import Surrogate, default_regressor


class QuickReplay:
    """One table's views, twins, finite functions and baselines, searched without Optuna."""

    def __init__(self, arch: str):
        context = Context(arch)
        space_map = SpaceMap(context.space, context.probe, seed=0)
        self.views = space_map.feature_views(MemoryStore())
        self.twin_of = space_map.twin_of
        self.finite = context.space.finite
        self.scores = context.scores
        found = [context.space.find_equivalent(b) for b in DEFAULT_BASELINES]
        self.baselines = [int(f) for f in found if f is not None]

    def search(self, seed: int, exploration: float, n_trials: int) -> list[float]:
        """The score of each trial of one seeded search."""
        surrogate = Surrogate(self.views, default_regressor(), seed)
        rule = UpperConfidenceBound(exploration)
        available = self.finite.copy()
        tried, values = [], []
        for _ in range(n_trials):
            pending = [b for b in self.baselines if available[b]]
            candidates = np.flatnonzero(available)
            if pending:
                function = pending[0]
            elif len(candidates) == 0:
                break
            else:
                order = np.argsort(tried)
                functions = np.array(tried)[order]
                rng = np.random.default_rng([seed, len(tried)])
                pick = Pick(
                    surrogate, functions, np.array(values)[order], functions, candidates, rng, 1
                )
                function = int(rule.rank(pick)[0])
            twin = int(self.twin_of[function])
            values.append(float(self.scores[function]))
            tried.append(twin)
            available &= self.twin_of != twin
        return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn,regression")
    parser.add_argument("--sharpness", default=str(_surrogate.SHARE_SHARPNESS))
    parser.add_argument("--exploration", default=str(UpperConfidenceBound.default_exploration))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    sharpness = [float(s) for s in args.sharpness.split(",")]
    exploration = [float(e) for e in args.exploration.split(",")]
    print(
        f"quick replays, {args.seeds} seeds x {args.trials} trials: median evaluations to the "
        "top 1%, and the share of seeds finding the best within 50"
    )
    for arch in args.arch.split(","):
        replay = QuickReplay(arch)
        best, top1 = replay.scores.max(), np.quantile(replay.scores, 0.99)
        for share_sharpness, mean_kappa in itertools.product(sharpness, exploration):
            _surrogate.SHARE_SHARPNESS = share_sharpness  # the module's constant, for this sweep
            runs = [replay.search(s, mean_kappa, args.trials) for s in range(args.seeds)]
            so_far = np.maximum.accumulate(np.array(runs), axis=1)
            found_best = np.mean((so_far[:, : min(50, args.trials)] >= best - 1e-12).any(axis=1))
            print(
                f"{arch:>10} sharpness {share_sharpness:<4} exploration {mean_kappa:<5} "
                f"to top 1% {_median_reach(so_far, top1, 1):>5}   best within 50 {found_best:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
