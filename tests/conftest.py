"""Fixtures of the whole suite: one torch thread per module, subprocesses that never outlive
their test, and new databases on the local PostgreSQL and MariaDB servers.

A test of a database server that is not reachable is skipped, unless the environment variable
``AQUASURF_REQUIRE_DATABASES=1`` (set by .ci/run) makes that an error.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op torch thread per test module.

    The models under test are small: with two threads on a two-core machine that also runs the
    subprocesses of other tests, torch's threads spin against each other and run many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def killed_at_exit():
    """A function that starts a subprocess, with :class:`subprocess.Popen`'s arguments, in a
    process group of its own; each group is killed when the block ends, however it ends."""
    started: list[subprocess.Popen] = []

    def start(*args, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(*args, start_new_session=True, **kwargs)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):  # the whole group has ended
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.fixture
def start_process():
    """:func:`killed_at_exit`'s function for a test: neither a process it starts nor any process
    that one starts (such as a CLI's workers) outlives the test, passed or failed."""
    with killed_at_exit() as start:
        yield start


#: Seconds a worker process of a test may take: the test fails rather than hang.
WORKER_TIMEOUT = 240


def start_workers(start_process, module: str, *commands: list[str], start: Path):
    """Start ``python -m MODULE COMMAND`` for each command with ``start_process`` (so that none
    outlives the test), from the repository's root; they begin together once ``start`` exists.

    Returns the processes, their stdout and stderr text pipes."""
    env = {**os.environ, "START": str(start)}
    workers = [
        start_process(
            [sys.executable, "-m", module, *command],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    start.touch()
    return workers


def finish(worker: subprocess.Popen, timeout: float = WORKER_TIMEOUT) -> None:
    """Wait for a worker of :func:`start_workers`; it must succeed."""
    _, stderr = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, stderr


#: Administrative URLs of the local database servers (see .ci/services).
SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/",
}
#: The servers' names in messages.
SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}
#: Set to 1 to make a database server that is not reachable an error instead of a skip.
REQUIRE_DATABASES = "AQUASURF_REQUIRE_DATABASES"
#: The longest that the tests' own connections wait for a lock: a lock left held fails the test
#: within this time instead of hanging it (MariaDB waits 24 hours by default).
LOCK_TIMEOUT_S = 30
#: MariaDB's error for a KILL of a session that has ended.
UNKNOWN_THREAD = 1094


def admin_engine(url: str | sa.URL, lock_timeout_s: int = LOCK_TIMEOUT_S) -> sa.Engine:
    """An autocommit engine on ``url`` whose connections give up connecting after 2 s and
    waiting for a lock (on a table, a row or a database) after ``lock_timeout_s``."""
    if sa.make_url(url).get_backend_name() == "postgresql":
        limits = {"options": f"-c lock_timeout={lock_timeout_s}s"}
    else:
        limits = {
            "init_command": f"SET SESSION lock_wait_timeout = {lock_timeout_s}, "
            f"innodb_lock_wait_timeout = {lock_timeout_s}"
        }
    return sa.create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2, **limits}
    )


@functools.cache
def unreachable(url: str) -> str | None:
    """Why no connection to the server at ``url`` can be opened; None when one can.

    Tried once per URL and test session.
    """
    engine = admin_engine(url)
    try:
        with engine.connect():
            return None
    except sa.exc.OperationalError as error:
        return str(error.orig).strip().splitlines()[0]
    finally:
        engine.dispose()


def server_url(dialect: str) -> str:
    """The administrative URL of the local server of ``dialect`` (a key of :data:`SERVERS`).

    Skips the test when the server is not reachable, or fails it when
    ``AQUASURF_REQUIRE_DATABASES=1``.
    """
    url = SERVERS[dialect]
    problem = unreachable(url)
    if problem is not None:
        address = sa.make_url(url)
        where = f"{SERVER_NAMES[dialect]} not reachable on {address.host}:{address.port}"
        if os.environ.get(REQUIRE_DATABASES) == "1":
            pytest.fail(
                f"{where} and {REQUIRE_DATABASES}=1 requires it: start it (.ci/services); "
                f"{problem}",
                pytrace=False,
            )
        pytest.skip(
            f"{where}: start it (.ci/services) or set {REQUIRE_DATABASES}=1 to make this an "
            f"error; {problem}"
        )
    return url


def kill_other_sessions(admin: sa.Connection, dialect: str, database: str) -> int:
    """End every other connection to ``database`` on the server; how many there were.

    A MariaDB session that ends by itself between the listing and its ``KILL`` is passed over.
    """
    if dialect == "postgresql":
        query = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"
        )
        return len(admin.execute(sa.text(query), {"db": database}).all())
    query = "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
    ids = admin.execute(sa.text(query), {"db": database}).scalars().all()
    for session in ids:
        try:
            admin.execute(sa.text(f"KILL {int(session)}"))
        except sa.exc.OperationalError as error:
            if error.orig.args[0] != UNKNOWN_THREAD:
                raise
    return len(ids)


@pytest.fixture(params=sorted(SERVERS))
def database_url(request):
    """The URL of a new, empty database on the local PostgreSQL or MariaDB server.

    Each test gets its own database, dropped afterwards with any connections left to it.
    The test is skipped if the server is not reachable (see :func:`server_url`).
    """
    name = f"aquasurf_test_{uuid.uuid4().hex[:12]}"
    admin = admin_engine(server_url(request.param))
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        if request.param == "postgresql":
            connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        else:
            kill_other_sessions(connection, "mysql", name)  # or DROP DATABASE waits for them
            connection.execute(sa.text(f"DROP DATABASE {name}"))
    admin.dispose()
