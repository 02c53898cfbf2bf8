"""The workers of tests/worker_process.py on the storages that are not RDBs, run as subprocesses
by tests/test_storages.py:

    python -m tests.storage_worker optimize STORAGE STUDY N_TRIALS [--hang-after K]

where STORAGE is ``file:PATH`` (a journal file), ``redis:PREFIX`` (a journal in the local Redis
server, under PREFIX), ``grpc:PORT`` (the gRPC proxy on this host) or an RDB URL.
"""

from __future__ import annotations

import sys

import optuna
from optuna.storages import BaseStorage, GrpcStorageProxy, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from tests import worker_process

REDIS_URL = "redis://127.0.0.1:6379/0"


def open_storage(name: str) -> BaseStorage:
    """The storage that ``name`` names (see the module's docstring)."""
    kind, _, address = name.partition(":")
    if kind == "file":
        return JournalStorage(JournalFileBackend(address))
    if kind == "redis":
        return JournalStorage(JournalRedisBackend(REDIS_URL, prefix=address))
    if kind == "grpc":
        return GrpcStorageProxy(host="127.0.0.1", port=int(address))
    return optuna.storages.get_storage(name)


if __name__ == "__main__":
    worker_process.storage = open_storage  # the workers open their storage by this name
    worker_process.main(sys.argv[1:])
