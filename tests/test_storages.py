"""Every Optuna storage that workers share: a journal file, a Redis journal, the gRPC proxy and
PostgreSQL. Workers never train one function twice, a killed worker's trial is run again, and
what is computed once (Fisher features) is computed once.

The workers are real processes (tests/storage_worker.py) started together, over a space of 282
functions without a probe; the claim rule of the storages without SQL tables
(optuna_aquasurf/_trial_store.py) is also checked with threads, in one process.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages import InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from optuna_aquasurf import AquaSurfSampler, _trial_store
from optuna_aquasurf._journal_entries import FOLDER_SUFFIX, FileEntries, RedisEntries
from optuna_aquasurf._store import MemoryStore, SQLStore, store_for
from optuna_aquasurf._trial_store import KEPT, WANTED, TrialAttrStore, claim_attr
from optuna_aquasurf.features import FisherProbe
from tests.conftest import REQUIRE_DATABASES, WORKER_TIMEOUT, finish, start_workers
from tests.storage_worker import REDIS_URL, open_storage
from tests.worker_process import probe, score, worker_space

ROOT = Path(__file__).resolve().parents[1]
#: The module of the workers' processes.
WORKER = "tests.storage_worker"
#: The gRPC proxy server: ``python -c SERVER URL PORT``.
SERVER = (
    "import sys, optuna; optuna.storages.run_grpc_proxy_server("
    "optuna.storages.get_storage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))"
)


@pytest.fixture
def redis_prefix():
    """A new key prefix in the local Redis server, its keys deleted afterwards.

    Skipped when the server is not reachable, unless ``AQUASURF_REQUIRE_DATABASES=1``.
    """
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as error:
        where = f"Redis not reachable at {REDIS_URL}: start it (.ci/services); {error}"
        if os.environ.get(REQUIRE_DATABASES) == "1":
            pytest.fail(f"{where}, and {REQUIRE_DATABASES}=1 requires it", pytrace=False)
        pytest.skip(where)
    prefix = f"aquasurf-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(params=["file", "redis"])
def journal(request, tmp_path) -> str:
    """A journal storage's name for tests/storage_worker.py: a file, or a prefix in Redis."""
    if request.param == "file":
        return f"file:{tmp_path / 'journal.log'}"
    return f"redis:{request.getfixturevalue('redis_prefix')}"


