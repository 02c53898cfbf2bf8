"""Several worker processes on one study in PostgreSQL and MariaDB (a new database per test).

The workers are real processes (tests/worker_process.py) started together; the map of their
space is computed once here and copied into each test's database, as a first worker would
have stored it.
"""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from optuna_aquasurf import AquaSurfSampler
from tests._maps import computed_map, store_map
from tests.conftest import finish, start_workers
from tests.worker_process import probe, score, worker_space

#: The module of the workers' processes.
WORKER = "tests.worker_process"


@pytest.fixture(scope="module")
def map_rows(tmp_path_factory) -> list[tuple[str, bytes]]:
    """The stored map of the worker space, computed once (UMAP takes a while)."""
    return computed_map(AquaSurfSampler(worker_space(), seed=0), tmp_path_factory.mktemp("maps"))


@pytest.fixture
def shared_url(database_url, map_rows) -> str:
    """A new database with Optuna's tables and the map of the worker space.

    Optuna's tables are created first, as by a first worker: RDBStorage's first start in an
    empty database races with itself when several processes start at once.
    """
    optuna.storages.RDBStorage(database_url)
    store_map(map_rows, database_url)
    return database_url


def wait_for_line(worker: subprocess.Popen, prefix: str) -> str:
    """The first line of the worker's output that starts with ``prefix``."""
    for line in worker.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the worker exited without printing {prefix!r}: {worker.stderr.read()}")


@pytest.mark.slow  # about a minute per database on 2 cores
def test_four_workers_never_train_the_same_function(shared_url, tmp_path, start_process):
    workers = start_workers(
        start_process, WORKER, *[["optimize", shared_url, "s", "40"]] * 4, start=tmp_path / "go"
    )
    for worker in workers:
        finish(worker)

    study = optuna.load_study(study_name="s", storage=shared_url)
    trials = study.get_trials()
    assert len(trials) == 160
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.value == score(t.user_attrs["activation"]) for t in trials)
    sampler = AquaSurfSampler(worker_space())
    functions = [sampler.locate(t.user_attrs["activation"]) for t in trials]
    assert all(exact for _, exact in functions)
    # A claim holds a function and its near twins, under the first of them.
    claimed = [int(sampler.space_map.twin_of[f]) for f, _ in functions]
    assert len(set(claimed)) == 160  # no equivalent or near twin twice
    with sa.create_engine(shared_url).connect() as connection:
        claims = dict(
            connection.execute(sa.text("select function, trial_id from aquasurf_claims")).all()
        )
    assert claims == {f: t._trial_id for f, t in zip(claimed, trials)}


def test_a_killed_workers_trial_is_retried_and_nothing_completed_is_lost(
    shared_url, tmp_path, start_process
):
    (hanging,) = start_workers(
        start_process,
        WORKER,
        ["optimize", shared_url, "s", "10", "--hang-after", "3"],
        start=tmp_path / "go",
    )
    killed = int(wait_for_line(hanging, "hanging").split()[1])
    hanging.send_signal(signal.SIGKILL)
    hanging.wait()
    time.sleep(4)  # the killed trial's heartbeat goes stale (grace period 3 s)
    (survivor,) = start_workers(
        start_process, WORKER, ["optimize", shared_url, "s", "10"], start=tmp_path / "go2"
    )
    finish(survivor)

    trials = optuna.load_study(study_name="s", storage=shared_url).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["activation"] == by_number[killed].user_attrs["activation"]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 13  # 3 before the kill, then 10 including the retry
    assert all(by_number[n].state == TrialState.COMPLETE for n in range(3))
    assert len({t.user_attrs["activation"] for t in completed}) == 13


def test_workers_split_the_fisher_features_and_a_dead_ones_part_is_redone(
    database_url, tmp_path, start_process
):
    optuna.create_study(storage=database_url, study_name="fisher")
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    commands = [["fisher", database_url, str(log)] for log in logs]
    commands[0].append("--hang")
    dead, *survivors = start_workers(start_process, WORKER, *commands, start=tmp_path / "go")
    wait_for_line(dead, "hanging")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    for worker in survivors:
        finish(worker)

    space = worker_space()
    computed = [log.read_text().splitlines() for log in logs]
    dead_part, *survivor_parts = computed
    assert all(survivor_parts), "both survivors computed a part"
    assert sorted(survivor_parts[0] + survivor_parts[1]) == sorted(space.expressions)
    assert set(dead_part) <= set(survivor_parts[0] + survivor_parts[1])
    with sa.create_engine(database_url).connect() as connection:
        chunks = connection.execute(sa.text("select count(*) from aquasurf_fisher_chunks"))
        leases = connection.execute(sa.text("select count(*) from aquasurf_leases"))
        assert (chunks.scalar(), leases.scalar()) == (5, 0)
    stored = AquaSurfSampler(space, probe=probe(), seed=0).fisher_features(
        optuna.load_study(study_name="fisher", storage=database_url)
    )
    np.testing.assert_allclose(stored, probe().features(space), rtol=1e-6)
