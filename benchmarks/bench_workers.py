"""Suggestions per second of AquaSurfSampler with 1, 2, 4 and 8 worker processes on PostgreSQL.

    python benchmarks/bench_workers.py [--url postgresql+psycopg://postgres@127.0.0.1/postgres]

Each worker process runs ``study.optimize`` on one shared study with a trivial objective (the
score of an expression is a hash of it), on the paper's 2,918-function space whose map is
computed once and stored in the database first. The same is measured with Optuna's
RandomSampler suggesting one float, as the baseline of what Optuna's storage alone costs per
trial. The database ``aquasurf_bench_workers`` is created (or emptied) on the server.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import time

import optuna
import sqlalchemy as sa

from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
from optuna_aquasurf._operators import PAPER_UNARY

DATABASE = "aquasurf_bench_workers"
WORKERS = (1, 2, 4, 8)
TRIALS_PER_WORKER = 40


def paper_space() -> SearchSpace:
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)


def score(expression: str) -> float:
    return int(hashlib.sha256(expression.encode()).hexdigest()[:8], 16) / 2**32


def worker(url: str, study_name: str, sampler_name: str, barrier, n_trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import torch

    torch.set_num_threads(1)
    if sampler_name == "aquasurf":
        sampler = AquaSurfSampler(paper_space(), seed=0)

        def objective(trial):
            return score(suggest_activation(trial).expression)
    else:
        sampler = optuna.samplers.RandomSampler(seed=0)

        def objective(trial):
            return trial.suggest_float("x", 0, 1)

    study = optuna.load_study(study_name=study_name, storage=url, sampler=sampler)
    if sampler_name == "aquasurf":
        sampler.embedding(study)  # loaded from the database
    barrier.wait()
    study.optimize(objective, n_trials=n_trials)


def measure(url: str, sampler_name: str, n_workers: int) -> float:
    """Suggestions per second of ``n_workers`` processes on a new study."""
    name = f"{sampler_name}-{n_workers}"
    optuna.create_study(study_name=name, storage=url, direction="maximize")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n_workers + 1)
    args = (url, name, sampler_name, barrier, TRIALS_PER_WORKER)
    processes = [context.Process(target=worker, args=args) for _ in range(n_workers)]
    for process in processes:
        process.start()
    barrier.wait()
    start = time.perf_counter()
    for process in processes:
        process.join()
        assert process.exitcode == 0, f"a worker of {name} failed"
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    if sampler_name == "aquasurf":
        functions = [
            AquaSurfSampler(paper_space()).locate(t.user_attrs["activation"])[0] for t in trials
        ]
        assert len(set(functions)) == len(trials), "a function was suggested twice"
    return len(trials) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1/postgres")
    args = parser.parse_args()
    server = sa.create_engine(args.url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    url = server.url.set(database=DATABASE).render_as_string(hide_password=False)

    started = time.perf_counter()
    AquaSurfSampler(paper_space(), seed=0).embedding(optuna.create_study(storage=url))
    seconds = time.perf_counter() - started
    print(f"map of the 2,918-function space stored in {seconds:.1f} s", flush=True)
    print(f"{TRIALS_PER_WORKER} trials per worker, trivial objective, PostgreSQL on this machine")
    print(f"{'workers':>8} {'aquasurf /s':>12} {'optuna /s':>10} {'ratio':>6}", flush=True)
    for n in WORKERS:
        aquasurf = measure(url, "aquasurf", n)
        random = measure(url, "random", n)
        print(f"{n:>8} {aquasurf:>12.1f} {random:>10.1f} {aquasurf / random:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
