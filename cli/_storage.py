"""Open the database of the studies and find a study in it, with clear errors and no passwords."""

from __future__ import annotations

import warnings
from pathlib import Path

from optuna_aquasurf._store import masked
from optuna_aquasurf.cli._console import UserError

#: The storage of ``aquasurf`` when none is given: a SQLite file in the current folder.
DEFAULT_STORAGE = "sqlite:///aquasurf.db"
#: Seconds a SQLite connection waits for a lock held by another worker.
SQLITE_TIMEOUT = 30
_EXAMPLES = "such as sqlite:///aquasurf.db or postgresql://user:password@host/db"


def open_storage(
    url: str,
    *,
    must_exist: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
):
    """A :class:`~optuna_aquasurf.cli._tracking_storage.TrackingStorage` (an
    :class:`optuna.storages.RDBStorage`) for ``url``, SQLite with a connect timeout.

    Parameters
    ----------
    url
        SQLAlchemy database URL.
    must_exist
        For read-only views: a SQLite file that does not exist is an error (not created).
    heartbeat_interval, grace_period, max_retry
        With ``heartbeat_interval`` (seconds), running trials record heartbeats; one silent for
        ``grace_period`` seconds (default twice the interval) is failed and retried up to
        ``max_retry`` times, keeping its activation (the next time a trial starts).

    Raises
    ------
    UserError
        For an invalid URL, a missing database driver or a database that cannot be opened.
    """
    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from sqlalchemy.engine import make_url

    from optuna_aquasurf.cli._tracking_storage import TrackingStorage

    shown = masked(url)
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UserError(
            f"Invalid storage URL {shown!r}: give a database URL {_EXAMPLES}."
        ) from None
    engine_kwargs = {}
    if parsed.get_backend_name() != "sqlite":
        engine_kwargs["pool_pre_ping"] = True  # replace connections the server has closed
    else:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT}
        database = parsed.database
        if must_exist and not (database and database != ":memory:" and Path(database).is_file()):
            raise UserError(
                f"No database at {shown}: start a search with `aquasurf optimize FILE`, "
                "or give --storage."
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            callback = RetryHeartbeatStaleTrialCallback(max_retry) if heartbeat_interval else None
            return TrackingStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(
            f"Invalid storage URL {shown!r}: unknown database {parsed.drivername!r}; "
            f"give a database URL {_EXAMPLES}."
        ) from None
    except ImportError:
        raise UserError(
            f"No Python driver for {parsed.drivername!r} (storage {shown}): "
            "pip install 'optuna-aquasurf[rdb]' (psycopg, pymysql)."
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError) as error:
        problem = str(getattr(error, "orig", None) or error).strip()
        if parsed.password:
            problem = problem.replace(parsed.password, "***")
        raise UserError(f"Cannot open the storage {shown}: {problem}") from None


def study_name(storage, name: str | None, url: str) -> str:
    """``name`` checked against the studies in ``storage``; by default the only one there.

    Raises
    ------
    UserError
        For an unknown study (listing the existing ones), or no name with several studies.
    """
    names = [s.study_name for s in storage.get_all_studies()]
    if not names:
        raise UserError(
            f"The storage {masked(url)} has no studies yet: start one with "
            "`aquasurf optimize FILE`."
        )
    if name is None:
        if len(names) == 1:
            return names[0]
        raise UserError(
            f"The storage {masked(url)} has {len(names)} studies; choose one with --study: "
            + ", ".join(names)
        )
    if name not in names:
        raise UserError(
            f"No study named {name!r} in {masked(url)}. Existing studies: {', '.join(names)}"
        )
    return name


def load_study(url: str, name: str | None, sampler=None):
    """The existing study ``name`` (or the only one) of the storage at ``url``."""
    import optuna

    storage = open_storage(url, must_exist=True)
    return optuna.load_study(
        study_name=study_name(storage, name, url), storage=storage, sampler=sampler
    )
