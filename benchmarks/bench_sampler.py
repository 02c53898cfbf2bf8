"""Per-suggestion latency of AquaSurfSampler and the cost of its one-time embedding.

    python benchmarks/bench_sampler.py            # the paper space, then a ~100,000-function space
    python benchmarks/bench_sampler.py --quick    # the paper space only

Targets on 2 cores: median suggestion under 50 ms after the one-time embedding (paper space with
200 completed trials, and a 100,000-function space); embedding of the paper space under 30 s,
numba compilation included. The latency is that of surrogate picks (no baselines to try first);
the one-time embedding it is measured after includes the output features. Beside the latency it
prints the cost of refitting the embedding at every suggestion (the reference implementation's
way) as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from optuna_aquasurf import ALL_UNARY, PAPER_UNARY, AquaSurfSampler, SearchSpace  # noqa: E402
from optuna_aquasurf._embedding import embed  # noqa: E402
from optuna_aquasurf.features import output_features  # noqa: E402


def one_time_embedding(space: SearchSpace) -> tuple[AquaSurfSampler, float]:
    """A sampler without baselines, its map computed, and the seconds the map took."""
    sampler = AquaSurfSampler(space, baselines=(), seed=0)
    start = time.perf_counter()
    sampler.embedding()
    return sampler, time.perf_counter() - start


def suggestion_latency(
    sampler: AquaSurfSampler, n_completed: int, n_suggestions: int
) -> list[float]:
    """Seconds per suggestion in a study that has ``n_completed`` scored trials."""
    space = sampler.space
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(0)
    for function in rng.choice(len(space), size=n_completed, replace=False):
        study.add_trial(
            optuna.trial.create_trial(
                value=float(rng.random()),
                user_attrs={"activation": space[int(function)].expression},
            )
        )
    seconds = []
    for _ in range(n_suggestions):
        trial = study.ask()
        start = time.perf_counter()
        sampler.suggest(study, trial)
        seconds.append(time.perf_counter() - start)
        study.tell(trial, float(rng.random()))
    return seconds


def report(label: str, space: SearchSpace) -> None:
    sampler, embedding_seconds = one_time_embedding(space)
    latency = suggestion_latency(sampler, n_completed=200, n_suggestions=30)
    median = statistics.median(latency)
    print(f"{label}: {len(space):,} functions")
    print(f"  one-time embedding          {embedding_seconds:8.1f} s")
    print(f"  median suggestion latency   {median * 1000:8.1f} ms   (target < 50 ms)")
    print(f"  refit-every-suggestion cost {embedding_seconds / median:8.0f} x the median latency")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the paper space only")
    args = parser.parse_args()

    paper = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
    features = output_features(paper)
    start = time.perf_counter()
    embed(features, seed=0)
    first = time.perf_counter() - start
    print(
        f"paper space embedding, first in this process: {first:.1f} s "
        f"({time.perf_counter() - T0:.1f} s since the script started, imports included; "
        "target < 30 s)"
    )
    report("paper space", paper)
    if args.quick:
        return
    report("large space", SearchSpace.from_schemas(["unary(binary(unary(x),unary(x)))"], ALL_UNARY))


if __name__ == "__main__":
    main()
