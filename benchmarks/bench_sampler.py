"""The one-time map of a space and the per-suggestion latency of AquaSurfSampler, by space size.

    python benchmarks/bench_sampler.py                  # paper (2,918), 100k and 400k functions
    python benchmarks/bench_sampler.py --spaces paper   # one or more, comma-separated

Each space is measured in a process of its own, so that its peak memory is its own: the seconds to
enumerate it, to compute its map with output features (numba compilation included: the first map
of a process), the process's peak RSS after the map, the seconds to derive the surrogate's feature
space, the median latency of 30 surrogate picks (the default ``acquisition="ucb"``) in a study with
200 completed trials (no baselines to try first), the same with a prior (an earlier study and a
bundled table; read before the first pick, which is timed), the same with a Fisher probe of a small
MLP (the surrogate then reads two views, outputs and outputs with Fisher features; the features, on
the default budget of 4,096 functions, are computed before the picks), and the time to locate an
expression outside the space. Targets on 2 cores: map of the 400k space within 10 minutes and 8 GB,
median suggestion under 50 ms, the paper space's map under 30 s. Beside the latency it prints the
cost of refitting the map at every suggestion (the reference implementation's way) as a ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time

#: name: (schemas, unary operators)
SPACES = {
    "paper": (["binary(unary(x),unary(x))"], "PAPER_UNARY"),
    "100k": (["unary(binary(unary(x),unary(x)))"], "ALL_UNARY"),
    "400k": (
        ["binary(unary(x),unary(x))", "binary(unary(x),binary(unary(x),unary(x)))"],
        "PAPER_UNARY",
    ),
}
#: The bundled table beside an earlier study in the prior of the latency with a prior.
PRIOR_TABLE = "act-bench-digits:cnn"
#: An expression outside every space above.
OUTSIDE = "mul(gelu(x),sum_n(mish(x),x,x))"


def measure(name: str) -> None:
    """Print the figures of one space (run in a process of its own)."""
    import optuna

    import optuna_aquasurf
    from optuna_aquasurf import AquaSurfSampler, SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    schemas, unary = SPACES[name]
    start = time.perf_counter()
    space = SearchSpace.from_schemas(schemas, unary=getattr(optuna_aquasurf, unary))
    space_seconds = time.perf_counter() - start
    sampler = AquaSurfSampler(space, baselines=(), seed=0)
    start = time.perf_counter()
    sampler.embedding()
    map_seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    sampler.surrogate_points()
    features_seconds = time.perf_counter() - start

    median = _median_latency(sampler, space, seed=0)
    with_probe = AquaSurfSampler(space, _small_probe(), baselines=(), seed=0)
    start = time.perf_counter()
    with_probe.surrogate_points()
    probe_seconds = time.perf_counter() - start
    median_with_probe = _median_latency(with_probe, space, seed=0)
    earlier = optuna.create_study(direction="minimize")
    _add_random_trials(earlier, space, seed=1)
    with_prior = AquaSurfSampler(space, baselines=(), seed=0, prior=[earlier, PRIOR_TABLE])
    median_with_prior = _median_latency(with_prior, space, seed=0)
    start = time.perf_counter()
    sampler.locate(OUTSIDE)
    locate_seconds = time.perf_counter() - start

    print(
        f"{name}: {len(space):,} functions ({space.n_names:,} names of {' + '.join(schemas)} "
        f"over {unary})\n"
        f"  enumeration                 {space_seconds:8.1f} s\n"
        f"  map (output features)       {map_seconds:8.1f} s\n"
        f"  peak RSS after the map      {peak_gib:8.2f} GiB\n"
        f"  feature space (surrogate)   {features_seconds:8.1f} s\n"
        f"  median suggestion latency   {median * 1000:8.1f} ms   (target < 50 ms)\n"
        f"  with a prior                {median_with_prior * 1000:8.1f} ms   (an earlier study of "
        f"200 trials and {PRIOR_TABLE})\n"
        f"  with a probe                {median_with_probe * 1000:8.1f} ms   (two views; its "
        f"Fisher features took {probe_seconds:.1f} s)\n"
        f"  locate {OUTSIDE} {locate_seconds * 1000:.0f} ms\n"
        f"  refit-every-suggestion cost {map_seconds / median:8.0f} x the median latency",
        flush=True,
    )


def _small_probe():
    """A Fisher probe of a small MLP on random data: the surrogate then reads two views."""
    import torch

    from optuna_aquasurf.features import FisherProbe

    def build(activation):
        return torch.nn.Sequential(torch.nn.Linear(8, 64), activation, torch.nn.Linear(64, 4))

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=generator)
    return FisherProbe(build, inputs, torch.arange(64) % 4, progress=False)


def _median_latency(sampler, space, seed: int) -> float:
    """Median seconds of 30 suggestions in a study of 200 completed trials of random scores."""
    import numpy as np
    import optuna

    study = optuna.create_study(direction="maximize", sampler=sampler)
    _add_random_trials(study, space, seed)
    rng = np.random.default_rng(seed)
    latency = []
    for _ in range(30):
        trial = study.ask()
        start = time.perf_counter()
        sampler.suggest(study, trial)
        latency.append(time.perf_counter() - start)
        study.tell(trial, float(rng.random()))
    return statistics.median(latency)


def _add_random_trials(study, space, seed: int) -> None:
    """200 completed trials of random functions of ``space`` with random scores."""
    import numpy as np
    import optuna

    rng = np.random.default_rng(seed)
    for function in rng.choice(len(space), size=200, replace=False):
        study.add_trial(
            optuna.trial.create_trial(
                value=float(rng.random()),
                user_attrs={"activation": space[int(function)].expression},
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default=",".join(SPACES), help=", ".join(SPACES))
    args = parser.parse_args()
    for name in args.spaces.split(","):
        if name not in SPACES:
            parser.error(f"unknown space {name!r}; choose from {', '.join(SPACES)}")
        process = multiprocessing.get_context("spawn").Process(target=measure, args=(name,))
        process.start()
        process.join()


if __name__ == "__main__":
    main()
