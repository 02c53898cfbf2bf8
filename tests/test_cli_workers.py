"""``aquasurf optimize`` with several workers and through lost connections, on PostgreSQL and
MariaDB (a new database per test).

The model file trains nothing (its score is a fixed function of the expression); its map is
computed once here and copied into each test's database, as a first worker would have stored it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import torch
from optuna.trial import TrialState

from optuna_aquasurf._store import lost_connection
from optuna_aquasurf.cli import _optimize
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._optimize import build_sampler
from optuna_aquasurf.cli._storage import open_storage
from optuna_aquasurf.cli._tracking_storage import last_started
from optuna_aquasurf.cli._trials import count_finished, pending_reruns
from optuna_aquasurf.cli._userfile import load_user_file
from tests._maps import computed_map, store_map

FAST = textwrap.dedent(
    """
    import hashlib, time
    from torch import nn

    SPACE = ["mul(x,unary(x))"]

    def build_model(activation):
        return nn.Sequential(nn.Linear(2, 2), activation)

    def train(model, trial, device):
        time.sleep(0.3)
        expression = trial.user_attrs["activation"]
        return int(hashlib.sha256(expression.encode()).hexdigest()[:8], 16) / 2**32
    """
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> tuple[Path, list]:
    """fast.py, and the stored rows of its map (computed once: UMAP takes a while)."""
    folder = tmp_path_factory.mktemp("fast")
    path = folder / "fast.py"
    path.write_text(FAST)
    sampler = build_sampler(load_user_file(path), 0, torch.device("cpu"))
    return path, computed_map(sampler, folder)


@pytest.fixture
def url(database_url, model_file) -> str:
    """A new database with the map of fast.py."""
    store_map(model_file[1], database_url)
    return database_url


def aquasurf(*args: str, url: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "optuna_aquasurf", *args],
        cwd=cwd,
        env={**os.environ, "AQUASURF_STORAGE": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="fast", storage=url).get_trials()


def completed(url: str) -> int:
    """The number of completed trials of the study (0 before it exists)."""
    try:
        return sum(t.state == TrialState.COMPLETE for t in finished(url))
    except KeyError:
        return 0


def check_intact(trials: list[optuna.trial.FrozenTrial], n_trials: int) -> None:
    """The study reached its target as the CLI counts it; every trial finished; a failure has
    its reason or was run again; no function completed twice."""
    assert count_finished(trials) >= n_trials, [
        (t.state, t.user_attrs.get("fail_reason")) for t in trials
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({t.user_attrs["activation"] for t in complete}) == len(complete)
    rerun = {t.user_attrs.get("rerun_of") for t in trials} | {
        t.system_attrs.get("failed_trial") for t in trials
    }
    for trial in trials:
        assert trial.state in (TrialState.COMPLETE, TrialState.FAIL), trial
        if trial.state == TrialState.FAIL:
            assert trial.number in rerun or "fail_reason" in trial.user_attrs, trial


@pytest.mark.slow  # about a minute per database on 2 cores
def test_workers_option_runs_processes_on_one_study(url, model_file):
    path, _ = model_file
    process = aquasurf(
        "optimize", path.name, "--workers", "2", "--n-trials", "12", url=url, cwd=path.parent
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "worker 1/2" in stderr and "worker 2/2" in stderr
    trials = finished(url)
    check_intact(trials, 12)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


@contextlib.contextmanager
def tables_locked(admin: sa.Connection, dialect: str):
    """Hold a write lock on Optuna's trials table: the workers' next statements wait."""
    if dialect == "postgresql":
        admin.execute(sa.text("BEGIN"))
        admin.execute(sa.text("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE"))
        yield
        admin.execute(sa.text("COMMIT"))
    else:
        admin.execute(sa.text("LOCK TABLES trials WRITE"))
        yield
        admin.execute(sa.text("UNLOCK TABLES"))


def kill_other_sessions(admin: sa.Connection, dialect: str, database: str) -> int:
    """End every other connection to ``database`` on the server; how many there were."""
    if dialect == "postgresql":
        query = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"
        )
        return len(admin.execute(sa.text(query), {"db": database}).all())
    query = "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
    ids = admin.execute(sa.text(query), {"db": database}).scalars().all()
    for session in ids:
        admin.execute(sa.text(f"KILL {int(session)}"))
    return len(ids)


def test_a_dropped_connection_is_survived_and_the_trial_runs_again(url, model_file):
    path, _ = model_file
    process = aquasurf("optimize", path.name, "--n-trials", "10", url=url, cwd=path.parent)
    deadline = time.monotonic() + 180
    while completed(url) < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    dialect = engine.dialect.name
    database = engine.url.database
    with engine.connect() as admin:
        with tables_locked(admin, dialect):
            time.sleep(1.0)  # the worker's next statement on trials now waits for the lock
            assert kill_other_sessions(admin, dialect, database) > 0
    engine.dispose()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "Lost the connection to the database" in stderr
    assert "Connection to the database restored" in stderr
    check_intact(finished(url), 10)


@contextlib.contextmanager
def locked_out(url: str):
    """A URL of the database at ``url``, and a function that ends its connections and makes
    the server refuse new ones (PostgreSQL: connections disallowed; MariaDB: a user of this
    test only, whose account is locked)."""
    database = sa.make_url(url).database
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    server = sa.make_url(url).set(database="postgres" if dialect == "postgresql" else "")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")

    def run(statement: str) -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(statement))

    def lock_out(statement: str) -> None:
        run(statement)
        with admin.connect() as connection:
            kill_other_sessions(connection, dialect, database)

    if dialect == "postgresql":
        yield url, lambda: lock_out(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        run(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    else:
        user = f"{database}@'%'"
        run(f"CREATE USER {user} IDENTIFIED BY 'secret-pw'")
        run(f"GRANT ALL ON {database}.* TO {user}")
        user_url = sa.make_url(url).set(username=database, password="secret-pw")
        try:
            yield (
                user_url.render_as_string(hide_password=False),
                lambda: lock_out(f"ALTER USER {user} ACCOUNT LOCK"),
            )
        finally:
            run(f"DROP USER {user}")
    admin.dispose()


def test_a_database_that_stays_away_stops_the_worker_with_a_clear_message(
    database_url, monkeypatch
):
    monkeypatch.setattr(_optimize, "RECONNECT_DELAYS", (0.1, 0.2))
    with locked_out(database_url) as (url, lock_out):
        study = optuna.create_study(storage=open_storage(url))
        lock_out()
        with pytest.raises(Exception) as lost:
            study.get_trials()
        with pytest.raises(UserError, match="could not reconnect in 0.3 s") as raised:
            _optimize._reconnect(study, None, lost_connection(lost.value), url)
    message = str(raised.value)
    assert "run the same command to resume" in message and "secret-pw" not in message


def test_a_trial_lost_before_its_objective_is_failed_and_not_counted(tmp_path, monkeypatch):
    """The connection can drop while Optuna reads back a trial it just created: the worker
    fails that trial too, and it counts neither toward --n-trials nor as a rerun."""
    monkeypatch.setattr(_optimize, "RECONNECT_DELAYS", (0.1,))
    url = f"sqlite:///{tmp_path / 'lost.db'}"
    study = optuna.create_study(storage=open_storage(url))
    done = study.ask()
    done.set_user_attr("activation", "relu(x)")
    study.tell(done, 0.5)
    study.enqueue_trial({})  # waits: not started by this process
    assert last_started(study) == done._trial_id
    orphan = study.ask()  # takes the waiting trial
    assert last_started(study) == orphan._trial_id
    lost = sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    _optimize._reconnect(study, last_started(study), lost, url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs["fail_reason"] == "lost connection"
    assert count_finished(trials) == 1 and not pending_reruns(trials)


def test_each_worker_gets_one_visible_gpu_in_turn_or_a_share_of_the_cores(monkeypatch):
    from optuna_aquasurf.cli._workers import worker_devices

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert worker_devices(3, "cpu") == [("cpu", {"OMP_NUM_THREADS": "2"})] * 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_devices(2, "auto") == [("cpu", {"OMP_NUM_THREADS": "4"})] * 2
    # The assignment alone (no GPU here): what CUDA_VISIBLE_DEVICES each worker gets.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    visible = [env["CUDA_VISIBLE_DEVICES"] for _, env in worker_devices(3, "auto")]
    assert visible == ["3", "5", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [env for _, env in worker_devices(2, "cuda")] == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
    ]
    assert worker_devices(2, "cuda:1") == [("cuda:1", {})] * 2


def test_a_worker_command_gives_the_worker_the_searchs_settings(monkeypatch):
    import dataclasses

    from typer.testing import CliRunner

    from optuna_aquasurf.cli._app import app
    from optuna_aquasurf.cli._workers import worker_command

    settings = _optimize.SearchSettings(
        n_trials=12,
        timeout=None,
        device="cpu",
        storage_url="sqlite:///x.db",
        study_name=None,
        seed=3,
        pruner="median",
        heartbeat_interval=60,
        grace_period=None,
        max_retry=3,
        prior=("old@sqlite:///old.db", "act-bench-digits:cnn"),
        max_cost=1.5,
        objectives="score,cost",
    )
    command = worker_command(Path("fast.py"), settings, "fast")
    seen = {}
    monkeypatch.setattr(_optimize, "optimize", lambda path, s, worker: seen.update(settings=s))
    options = ["--device", "cpu", "--storage", "sqlite:///x.db"]
    result = CliRunner().invoke(app, [*command[3:], *options])
    assert result.exit_code == 0, result.output
    assert seen["settings"] == dataclasses.replace(settings, study_name="fast")
