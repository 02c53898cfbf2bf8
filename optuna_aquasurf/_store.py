"""Where the sampler keeps what it computes once: embeddings, Fisher features, priors, costs and
claims.

Which store goes with which Optuna storage (:func:`store_for`):

- RDBStorage (SQLite, PostgreSQL, MySQL): :class:`SQLStore`, everything in the project's own
  tables of the same database.
- JournalStorage and GrpcStorageProxy (any storage shared between processes but an RDB): a
  :class:`~optuna_aquasurf._trial_store.TrialAttrStore`, whose claims are trial system
  attributes written and read through the storage's own API, and whose entries and leases live
  in a folder beside a journal file or in a Redis journal's server
  (:mod:`optuna_aquasurf._journal_entries`); behind the gRPC proxy, in this process's memory.
- InMemoryStorage: :class:`MemoryStore`, everything in this process's memory.

Where the entries are shared, other workers and resumed runs reuse them; in memory, each
process computes those it needs.

- Embeddings and Fisher features are keyed by what determines their content (fingerprints of the
  space and the probe, the seed), so two models never mix and an entry stays valid for any study.
- Priors are the scores of earlier searches that a study starts from, read once per study
  (keyed by the study and the source), so that its workers and resumed runs all use the same.
- Costs are functions' forward and backward time over relu's, keyed by what was timed.
- Claims say which function each trial of a study trains. In a database a claim is one row whose
  primary key is (study, function): the database accepts only one, which is what makes the
  choice of the next function safe between workers. A claim whose trial failed, or belongs to a
  deleted study whose id was reused, is stale and is taken over.
- Leases say which worker is computing an entry (a Fisher chunk, an embedding), so that workers
  split the work instead of repeating it. In a database a lease is also one row with a primary
  key; its holder renews it every ``LEASE_RENEWAL`` seconds while computing, and a lease not
  renewed for ``LEASE_TIMEOUT`` seconds (its worker died) is taken over. An entry is saved in
  one insert, so a worker that dies leaves either the whole entry or nothing.

Every statement of :class:`SQLStore` is retried with backoff when the connection to the database
is lost (``CONNECTION_RETRIES``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError, IntegrityError

from optuna_aquasurf._private import (
    journal_backend,
    journal_file_path,
    redis_journal_address,
    uncached,
)

#: Seconds between renewals of a lease by the worker that holds it.
LEASE_RENEWAL = 10.0
#: A lease not renewed for this many seconds belongs to a dead worker and is taken over.
LEASE_TIMEOUT = 60.0
#: Seconds between looks at an entry that another worker is computing.
LEASE_POLL = 0.5
#: Waits (seconds) before each new attempt of a statement whose connection was lost.
CONNECTION_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)

_METADATA = sa.MetaData()
_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _keyed_table(kind: str) -> sa.Table:
    """The table ``aquasurf_<kind>``: arrays saved under a key, one row each."""
    return sa.Table(
        f"aquasurf_{kind}",
        _METADATA,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("data", _BLOB, nullable=False),
    )


#: The tables of entries saved whole under a key, by the name the store's methods take.
_KEYED = {kind: _keyed_table(kind) for kind in ("embeddings", "priors", "costs", "spaces")}
_FISHER = sa.Table(
    "aquasurf_fisher_chunks",
    _METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", _BLOB, nullable=False),
)
_LEASES = sa.Table(
    "aquasurf_leases",
    _METADATA,
    sa.Column("entry", sa.String(80), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(120), nullable=False),
    sa.Column("renewed_at", sa.Double, nullable=False),
)
_CLAIMS = sa.Table(
    "aquasurf_claims",
    _METADATA,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("function", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("trial_id", sa.Integer, nullable=False),
)


def pack(*arrays: np.ndarray) -> bytes:
    """Arrays as bytes for a blob column (numpy's own format, no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def unpack(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def lost_connection(error: BaseException) -> sa.exc.SQLAlchemyError | None:
    """The database error behind ``error`` if it is a lost or refused connection, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sa.exc.PendingRollbackError):  # a session whose connection failed
            return error
        if isinstance(error, DBAPIError) and (
            error.connection_invalidated
            or isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError)
        ):
            return error
        error = error.__cause__ or error.__context__
    return None


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)


def _new_holder() -> str:
    """A name for one lease, unique among workers and readable: host, process, random."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


class Entries(ABC):
    """Persistent (or in-memory) home of arrays computed once and shared between workers:
    embeddings, Fisher feature chunks, priors and costs, each saved whole under a key, and the
    leases of those being computed."""

    #: Errors of a lease's renewal that a later renewal may overcome (a lost connection).
    transient_errors: tuple[type[BaseException], ...] = ()

    def compute_once(
        self,
        table: str,
        key: str,
        compute: Callable[[], list[np.ndarray]],
        chunk: int = 0,
        wait: bool = True,
    ) -> list[np.ndarray] | None:
        """The arrays saved under ``key``, computed here by ``compute()`` if no worker has.

        If another worker is computing them, wait for its result (or take over its lease when
        it dies); with ``wait=False`` return None instead, so that the caller can compute
        something else meanwhile. What is returned is always what was saved: the first result
        saved wins, so every worker uses the same arrays.
        """
        entry = f"{table}:{key}"
        while True:
            saved = self.load(table, key, chunk)
            if saved is not None:
                return saved
            holder = _new_holder()
            if self.acquire(entry, chunk, holder):
                try:
                    with self._renewing(entry, chunk, holder):
                        arrays = compute()
                    self.save(table, key, arrays, chunk)
                finally:
                    self.release(entry, chunk, holder)
            elif not wait:
                return None
            else:
                time.sleep(LEASE_POLL)

    @contextlib.contextmanager
    def _renewing(self, entry: str, chunk: int, holder: str) -> Iterator[None]:
        """Renew a lease from a background thread while the body runs."""
        stop = threading.Event()

        def renew():
            while not stop.wait(LEASE_RENEWAL):
                with contextlib.suppress(*self.transient_errors):  # the next may get through
                    self.renew(entry, chunk, holder)

        thread = threading.Thread(target=renew, name=f"aquasurf lease {entry}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @abstractmethod
    def load(self, table: str, key: str, chunk: int = 0) -> list[np.ndarray] | None:
        """The arrays saved under ``key`` (and ``chunk`` for Fisher features), or None."""

    @abstractmethod
    def save(self, table: str, key: str, arrays: list[np.ndarray], chunk: int = 0) -> None:
        """Save arrays; an entry that exists already is kept (its content is the same)."""

    @abstractmethod
    def acquire(self, entry: str, chunk: int, holder: str) -> bool:
        """Atomically take the lease of ``entry``/``chunk`` for ``holder``: False if another
        holder has it and renewed it less than ``LEASE_TIMEOUT`` seconds ago."""

    @abstractmethod
    def renew(self, entry: str, chunk: int, holder: str) -> None:
        """Record that ``holder`` is still working on its lease."""

    @abstractmethod
    def release(self, entry: str, chunk: int, holder: str) -> None:
        """Give the lease up (if ``holder`` still has it)."""


class Store(Entries):
    """The entries of a storage's studies, and the claims of their trials."""

    @abstractmethod
    def claim(
        self, study_id: int, function: int, trial_id: int, is_stale: Callable[[int], bool]
    ) -> bool:
        """Atomically record that ``trial_id`` trains ``function``; False if another trial has.

        A conflicting claim whose trial ``is_stale`` (failed, or not of this study) is replaced.
        """


class MemoryStore(Store):
    """A store in this process's memory: thread-safe, gone with the process.

    Embeddings, features and costs are keyed by their content, so all memory stores of a process
    share them; so are priors, keyed by the study's name and id and the source, so two in-memory
    studies of the same name and id in one process read a source once. Claims belong to one
    storage (study ids repeat between storages).
    """

    _entries: dict[tuple[str, str, int], list[np.ndarray]] = {}
    _entries_lock = threading.Lock()

    def __init__(self):
        self._lock = threading.Lock()
        self._claims: dict[tuple[int, int], int] = {}
        self._leases: dict[tuple[str, int], str] = {}

    def load(self, table, key, chunk=0):
        return self._entries.get((table, key, chunk))

    def save(self, table, key, arrays, chunk=0):
        with self._entries_lock:
            self._entries.setdefault((table, key, chunk), arrays)

    def claim(self, study_id, function, trial_id, is_stale):
        with self._lock:
            holder = self._claims.get((study_id, function))
            if holder is not None and holder != trial_id and not is_stale(holder):
                return False
            self._claims[(study_id, function)] = trial_id
            return True

    def acquire(self, entry, chunk, holder):
        with self._lock:
            return self._leases.setdefault((entry, chunk), holder) == holder

    def renew(self, entry, chunk, holder):
        pass  # threads of one process don't die alone: a lease in memory never goes stale

    def release(self, entry, chunk, holder):
        with self._lock:
            if self._leases.get((entry, chunk)) == holder:
                del self._leases[(entry, chunk)]


class SQLStore(Store):
    """A store in the project's own tables of an Optuna RDB storage's database."""

    _TABLES = {**_KEYED, "fisher": _FISHER}
    transient_errors = (DBAPIError,)

    def __init__(self, engine: sa.Engine):
        self._engine = engine
        self._create_tables()

    def _create_tables(self) -> None:
        """Create the tables that are missing; workers starting together may race to it."""
        for attempt in range(3):
            try:
                self._transaction(lambda connection: _METADATA.create_all(connection))
                return
            except DBAPIError:  # another worker created a table between check and create
                if attempt == 2:
                    raise

    def _transaction(self, work: Callable[[sa.Connection], Any]) -> Any:
        """``work(connection)`` in one transaction, run again after a lost connection."""
        for delay in (*CONNECTION_RETRIES, None):
            try:
                with self._engine.begin() as connection:
                    return work(connection)
            except DBAPIError as error:
                if delay is None or lost_connection(error) is None:
                    raise
                time.sleep(delay)

    def _insert(self, table: sa.Table, row: dict) -> bool:
        """Insert ``row``; False if a row with its primary key exists."""
        try:
            self._transaction(lambda connection: connection.execute(sa.insert(table), row))
            return True
        except IntegrityError:
            return False

    def load(self, table, key, chunk=0):
        columns = self._TABLES[table].c
        query = sa.select(columns.data).where(columns.key == key)
        if table == "fisher":
            query = query.where(columns.chunk == chunk)
        data = self._transaction(lambda connection: connection.execute(query).scalar())
        return None if data is None else unpack(data)

    def save(self, table, key, arrays, chunk=0):
        row = {"key": key, "data": pack(*arrays)}
        if table == "fisher":
            row["chunk"] = chunk
        self._insert(self._TABLES[table], row)  # False: another worker saved the same content

    def claim(self, study_id, function, trial_id, is_stale):
        row = {"study_id": study_id, "function": function, "trial_id": trial_id}
        if self._insert(_CLAIMS, row):
            return True
        where = (_CLAIMS.c.study_id == study_id) & (_CLAIMS.c.function == function)
        query = sa.select(_CLAIMS.c.trial_id).where(where)
        holder = self._transaction(lambda connection: connection.execute(query).scalar())
        if holder == trial_id:
            return True
        if holder is not None and not is_stale(holder):
            return False
        # A stale claim: take it over, unless another worker did in the meantime.
        update = (
            sa.update(_CLAIMS)
            .where(where & (_CLAIMS.c.trial_id == holder))
            .values(trial_id=trial_id)
        )
        return self._transaction(lambda connection: connection.execute(update).rowcount) == 1

    def acquire(self, entry, chunk, holder):
        now = time.time()
        if self._insert(
            _LEASES, {"entry": entry, "chunk": chunk, "holder": holder, "renewed_at": now}
        ):
            return True
        where = (_LEASES.c.entry == entry) & (_LEASES.c.chunk == chunk)
        query = sa.select(_LEASES.c.holder, _LEASES.c.renewed_at).where(where)
        current = self._transaction(lambda connection: connection.execute(query).first())
        if current is None:
            return False  # released meanwhile: the caller looks for the saved entry again
        if current.holder == holder:
            return True
        if now - current.renewed_at < LEASE_TIMEOUT:
            return False
        # The holder died: take the lease over, unless another worker did in the meantime.
        update = (
            sa.update(_LEASES)
            .where(where & (_LEASES.c.holder == current.holder))
            .values(holder=holder, renewed_at=now)
        )
        return self._transaction(lambda connection: connection.execute(update).rowcount) == 1

    def renew(self, entry, chunk, holder):
        update = (
            sa.update(_LEASES)
            .where((_LEASES.c.entry == entry) & (_LEASES.c.chunk == chunk))
            .where(_LEASES.c.holder == holder)
            .values(renewed_at=time.time())
        )
        self._transaction(lambda connection: connection.execute(update))

    def release(self, entry, chunk, holder):
        delete = (
            sa.delete(_LEASES)
            .where((_LEASES.c.entry == entry) & (_LEASES.c.chunk == chunk))
            .where(_LEASES.c.holder == holder)
        )
        self._transaction(lambda connection: connection.execute(delete))


_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def store_for(storage) -> Store:
    """The store that goes with an Optuna storage object (one per object): see the module's
    docstring for which."""
    from optuna.storages import InMemoryStorage, RDBStorage

    storage = uncached(storage)
    with _STORES_LOCK:
        if storage not in _STORES:
            if isinstance(storage, RDBStorage):
                _STORES[storage] = SQLStore(storage.engine)
            elif isinstance(storage, InMemoryStorage):
                _STORES[storage] = MemoryStore()
            else:
                from optuna_aquasurf._trial_store import TrialAttrStore

                _STORES[storage] = TrialAttrStore(storage, _entries_beside(storage))
        return _STORES[storage]


def _entries_beside(storage) -> Entries:
    """Where the entries of a storage without the project's tables live: beside a journal
    file, in a Redis journal's server, else in this process."""
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    from optuna_aquasurf._journal_entries import FOLDER_SUFFIX, FileEntries, RedisEntries

    journal = journal_backend(storage)
    if isinstance(journal, JournalFileBackend):
        return FileEntries(journal_file_path(journal) + FOLDER_SUFFIX)
    if isinstance(journal, JournalRedisBackend):
        return RedisEntries(*redis_journal_address(journal))
    return MemoryStore()
