"""Maps (the UMAP embedding of a space) computed once in a test session, copied into new databases.

Computing a map takes a while (UMAP, and numba's compilation in each new process); tests that
start worker processes on a new database store it there first, as a first worker would have.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy as sa

from optuna_aquasurf import AquaSurfSampler
from optuna_aquasurf._store import SQLStore, unpack


def computed_map(sampler: AquaSurfSampler, folder: Path) -> list[tuple[str, bytes]]:
    """The stored rows of the sampler's map, computed in a scratch SQLite file in ``folder``."""
    url = f"sqlite:///{folder / 'maps.db'}"
    sampler.embedding(optuna.create_study(storage=url))
    with sa.create_engine(url).connect() as connection:
        return list(connection.execute(sa.text("select key, data from aquasurf_embeddings")))


def store_map(rows: list[tuple[str, bytes]], url: str) -> None:
    """Store the rows of :func:`computed_map` in the database at ``url``."""
    store = SQLStore(sa.create_engine(url))
    for key, data in rows:
        store.save("embeddings", key, unpack(data))
