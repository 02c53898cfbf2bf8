"""Where the sampler keeps what it computes once: embeddings, Fisher features and claims.

With an Optuna RDB storage (SQLite, PostgreSQL, MySQL) these live in the project's own tables of
the same database, so other workers and resumed runs reuse them; with any other storage they live
in memory, one store per storage object.

- Embeddings and Fisher features are keyed by what determines their content (fingerprints of the
  space and the probe, the seed), so two models never mix and an entry stays valid for any study.
- Claims say which function each trial of a study trains. A claim is one row whose primary key is
  (study, function): the database accepts only one, which is what makes the choice of the next
  function safe between workers. A claim whose trial failed, or belongs to a deleted study whose
  id was reused, is stale and is taken over.
"""

from __future__ import annotations

import io
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError

_METADATA = sa.MetaData()
_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

_EMBEDDINGS = sa.Table(
    "aquasurf_embeddings",
    _METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("data", _BLOB, nullable=False),
)
_FISHER = sa.Table(
    "aquasurf_fisher_chunks",
    _METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", _BLOB, nullable=False),
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


class Store(ABC):
    """Persistent (or in-memory) home of embeddings, Fisher feature chunks and claims."""

    @abstractmethod
    def load(self, table: str, key: str, chunk: int = 0) -> list[np.ndarray] | None:
        """The arrays saved under ``key`` (and ``chunk`` for Fisher features), or None."""

    @abstractmethod
    def save(self, table: str, key: str, arrays: list[np.ndarray], chunk: int = 0) -> None:
        """Save arrays; an entry that exists already is kept (its content is the same)."""

    @abstractmethod
    def claim(
        self, study_id: int, function: int, trial_id: int, is_stale: Callable[[int], bool]
    ) -> bool:
        """Atomically record that ``trial_id`` trains ``function``; False if another trial has.

        A conflicting claim whose trial ``is_stale`` (failed, or not of this study) is replaced.
        """


class MemoryStore(Store):
    """A store for in-memory and journal storages: thread-safe, gone with the process.

    Embeddings and features are keyed by their content, so all memory stores of a process share
    them; claims belong to one storage (study ids repeat between storages).
    """

    _entries: dict[tuple[str, str, int], list[np.ndarray]] = {}
    _entries_lock = threading.Lock()

    def __init__(self):
        self._lock = threading.Lock()
        self._claims: dict[tuple[int, int], int] = {}

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


class SQLStore(Store):
    """A store in the project's own tables of an Optuna RDB storage's database."""

    _TABLES = {"embeddings": _EMBEDDINGS, "fisher": _FISHER}

    def __init__(self, engine: sa.Engine):
        self._engine = engine
        _METADATA.create_all(engine, checkfirst=True)

    def load(self, table, key, chunk=0):
        columns = self._TABLES[table].c
        query = sa.select(columns.data).where(columns.key == key)
        if table == "fisher":
            query = query.where(columns.chunk == chunk)
        with self._engine.connect() as connection:
            data = connection.execute(query).scalar()
        return None if data is None else unpack(data)

    def save(self, table, key, arrays, chunk=0):
        row = {"key": key, "data": pack(*arrays)}
        if table == "fisher":
            row["chunk"] = chunk
        try:
            with self._engine.begin() as connection:
                connection.execute(sa.insert(self._TABLES[table]).values(**row))
        except IntegrityError:
            pass  # another worker saved the same content first

    def claim(self, study_id, function, trial_id, is_stale):
        row = {"study_id": study_id, "function": function, "trial_id": trial_id}
        try:
            with self._engine.begin() as connection:
                connection.execute(sa.insert(_CLAIMS).values(**row))
            return True
        except IntegrityError:
            pass
        where = (_CLAIMS.c.study_id == study_id) & (_CLAIMS.c.function == function)
        with self._engine.connect() as connection:
            holder = connection.execute(sa.select(_CLAIMS.c.trial_id).where(where)).scalar()
        if holder == trial_id:
            return True
        if holder is not None and not is_stale(holder):
            return False
        # A stale claim: take it over, unless another worker did in the meantime.
        with self._engine.begin() as connection:
            taken = connection.execute(
                sa.update(_CLAIMS)
                .where(where & (_CLAIMS.c.trial_id == holder))
                .values(trial_id=trial_id)
            )
        return taken.rowcount == 1


_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def store_for(storage) -> Store:
    """The store that goes with an Optuna storage object (one per object)."""
    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
    with _STORES_LOCK:
        if backend not in _STORES:
            is_rdb = isinstance(backend, RDBStorage)
            _STORES[backend] = SQLStore(backend.engine) if is_rdb else MemoryStore()
        return _STORES[backend]
