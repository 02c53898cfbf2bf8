"""A worker process of the multi-worker tests (tests/test_workers.py), run as a subprocess.

    python -m tests.worker_process optimize URL STUDY N_TRIALS [--hang-after K]
        runs N_TRIALS trials of the shared study with a fast objective; with --hang-after, the
        trial after K completed ones hangs (printing "hanging N") until the process is killed.
    python -m tests.worker_process fisher URL LOG [--hang]
        computes the Fisher features of WORKER_SPACE in the study's database, appending each
        expression it computes to LOG; with --hang, its first chunk hangs after being logged.

Both wait for the file named by the environment variable START, when set, so that several
workers begin together. Leases are short here so that a dead worker's chunk is taken over fast.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from torch import nn

from optuna_aquasurf import AquaSurfSampler, SearchSpace, _store, suggest_activation
from optuna_aquasurf.features import FisherProbe

WORKER_UNARY = ["relu", "tanh", "sigmoid", "abs", "swish", "erf", "softsign", "elu"]


def worker_space() -> SearchSpace:
    """282 functions (239 finite): binary(unary(x),unary(x)) over 8 unary operators."""
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=WORKER_UNARY)


def build_model(activation: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), activation, nn.Linear(8, 3))


def probe() -> FisherProbe:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 4, generator=generator)
    targets = torch.randint(0, 3, (16,), generator=generator)
    return FisherProbe(build_model, inputs, targets, progress=False)


def score(expression: str) -> float:
    """A fixed pseudo-random score per expression."""
    return int(hashlib.sha256(expression.encode()).hexdigest()[:8], 16) / 2**32


def storage(url: str) -> RDBStorage:
    return RDBStorage(
        url,
        engine_kwargs={"pool_pre_ping": True},
        heartbeat_interval=1,
        grace_period=3,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def optimize(url: str, study_name: str, n_trials: int, hang_after: int | None) -> None:
    study = optuna.create_study(
        storage=storage(url),
        study_name=study_name,
        direction="maximize",
        sampler=AquaSurfSampler(worker_space(), seed=0),
        load_if_exists=True,
    )
    completed = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal completed
        expression = suggest_activation(trial).expression
        if hang_after is not None and completed == hang_after:
            print(f"hanging {trial.number}", flush=True)
            time.sleep(3600)
        time.sleep(0.02)
        completed += 1
        return score(expression)

    study.optimize(objective, n_trials=n_trials)


def fisher(url: str, log: Path, hang: bool) -> None:
    study = optuna.create_study(storage=url, study_name="fisher", load_if_exists=True)
    sampler = AquaSurfSampler(worker_space(), probe=probe(), seed=0)
    compute = FisherProbe.features

    def logged(self, expressions, **kwargs):
        with log.open("a") as file:
            file.writelines(f"{e}\n" for e in expressions)
        if hang:
            print("hanging", flush=True)
            time.sleep(3600)
        time.sleep(0.5)  # a chunk of a real model takes a while: let the others start
        return compute(self, expressions, **kwargs)

    FisherProbe.features = logged
    sampler.fisher_features(study)


def main(argv: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    _store.LEASE_RENEWAL, _store.LEASE_TIMEOUT = 0.5, 3.0
    if "START" in os.environ:
        while not Path(os.environ["START"]).exists():
            time.sleep(0.05)
    command, url = argv[0], argv[1]
    if command == "optimize":
        hang_after = int(argv[argv.index("--hang-after") + 1]) if "--hang-after" in argv else None
        optimize(url, argv[2], int(argv[3]), hang_after)
    else:
        fisher(url, Path(argv[2]), "--hang" in argv)


if __name__ == "__main__":
    main(sys.argv[1:])
