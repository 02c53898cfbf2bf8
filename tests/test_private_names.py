"""The private names of Optuna and umap-learn that the project uses (optuna_aquasurf/_private.py)
are still there and still mean what the project takes them to mean: a failure here after an
upgrade says which name moved."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import optuna
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from optuna_aquasurf import _private as private
from optuna_aquasurf.cli._tracking_storage import TrackingStorage


def test_a_study_and_its_trials_give_their_storage_and_ids(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    seen = []

    def objective(trial):
        seen.append((private.trial_id(trial), private.in_optimize_loop(study)))
        return 0.0

    study.optimize(objective, n_trials=1)
    assert private.uncached(private.storage_of(study)) is storage
    assert private.study_id(study) == storage.get_study_id_from_name("s")
    (frozen,) = study.trials
    assert seen == [(private.trial_id(frozen), True)]
    assert storage.get_trial(private.trial_id(frozen)).number == 0
    asked = study.ask()
    assert not private.in_optimize_loop(study)
    assert storage.get_trial(private.trial_id(asked)).number == 1


def test_a_storage_that_is_not_cached_is_its_own():
    storage = InMemoryStorage()
    assert private.uncached(storage) is storage
    assert private.journal_backend(storage) is None


def test_a_journal_gives_its_backend_file_and_redis_address(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental backends
        file = JournalFileBackend(str(tmp_path / "journal.log"))
        redis = JournalRedisBackend("redis://127.0.0.1:6379/0", prefix="p")  # connects lazily
    assert private.journal_backend(JournalStorage(file)) is file
    assert private.journal_file_path(file) == str(tmp_path / "journal.log")
    assert private.redis_journal_address(redis) == ("redis://127.0.0.1:6379/0", "p")


def test_optunas_cache_creates_trials_through_the_method_the_cli_overrides(tmp_path):
    """cli/_tracking_storage.py overrides RDBStorage._create_new_trial: it must exist, take the
    same arguments and be what a study's ``ask`` goes through."""
    overridden = inspect.signature(RDBStorage._create_new_trial).parameters
    assert list(overridden) == list(inspect.signature(TrackingStorage._create_new_trial).parameters)
    storage = TrackingStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert storage.last_started == private.trial_id(trial)


def test_umaps_graph_routines_and_layout_parameters_are_there():
    import umap

    points = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    mapper = umap.UMAP(n_neighbors=5, random_state=0, n_jobs=1).fit(points)
    a, b = private.umap_layout_parameters(mapper)
    assert a > 0 and b > 0
    umap_ = private.umap_internals()
    for name in (
        "general_simplicial_set_union",
        "reset_local_connectivity",
        "simplicial_set_embedding",
        "nearest_neighbors",
    ):
        assert callable(getattr(umap_, name)), name
    parameters = list(inspect.signature(umap_.simplicial_set_embedding).parameters)
    assert parameters[:6] == ["data", "graph", "n_components", "initial_alpha", "a", "b"]
