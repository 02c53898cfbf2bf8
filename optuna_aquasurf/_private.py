"""Every private name of Optuna and umap-learn that the project uses, in one place.

Optuna's public API has no way to reach a study's storage and id, a trial's id, the storage
inside Optuna's cache or a journal's backend, nor to know whether a trial runs inside
``study.optimize``; UMAP's has no way to lay out a union of two graphs from a given start. One
more is overridden, not called: ``RDBStorage._create_new_trial``, through which Optuna's cache
creates every trial (``cli/_tracking_storage.py``).
pyproject.toml caps both libraries below their next major release, and
``tests/test_private_names.py`` fails if a name below moves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import BaseTrial, FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage object of a study (Optuna's cache, for an RDB)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage."""
    return study._study_id


def trial_id(trial: BaseTrial | FrozenTrial) -> int:
    """The trial's id in its storage (``Trial`` and ``FrozenTrial`` alike)."""
    return trial._trial_id


def in_optimize_loop(study: optuna.Study) -> bool:
    """Whether this thread runs a trial inside ``study.optimize`` (not ask-and-tell)."""
    return getattr(study._thread_local, "in_optimize_loop", False)


def uncached(storage: BaseStorage) -> BaseStorage:
    """The storage inside Optuna's cache (which wraps every RDBStorage of a study)."""
    from optuna.storages._cached_storage import _CachedStorage

    return storage._backend if isinstance(storage, _CachedStorage) else storage


def journal_backend(storage: BaseStorage):
    """The backend of a ``JournalStorage`` (a file, Redis); None for any other storage."""
    from optuna.storages import JournalStorage

    return storage._backend if isinstance(storage, JournalStorage) else None


def journal_file_path(backend) -> str:
    """The path of a ``JournalFileBackend``'s file."""
    return backend._file_path


def redis_journal_address(backend) -> tuple[str, str]:
    """The server URL and key prefix of a ``JournalRedisBackend``."""
    return backend._url, backend._prefix


def umap_layout_parameters(mapper) -> tuple[float, float]:
    """The curve parameters ``a`` and ``b`` of a fitted ``umap.UMAP``."""
    return mapper._a, mapper._b


def umap_internals():
    """umap-learn's module of graph routines (``simplicial_set_embedding``,
    ``general_simplicial_set_union``, ``reset_local_connectivity``, ``nearest_neighbors``)."""
    from umap import umap_

    return umap_
