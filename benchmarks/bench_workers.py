"""Suggestions per second of AquaSurfSampler with 1, 2, 4 and 8 worker processes on PostgreSQL, a
journal file, a journal in Redis and the gRPC proxy in front of PostgreSQL, beside plain Optuna's
on the same storage.

    python benchmarks/bench_workers.py [--url postgresql+psycopg://postgres@127.0.0.1/postgres]
        [--redis redis://127.0.0.1:6379/0] [--storages postgresql,journal-file,journal-redis,grpc]
        [--trials 40]

Each worker process runs ``study.optimize`` on one shared study with a trivial objective (the
score of an expression is a hash of it), on the paper's 2,918-function space; each computes the
surrogate's feature space, and measures one cost, before the clock starts. Each suggestion
measures the cost of its function (``act.cost``, recorded with the trial). The same is measured
with Optuna's RandomSampler suggesting one float, as the baseline of what the storage alone
costs per trial.
Duplicates are trials whose function (near twins counted as one) an earlier trial of the study
trained. The database ``aquasurf_bench_workers`` is created (or emptied) on the server; the
journal file lives in a temporary folder and the Redis journal under a prefix of its own, both
removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import shutil
import socket
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import optuna
import redis
import sqlalchemy as sa
from optuna.storages import BaseStorage, GrpcStorageProxy, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
from optuna_aquasurf._cost import measure_costs
from optuna_aquasurf._operators import PAPER_UNARY

DATABASE = "aquasurf_bench_workers"
WORKERS = (1, 2, 4, 8)
STORAGES = ("postgresql", "journal-file", "journal-redis", "grpc")


def paper_space() -> SearchSpace:
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)


def score(expression: str) -> float:
    return int(hashlib.sha256(expression.encode()).hexdigest()[:8], 16) / 2**32


def worker(storage, study_name: str, sampler_name: str, barrier, n_trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # experimental storages
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

    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    if sampler_name == "aquasurf":
        sampler.surrogate_points(study)  # the feature space, computed in each process
        measure_costs(["relu(x)"])  # the first measure imports what later ones use (seconds)
    barrier.wait()
    study.optimize(objective, n_trials=n_trials)


def measure(storage, label: str, sampler_name: str, n_workers: int, n_trials: int):
    """Suggestions per second of ``n_workers`` processes on a new study, and its duplicates."""
    name = f"{label}-{sampler_name}-{n_workers}"
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n_workers + 1)
    args = (storage, name, sampler_name, barrier, n_trials)
    processes = [context.Process(target=worker, args=args) for _ in range(n_workers)]
    for process in processes:
        process.start()
    barrier.wait()
    start = time.perf_counter()
    for process in processes:
        process.join()
        assert process.exitcode == 0, f"a worker of {name} failed"
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    duplicates = None
    if sampler_name == "aquasurf":
        locate = AquaSurfSampler(paper_space()).search(optuna.create_study()).locate
        duplicates = len(trials) - len({locate(t.user_attrs["activation"]) for t in trials})
    return len(trials) / seconds, duplicates


def serve_grpc(url: str, port: int) -> None:
    optuna.storages.run_grpc_proxy_server(
        optuna.storages.get_storage(url), host="127.0.0.1", port=port
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def empty_database(url: str) -> str:
    """The URL of the benchmark's database on the server at ``url``, created empty."""
    server = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    database = server.url.set(database=DATABASE).render_as_string(hide_password=False)
    optuna.storages.RDBStorage(database)  # Optuna's tables, before the workers race to them
    return database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--storages", default=",".join(STORAGES))
    parser.add_argument("--trials", type=int, default=40, help="trials per worker")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # experimental storages
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database = empty_database(args.url)
    folder = Path(tempfile.mkdtemp(prefix="aquasurf-bench-"))
    prefix = f"aquasurf-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=serve_grpc, args=(database, port), daemon=True
    )
    server.start()
    proxy = GrpcStorageProxy(host="127.0.0.1", port=port)
    proxy.wait_server_ready(timeout=60)
    storages: dict[str, BaseStorage | str] = {
        "postgresql": database,
        "journal-file": JournalStorage(JournalFileBackend(str(folder / "journal.log"))),
        "journal-redis": JournalStorage(JournalRedisBackend(args.redis, prefix=prefix)),
        "grpc": proxy,
    }
    try:
        print(f"{args.trials} trials per worker, trivial objective, the paper's 2,918 functions,")
        print("every storage on this machine (the gRPC proxy in front of PostgreSQL)")
        print(f"{'storage':<14} {'workers':>7} {'aquasurf /s':>11} {'optuna /s':>9} ", end="")
        print(f"{'ratio':>5} {'duplicates':>10}", flush=True)
        for label in args.storages.split(","):
            for n in WORKERS:
                aquasurf, duplicates = measure(storages[label], label, "aquasurf", n, args.trials)
                random, _ = measure(storages[label], label, "random", n, args.trials)
                print(
                    f"{label:<14} {n:>7} {aquasurf:>11.1f} {random:>9.1f} "
                    f"{aquasurf / random:>5.2f} {duplicates:>10}",
                    flush=True,
                )
    finally:
        server.terminate()
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