@pytest.fixture
def grpc_proxy(database_url, start_process) -> str:
    """The gRPC proxy in front of a new database: its name for tests/storage_worker.py."""
    pytest.importorskip("grpc")
    optuna.storages.RDBStorage(database_url)  # Optuna's tables, before workers race to them
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = start_process(
        [sys.executable, "-c", SERVER, database_url, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
    try:
        proxy.wait_server_ready(timeout=60)
    except Exception:
        server.kill()
        raise AssertionError(f"the gRPC proxy did not start: {server.communicate()[1]}") from None
    finally:
        proxy.close()
    return f"grpc:{port}"


def first_line(process: subprocess.Popen, timeout: float = WORKER_TIMEOUT) -> str:
    """The first line that ``process`` prints (its stdout a text pipe), within ``timeout``."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"nothing printed in {timeout} s"
    return process.stdout.readline()


def four_workers_train_forty_functions(storage: str, tmp_path: Path, start_process) -> None:
    """4 workers x 10 trials of one study: 40 trials completed, none running, 40 functions
    (near twins counted as one); on a storage without SQL tables, each trial keeps one claim:
    its function's."""
    workers = start_workers(
        start_process, WORKER, *[["optimize", storage, "s", "10"]] * 4, start=tmp_path / "go"
    )
    for worker in workers:
        finish(worker)

    trials = optuna.load_study(study_name="s", storage=open_storage(storage)).get_trials()
    assert len(trials) == 40
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.value == score(t.user_attrs["activation"]) for t in trials)
    search = AquaSurfSampler(worker_space()).search(optuna.create_study())
    functions = [search.locate(t.user_attrs["activation"]) for t in trials]
    assert all(exact for _, exact in functions)
    assert len({function for function, _ in functions}) == 40
    if not isinstance(store_for(open_storage(storage)), SQLStore):
        for trial, (function, _) in zip(trials, functions):
            kept = [
                k for k, v in trial.system_attrs.items() if k.startswith("aquasurf:") and v == KEPT
            ]
            assert kept == [claim_attr(function)]


def test_four_workers_on_a_journal_never_train_one_function_twice(journal, tmp_path, start_process):
    four_workers_train_forty_functions(journal, tmp_path, start_process)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_four_workers_through_the_grpc_proxy_never_train_one_function_twice(
    grpc_proxy, tmp_path, start_process
):
    four_workers_train_forty_functions(grpc_proxy, tmp_path, start_process)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_four_workers_on_postgresql_never_train_one_function_twice(
    database_url, tmp_path, start_process
):
    optuna.storages.RDBStorage(database_url)  # Optuna's tables, before workers race to them
    four_workers_train_forty_functions(database_url, tmp_path, start_process)


def test_a_killed_workers_trial_on_a_journal_is_failed_and_run_again(
    journal, tmp_path, start_process
):
    (hanging,) = start_workers(
        start_process,
        WORKER,
        ["optimize", journal, "s", "10", "--hang-after", "3"],
        start=tmp_path / "go",
    )
    line = first_line(hanging)
    assert line.startswith("hanging"), hanging.stderr.read()
    killed = int(line.split()[1])
    hanging.send_signal(signal.SIGKILL)
    hanging.wait()
    (survivor,) = start_workers(
        start_process, WORKER, ["optimize", journal, "s", "10"], start=tmp_path / "go2"
    )
    finish(survivor)

    trials = optuna.load_study(study_name="s", storage=open_storage(journal)).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    assert by_number[killed].user_attrs["fail_reason"] == "process died"
    (rerun,) = [t for t in trials if t.user_attrs.get("rerun_of") == killed]
    assert rerun.state == TrialState.COMPLETE
    assert rerun.user_attrs["activation"] == by_number[killed].user_attrs["activation"]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    completed = [t.user_attrs["activation"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 13  # 3 before the kill, then 10 including the rerun
    assert len(set(completed)) == 13


# The claim rule, with threads in one process.


def claim_together(storages: list, study_id: int, trial_ids: list[int], function: int) -> list:
    """Each trial claims ``function`` in a thread of its own, through its own storage object,
    all at once; what each claim returned."""
    barrier = threading.Barrier(len(trial_ids))
    results = [None] * len(trial_ids)

    def claim(i: int) -> None:
        store = store_for(storages[i])
        barrier.wait()
        results[i] = store.claim(study_id, function, trial_ids[i], is_stale=None)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(trial_ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_of_trials_claiming_one_function_together_exactly_one_keeps_it(tmp_path):
    """Four trials, each through its own journal storage object on one file (as four
    processes), claim each of 10 functions together: one keeps each."""
    path = str(tmp_path / "journal.log")
    storages = [JournalStorage(JournalFileBackend(path)) for _ in range(4)]
    study = optuna.create_study(storage=storages[0])
    trial_ids = [study.ask()._trial_id for _ in range(4)]
    for function in range(10):
        results = claim_together(storages, study._study_id, trial_ids, function)
        assert results.count(True) == 1, results
    keepers = collections.Counter(
        t.number for t in study.get_trials() for value in t.system_attrs.values() if value == KEPT
    )
    assert sum(keepers.values()) == 10


def test_a_claim_gives_up_for_a_rival_that_kept_or_wants_first_and_takes_a_failed_ones():
    storage = InMemoryStorage()
    store = TrialAttrStore(storage, MemoryStore())
    study = optuna.create_study(storage=storage)
    first, second, third = (study.ask() for _ in range(3))
    assert store.claim(study._study_id, 7, first._trial_id, is_stale=None)
    assert not store.claim(study._study_id, 7, second._trial_id, is_stale=None)
    storage.set_trial_system_attr(first._trial_id, claim_attr(8), WANTED)  # first is claiming
    assert not store.claim(study._study_id, 8, third._trial_id, is_stale=None)
    study.tell(first, state=TrialState.FAIL)
    assert store.claim(study._study_id, 7, third._trial_id, is_stale=None)
    assert store.claim(study._study_id, 8, second._trial_id, is_stale=None)


def test_a_claim_gives_up_after_waiting_for_a_later_rival_that_never_settles(monkeypatch):
    monkeypatch.setattr(_trial_store, "CLAIM_WAIT", 0.2)
    storage = InMemoryStorage()
    store = TrialAttrStore(storage, MemoryStore())
    study = optuna.create_study(storage=storage)
    earlier, later = study.ask(), study.ask()
    storage.set_trial_system_attr(later._trial_id, claim_attr(3), WANTED)  # then its process died
    started = time.monotonic()
    assert not store.claim(study._study_id, 3, earlier._trial_id, is_stale=None)
    assert 0.2 <= time.monotonic() - started < 5


# Which store, and entries computed once.


def test_each_storage_gets_its_store(tmp_path, redis_prefix):
    assert isinstance(store_for(InMemoryStorage()), MemoryStore)
    sqlite = optuna.storages.get_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert isinstance(store_for(sqlite), SQLStore)
    journal = store_for(open_storage(f"file:{tmp_path / 'journal.log'}"))
    assert isinstance(journal, TrialAttrStore) and isinstance(journal.entries, FileEntries)
    assert journal.entries.folder == Path(f"{tmp_path / 'journal.log'}{FOLDER_SUFFIX}")
    redis_journal = store_for(open_storage(f"redis:{redis_prefix}"))
    assert isinstance(redis_journal.entries, RedisEntries)


@pytest.fixture(params=["file", "redis"])
def entries_place(request, tmp_path) -> tuple[str, str]:
    """Where a journal's entries live: ``("file", folder)`` or ``("redis", key prefix)``."""
    if request.param == "file":
        return "file", str(tmp_path / "entries")
    return "redis", request.getfixturevalue("redis_prefix")


def entries_home(kind: str, place: str) -> FileEntries | RedisEntries:
    """The entries at an :func:`entries_place`."""
    return FileEntries(place) if kind == "file" else RedisEntries(REDIS_URL, place)


def test_the_first_entry_saved_is_kept_and_a_lease_has_one_holder(entries_place):
    one, other = entries_home(*entries_place), entries_home(*entries_place)  # two processes'
    assert one.load("costs", "k") is None
    one.save("costs", "k", [np.arange(3.0)])
    other.save("costs", "k", [np.zeros(3)])
    np.testing.assert_array_equal(other.load("costs", "k")[0], np.arange(3.0))
    assert one.acquire("fisher:k", 2, "one")
    assert not other.acquire("fisher:k", 2, "other")
    one.renew("fisher:k", 2, "one")
    other.release("fisher:k", 2, "other")  # not its lease: nothing happens
    assert not other.acquire("fisher:k", 2, "other")
    one.release("fisher:k", 2, "one")
    assert other.acquire("fisher:k", 2, "other")
    other.release("fisher:k", 2, "other")
    if isinstance(one, FileEntries):  # the entry alone: a lease's file goes with it
        assert [path.name for path in one.folder.iterdir()] == ["costs-k-0.npz"]


#: A process that takes a lease and keeps it: ``python -c LEASE_HOLDER file|redis FOLDER|PREFIX``.
LEASE_HOLDER = (
    "import sys, time; from tests.test_storages import entries_home; "
    "assert entries_home(*sys.argv[1:]).acquire('fisher:k', 0, 'dead'); "
    "print('held', flush=True); time.sleep(600)"
)


def test_a_killed_processs_lease_is_taken_over(entries_place, start_process):
    """A journal file's lease is free as soon as its process dies; a Redis one once it expires
    (``LEASE_TIMEOUT``, the holder's default 60 s here, so the test expires it at once)."""
    holder = start_process(
        [sys.executable, "-c", LEASE_HOLDER, *entries_place],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first_line(holder, timeout=120) == "held\n"
    home = entries_home(*entries_place)
    assert not home.acquire("fisher:k", 0, "survivor")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    if isinstance(home, RedisEntries):
        home._redis.pexpire(home._lease("fisher:k", 0), 1)
        time.sleep(0.05)
    assert home.acquire("fisher:k", 0, "survivor")


def test_fisher_features_on_a_journal_are_computed_once_for_every_process(journal, monkeypatch):
    """A second sampler (as in another process, or a resumed run) reads the first one's Fisher
    features from beside the journal instead of computing them."""
    space = worker_space()
    study = optuna.create_study(storage=open_storage(journal))
    first = AquaSurfSampler(space, probe=probe(), seed=0).fisher_features(study)
    monkeypatch.setattr(FisherProbe, "features", lambda *args, **kwargs: pytest.fail("computed"))
    again = AquaSurfSampler(space, probe=probe(), seed=0).fisher_features(
        optuna.load_study(study_name=study.study_name, storage=open_storage(journal))
    )
    np.testing.assert_array_equal(first, again)
