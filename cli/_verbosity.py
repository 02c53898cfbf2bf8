"""How much of Optuna's log ``aquasurf`` shows: its errors only, or its INFO log with ``-v``."""

from __future__ import annotations

import os

#: Environment variable set by ``aquasurf -v`` (``1``), so that the worker and map processes of a
#: search, which inherit it, log as their parent does.
VERBOSE_VARIABLE = "AQUASURF_VERBOSE"


def set_verbose(verbose: bool) -> None:
    """Record ``-v`` for this process and the processes it starts."""
    os.environ[VERBOSE_VARIABLE] = "1" if verbose else "0"


def set_optuna_verbosity() -> None:
    """Set Optuna's log level: INFO after ``aquasurf -v``, else ERROR."""
    import optuna

    verbose = os.environ.get(VERBOSE_VARIABLE) == "1"
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
