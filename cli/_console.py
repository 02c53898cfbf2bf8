"""The consoles of the ``aquasurf`` command and the error it reports without a traceback."""

from __future__ import annotations

from rich.console import Console

#: Tables and results (stdout).
console = Console(highlight=False)
#: Progress, notes and errors (stderr), so that ``--json`` output stays clean.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A problem the user can fix (bad file, storage, study or expression): exit code 1.

    The message is printed as is, without a traceback.
    """
