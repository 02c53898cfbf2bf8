"""Per-suggestion latency of AquaSurfSampler and the cost of its one-time embedding.

    python benchmarks/bench_sampler.py            # the paper space, then a ~100,000-function space
    python benchmarks/bench_sampler.py --quick    # the paper space only

Targets on 2 cores: median suggestion under 50 ms after the one-time embedding (paper space with
200 completed trials, and a 100,000-function space); embedding of the paper space under 30 s,
numba compilation included. Beside the latency it prints the cost of refitting the embedding at
every suggestion (the reference implementation's way) as a ratio.
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


def suggestion_latency(space: SearchSpace, n_completed: int, n_suggestions: int) -> list[float]:
    """Seconds per suggestion in a study that has ``n_completed`` scored trials."""
    sampler = AquaSurfSampler(space, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(0)
    for function in rng.choice(len(space), size=n_completed, replace=False):
        study.add_trial(
            optuna.trial.create_trial(
                value=float(rng.random()),
                user_attrs={"activation": space[int(function)].expression},
            )
        )
    sampler.embedding(study)  # the one-time part
    seconds = []
    for _ in range(n_suggestions):
        trial = study.ask()
        start = time.perf_counter()
        sampler.suggest(study, trial)
        seconds.append(time.perf_counter() - start)
        study.tell(trial, float(rng.random()))
    return seconds


def report(label: str, space: SearchSpace, embedding_seconds: float) -> None:
    latency = suggestion_latency(space, n_completed=200, n_suggestions=30)
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
    start = time.perf_counter()
    embed(features, seed=0)
    report("paper space", paper, time.perf_counter() - start)
    if args.quick:
        return

    large = SearchSpace.from_schemas(["unary(binary(unary(x),unary(x)))"], unary=ALL_UNARY)
    start = time.perf_counter()
    embed(output_features(large), seed=0)
    report("large space", large, time.perf_counter() - start)


if __name__ == "__main__":
    main()
