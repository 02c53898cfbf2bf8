"""``aquasurf optimize`` with several workers and through lost connections, on PostgreSQL and
MariaDB (a new database per test).

The model file trains nothing (its score is a fixed function of the expression); its map is
computed once here and copied into each test's database, as a first worker would have stored it.

The last tests check what these tests stand on: the helpers that lock and drop connections, the
fixtures of tests/conftest.py that start processes and reach the servers, and the CLI's output
in a log.
"""

from __future__ import annotations

import contextlib
import os
import signal
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
from optuna_aquasurf.cli._storage import open_storage
from optuna_aquasurf.cli._study_sampler import StudySettings, study_sampler
from optuna_aquasurf.cli._tracking_storage import last_started
from optuna_aquasurf.cli._trials import count_finished, pending_reruns
from optuna_aquasurf.cli._userfile import load_user_file
from tests._maps import computed_map, store_map
from tests.conftest import (
    REQUIRE_DATABASES,
    SERVERS,
    admin_engine,
    kill_other_sessions,
    killed_at_exit,
    server_url,
)

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
    user = load_user_file(path)
    sampler = study_sampler(StudySettings.of_model_file(user, seed=0), user, torch.device("cpu"))
    return path, computed_map(sampler, folder)


@pytest.fixture
def url(database_url, model_file) -> str:
    """A new database with the map of fast.py."""
    store_map(model_file[1], database_url)
    return database_url


@pytest.fixture
def aquasurf(start_process):
    """A function that starts ``python -m optuna_aquasurf ARGS`` in ``cwd`` on the storage
    ``url``; what it started is killed after the test."""

    def start(*args: str, url: str, cwd: Path) -> subprocess.Popen:
        return start_process(
            [sys.executable, "-m", "optuna_aquasurf", *args],
            cwd=cwd,
            env={**os.environ, "AQUASURF_STORAGE": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


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
def test_workers_option_runs_processes_on_one_study(url, model_file, aquasurf):
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
    """Hold a write lock on Optuna's trials table: the workers' next statements wait.

    The lock is released however the block ends.
    """
    if dialect == "postgresql":
        admin.execute(sa.text("BEGIN"))
        lock, release = "LOCK TABLE trials IN ACCESS EXCLUSIVE MODE", "ROLLBACK"
    else:
        lock, release = "LOCK TABLES trials WRITE", "UNLOCK TABLES"
    try:
        admin.execute(sa.text(lock))
        yield
    finally:
        admin.execute(sa.text(release))


def test_a_dropped_connection_is_survived_and_the_trial_runs_again(url, model_file, aquasurf):
    path, _ = model_file
    process = aquasurf("optimize", path.name, "--n-trials", "10", url=url, cwd=path.parent)
    deadline = time.monotonic() + 180
    while completed(url) < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    engine = admin_engine(url)
    dialect = engine.dialect.name
    try:
        with engine.connect() as admin, tables_locked(admin, dialect):
            time.sleep(1.0)  # the worker's next statement on trials now waits for the lock
            assert kill_other_sessions(admin, dialect, engine.url.database) > 0
    finally:
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
    dialect = sa.make_url(url).get_backend_name()
    admin = admin_engine(
        sa.make_url(url).set(database="postgres" if dialect == "postgresql" else "")
    )

    def run(statement: str) -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(statement))

    def lock_out(statement: str) -> None:
        run(statement)
        with admin.connect() as connection:
            kill_other_sessions(connection, dialect, database)

    try:
        if dialect == "postgresql":
            try:
                yield url, lambda: lock_out(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
            finally:
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
    finally:
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


def test_tables_locked_releases_the_lock_when_its_block_raises(database_url):
    engine = admin_engine(database_url, lock_timeout_s=2)
    dialect = engine.dialect.name
    try:
        with engine.connect() as holder, engine.connect() as other:
            holder.execute(sa.text("CREATE TABLE trials (id INTEGER)"))
            with pytest.raises(RuntimeError), tables_locked(holder, dialect):
                raise RuntimeError("a check failed while the lock was held")
            with tables_locked(other, dialect):
                pass  # fails after 2 s if the lock is still held
    finally:
        engine.dispose()


class EndingBeforeItsKill:
    """An admin connection on which each session ends just before its ``KILL`` arrives, as one
    that closes between :func:`kill_other_sessions`'s listing and its ``KILL``."""

    def __init__(self, connection: sa.Connection):
        self.connection = connection

    def execute(self, statement, *args):
        if str(statement).startswith("KILL"):
            self.connection.execute(statement)
            session = {"id": int(str(statement).split()[1])}
            query = sa.text("SELECT COUNT(*) FROM information_schema.processlist WHERE id = :id")
            deadline = time.monotonic() + 10
            while self.connection.execute(query, session).scalar():
                assert time.monotonic() < deadline, f"session {session['id']} never ended"
                time.sleep(0.05)
        return self.connection.execute(statement, *args)


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
def test_a_session_that_ends_before_its_kill_is_passed_over(database_url):
    engine = admin_engine(database_url)
    other = engine.connect()
    try:
        with engine.connect() as admin:
            killed = kill_other_sessions(EndingBeforeItsKill(admin), "mysql", engine.url.database)
        assert killed == 1
    finally:
        other.invalidate()
        engine.dispose()


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_failed_tests_process_is_killed_with_the_processes_it_started():
    parent_code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    with pytest.raises(RuntimeError), killed_at_exit() as start:
        parent = start([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
        child = int(parent.stdout.readline())
        raise RuntimeError("a check failed while the processes ran")
    assert parent.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while running(child):
        assert time.monotonic() < deadline, "the child of the killed process still runs"
        time.sleep(0.05)


@pytest.mark.parametrize("dialect", sorted(SERVERS))
def test_a_database_server_not_running_skips_its_tests_unless_they_are_required(
    dialect, monkeypatch
):
    closed = sa.make_url(SERVERS[dialect]).set(port=1)
    monkeypatch.setitem(SERVERS, dialect, closed.render_as_string(hide_password=False))
    name = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}[dialect]
    monkeypatch.delenv(REQUIRE_DATABASES, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        server_url(dialect)
    assert str(skipped.value).startswith(
        f"{name} not reachable on 127.0.0.1:1: start it (.ci/services) or set "
        "AQUASURF_REQUIRE_DATABASES=1 to make this an error; "
    )
    monkeypatch.setenv(REQUIRE_DATABASES, "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        server_url(dialect)
    assert str(failed.value).startswith(
        f"{name} not reachable on 127.0.0.1:1 and AQUASURF_REQUIRE_DATABASES=1 requires it"
    )


def test_a_table_written_to_a_log_keeps_each_expression_on_one_line(tmp_path):
    expression = "mul(" * 6 + "add(tanh(x),sigmoid(x))" + ",softsign(x))" * 6  # 125 characters
    storage = f"sqlite:///{tmp_path / 'log.db'}"
    study = optuna.create_study(
        storage=storage, study_name="log", directions=["maximize", "minimize"]
    )
    study.add_trial(
        optuna.trial.create_trial(values=[0.9, 2.5], user_attrs={"activation": expression})
    )
    run = subprocess.run(
        [sys.executable, "-m", "optuna_aquasurf", "best", "--storage", storage, "--study", "log"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={name: value for name, value in os.environ.items() if name != "COLUMNS"},
    )
    assert run.returncode == 0, run.stderr
    assert expression in run.stdout, run.stdout
