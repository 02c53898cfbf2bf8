"""Where the entries of a journal storage's studies live (embeddings, Fisher features, priors and
costs, see :mod:`optuna_aquasurf._store`): in a folder beside its journal file, or in the Redis
server of its Redis journal. A journal is a log that every process replays in full; arrays of
megabytes kept beside it are read only by the processes that need them.

Both keep the store's two rules: the first entry saved under a key is kept (every worker then
uses the same arrays), and a worker that dies leaves either the whole entry or nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path

from optuna_aquasurf import _store
from optuna_aquasurf._store import Entries, pack, unpack

#: The folder of a journal file's entries: the journal's own path with this suffix.
FOLDER_SUFFIX = ".aquasurf"


class FileEntries(Entries):
    """Entries in a folder on the journal file's file system, one ``.npz`` file each.

    An entry is written to a file of its own and then hard-linked to its name, which fails if
    the name exists: the first entry saved is kept, and no reader sees half a file. A lease is
    an exclusive ``flock`` on a file of its own (deleted when the lease is given up), which the
    system releases when its process ends, however it ends: a dead worker's lease is free at
    once, and no renewal is needed. Where ``flock`` does not exist (Windows), every process
    takes any lease: entries are then computed in each process that misses them, and the first
    saved is still the one all use.

    Parameters
    ----------
    folder
        The folder, created when the first entry or lease is: the journal file's path with
        :data:`FOLDER_SUFFIX`.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], tuple[str, int]] = {}  # lease -> (holder, descriptor)

    def _path(self, table: str, key: str, chunk: int) -> Path:
        return self.folder / f"{table}-{key}-{chunk}.npz"

    def _lease(self, entry: str, chunk: int) -> Path:
        return self.folder / f"{entry.replace(':', '-')}-{chunk}.lease"

    def load(self, table, key, chunk=0):
        try:
            return unpack(self._path(table, key, chunk).read_bytes())
        except FileNotFoundError:
            return None

    def save(self, table, key, arrays, chunk=0):
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(table, key, chunk)
        written = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        written.write_bytes(pack(*arrays))
        try:
            os.link(written, path)
        except FileExistsError:
            pass  # another worker saved the same content first
        finally:
            written.unlink()

    def acquire(self, entry, chunk, holder):
        try:
            import fcntl
        except ImportError:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._lease(entry, chunk)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        if not _is_at(descriptor, path):  # locked after its holder gave it up and deleted it
            os.close(descriptor)
            return False
        with self._lock:
            self._held[(entry, chunk)] = (holder, descriptor)
        return True

    def renew(self, entry, chunk, holder):
        pass  # the lock lasts as long as its process

    def release(self, entry, chunk, holder):
        with self._lock:
            if self._held.get((entry, chunk), (None,))[0] != holder:
                return
            _, descriptor = self._held.pop((entry, chunk))
        self._lease(entry, chunk).unlink()  # while locked: only the holder deletes its file
        os.close(descriptor)  # which releases the lock


def _is_at(descriptor: int, path: Path) -> bool:
    """Whether the open file ``descriptor`` is the file at ``path``."""
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except FileNotFoundError:
        return False


class RedisEntries(Entries):
    """Entries in a Redis server, under keys that start with the journal's prefix.

    An entry is one value set only if its key is new (``SET NX``); a lease is a key with its
    holder, set only if new and expiring ``LEASE_TIMEOUT`` seconds after its last renewal, so
    that a dead worker's lease goes by itself.

    Parameters
    ----------
    url
        The Redis server's URL, as the journal's :class:`JournalRedisBackend` has it.
    prefix
        The journal's prefix: entries go under ``<prefix>:aquasurf:``.
    """

    #: Renew (or release) a lease only if it is still its holder's: one atomic step on the server.
    _RENEW = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    )
    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    def __init__(self, url: str, prefix: str = ""):
        import redis

        self.transient_errors = (redis.ConnectionError, redis.TimeoutError)
        self._redis = redis.Redis.from_url(url)
        self._prefix = f"{prefix}:aquasurf"
        self._renew = self._redis.register_script(self._RENEW)
        self._release = self._redis.register_script(self._RELEASE)

    def _key(self, table: str, key: str, chunk: int) -> str:
        return f"{self._prefix}:{table}:{key}:{chunk}"

    def _lease(self, entry: str, chunk: int) -> str:
        return f"{self._prefix}:lease:{entry}:{chunk}"

    def load(self, table, key, chunk=0):
        data = self._redis.get(self._key(table, key, chunk))
        return None if data is None else unpack(data)

    def save(self, table, key, arrays, chunk=0):
        self._redis.set(self._key(table, key, chunk), pack(*arrays), nx=True)

    def acquire(self, entry, chunk, holder):
        lease = self._lease(entry, chunk)
        if self._redis.set(lease, holder, nx=True, px=_timeout_ms()):
            return True
        return self._redis.get(lease) == holder.encode()

    def renew(self, entry, chunk, holder):
        self._renew(keys=[self._lease(entry, chunk)], args=[holder, _timeout_ms()])

    def release(self, entry, chunk, holder):
        with contextlib.suppress(*self.transient_errors):  # the lease then expires by itself
            self._release(keys=[self._lease(entry, chunk)], args=[holder])


def _timeout_ms() -> int:
    return int(_store.LEASE_TIMEOUT * 1000)
